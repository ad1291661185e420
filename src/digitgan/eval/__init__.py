"""Evaluation: the bundled digit classifier and the metrics built on its features.

- :mod:`digitgan.eval.classifier`: the LeNet-like classifier, its training and the shipped
  weights (the feature layer is documented there);
- :mod:`digitgan.eval.metrics`: FID, KID, Inception Score, precision/recall,
  density/coverage, class balance, label accuracy and memorisation, as plain functions of
  features (or of images and any feature function);
- :mod:`digitgan.eval.evaluate`: ``digitgan evaluate``, and the scorer the ``log.eval_every``
  training hook uses.
"""

from .classifier import DigitClassifier, classifier_for, load_classifier, train_classifier
from .evaluate import EvalReport, evaluate, evaluate_images, evaluate_real
from .metrics import (
    class_balance,
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

__all__ = [
    "DigitClassifier",
    "EvalReport",
    "class_balance",
    "classifier_for",
    "density_coverage",
    "evaluate",
    "evaluate_images",
    "evaluate_real",
    "extract",
    "fid",
    "fid_from_stats",
    "inception_score",
    "kid",
    "label_accuracy",
    "load_classifier",
    "memorisation",
    "prdc",
    "precision_recall",
    "train_classifier",
]
