"""Evaluation: the bundled digit classifier and the metrics built on its features.

- :mod:`digitgan.eval.classifier`: the LeNet-like classifier, its training and the shipped
  weights (the feature layer is documented there);
- :mod:`digitgan.eval.metrics`: FID, KID, Inception Score, precision/recall,
  density/coverage, class balance, label accuracy, the classification accuracy score and
  memorisation, as plain functions of features (or of images and any feature function);
- :mod:`digitgan.eval.evaluate`: ``digitgan evaluate`` (with ``--cas``, the classification
  accuracy score of a conditional model), and the scorer the ``log.eval_every`` training
  hook uses;
- :mod:`digitgan.eval.runs`: several runs (a ``train --seeds`` folder) evaluated alike, each
  metric's median and range over them.
"""

from .classifier import (
    DigitClassifier,
    classifier_for,
    fit_classifier,
    load_classifier,
    train_classifier,
)
from .evaluate import (
    CasRecipe,
    EvalReport,
    classification_accuracy,
    evaluate,
    evaluate_images,
    evaluate_real,
)
from .metrics import (
    class_balance,
    classification_accuracy_score,
    density_coverage,
    extract,
    fid,
    fid_from_stats,
    inception_score,
    kid,
    label_accuracy,
    memorisation,
    prdc,
    precision_recall,
)
from .runs import RunsReport, evaluate_runs

__all__ = [
    "CasRecipe",
    "DigitClassifier",
    "EvalReport",
    "RunsReport",
    "class_balance",
    "classification_accuracy",
    "classification_accuracy_score",
    "classifier_for",
    "density_coverage",
    "evaluate",
    "evaluate_images",
    "evaluate_real",
    "evaluate_runs",
    "extract",
    "fid",
    "fid_from_stats",
    "fit_classifier",
    "inception_score",
    "kid",
    "label_accuracy",
    "load_classifier",
    "memorisation",
    "prdc",
    "precision_recall",
    "train_classifier",
]
