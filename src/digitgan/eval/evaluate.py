"""``digitgan evaluate``: every metric for a model, a file of samples, or the real training data.

The reference is always the dataset's **test split**: generated images (or, for
:func:`evaluate_real`, training images) are compared with test images the model never
saw. The real training split against the test split is the floor that no model beats
(except by luck of the draw). Memorisation compares against the training split.

A stacked dataset (Stacked MNIST, :mod:`digitgan.data.stacked`) is scored by its modes:
the classifier names the digit of each channel, and :func:`evaluate_modes` counts the modes
covered and the reverse KL divergence from the uniform distribution over them, beside the
same numbers for real stacks (the floor); the usual metrics are there per channel, against
the single-channel dataset the stacks are made of.

During training, the ``log.eval_every`` hook scores the generator with a
:class:`SampleScorer`: FID and class balance on ``log.eval_samples`` generated images.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from numbers import Real
from pathlib import Path

import numpy as np
import torch

from ..data import Dataset, check_images, load_dataset, read_npy
from ..data.datasets import MAX_CHANNELS
from ..data.registry import DEFAULT_DATASET
from ..data.stacked import CHANNEL_NAMES, channel_digits, stack_labels
from ..errors import ConfigError, DataError, DigitganError
from ..fileio import MiB, atomic_write_text, read_text_bounded
from ..models import truncate_noise
from ..models.base import code_of
from ..sampling import Sampler, check_truncation, load
from ..store.checkpoint import resolve_checkpoint
from ..store.rundir import run_dir_of
from .classifier import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    DigitClassifier,
    classifier_for,
)
from .metrics import (
    category_purity,
    class_balance,
    classification_accuracy_score,
    extract,
    fid_from_stats,
    gaussian_stats,
    inception_score,
    kid,
    label_accuracy,
    memorisation,
    mode_balance,
    prdc,
    predicted_accuracy,
)

DEFAULT_N = 10_000
STACKED_N = 26_000
"""The samples a stacked dataset's modes are counted on by default (as Lin et al. 2018)."""
MAX_N = 100_000
"""The most samples one evaluation scores (its nearest-neighbour metrics grow as n^2)."""


@dataclass(frozen=True)
class CasRecipe:
    """How the classification accuracy score is measured (see :func:`classification_accuracy`):
    ``n`` generated digits, and as many real training digits (all of them when the training
    split is smaller), each train a classifier for ``epochs`` epochs of batches of
    ``batch_size`` at peak learning rate ``lr``. The defaults are the recipe of the shipped
    classifiers (:func:`~digitgan.eval.classifier.fit_classifier`). Checked when made."""

    n: int = DEFAULT_N
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = DEFAULT_LR

    def __post_init__(self):
        for flag, value, lo, hi in (
            ("--cas-n", self.n, 2, MAX_N),
            ("--cas-epochs", self.epochs, 1, 10_000),
            ("--cas-batch-size", self.batch_size, 1, 100_000),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
                raise ConfigError(f"{flag} {value!r}: expected an integer from {lo} to {hi:,}")
        lr = self.lr
        if not isinstance(lr, Real) or isinstance(lr, bool) or not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"--cas-lr {lr!r}: expected a positive learning rate")

    def training(self) -> dict:
        """The keyword arguments of the training recipe (all but ``n``)."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr}


@dataclass
class EvalReport:
    """The result of an evaluation: scalar ``metrics``, the predicted-class ``histogram``
    and what was compared (``source``, ``dataset``, ``samples``, ``reference``).

    When the samples have labels (a conditional model's requested classes, a ``.npy`` file's
    given labels, or the real digits' own), ``metrics["label_accuracy"]`` is the share the
    classifier labels as their label and ``class_accuracy`` that share per class; otherwise
    there is no ``label_accuracy`` and ``class_accuracy`` is None.
    """

    source: str
    dataset: str
    samples: int
    reference: str
    classifier: str
    metrics: dict[str, float]
    histogram: list[int]
    class_names: tuple[str, ...]
    seconds: float = 0.0
    class_accuracy: list[float | None] | None = None
    cas_recipe: CasRecipe | None = None
    cas_class_accuracy: list[float | None] | None = None
    floor: dict[str, float] | None = None

    def to_dict(self) -> dict:
        cas = {}
        if self.cas_recipe is not None:
            cas = {
                "cas_recipe": asdict(self.cas_recipe),
                "cas_class_accuracy": self._by_class(self.cas_class_accuracy),
            }
        out = {
            "source": self.source,
            "dataset": self.dataset,
            "samples": self.samples,
            "reference": self.reference,
            "classifier": self.classifier,
            "metrics": self.metrics,
            "histogram": dict(zip(self.class_names, self.histogram, strict=True)),
            "class_accuracy": self._by_class(self.class_accuracy),
            "seconds": round(self.seconds, 2),
            **cas,
        }
        return out if self.floor is None else out | {"floor": self.floor}

    def _by_class(self, values: list | None) -> dict | None:
        return None if values is None else dict(zip(self.class_names, values, strict=True))

    def table(self) -> str:
        """A plain-text table of every metric, with which direction is better."""
        m = self.metrics
        k = len(self.class_names)
        if "modes_kl" in m:
            return self._modes_table()
        rows = [
            ("FID", f"{m['fid']:.3f}", "lower", "Frechet distance of classifier features"),
            (
                "KID",
                f"{m['kid']:.5f} +- {m['kid_std']:.5f}",
                "lower",
                "unbiased MMD^2, cubic kernel",
            ),
            ("Inception score", f"{m['is']:.3f} +- {m['is_std']:.3f}", "higher", f"at most {k}"),
            ("precision", f"{m['precision']:.4f}", "higher", "samples on the test manifold"),
            ("recall", f"{m['recall']:.4f}", "higher", "test images on the sample manifold"),
            ("density", f"{m['density']:.4f}", "~1", "samples per test k-NN ball / k"),
            ("coverage", f"{m['coverage']:.4f}", "higher", "test k-NN balls holding a sample"),
            ("classes covered", f"{m['classes_covered']}/{k}", "higher", "got >= 10% of n/K"),
            ("KL to uniform", f"{m['kl_uniform']:.4f}", "lower", "predicted labels, nats"),
            (
                "class share",
                f"{m['class_share_min']:.1%} - {m['class_share_max']:.1%}",
                f"~{1 / k:.0%}",
                "least and most predicted class",
            ),
            ("mean confidence", f"{m['mean_confidence']:.4f}", "higher", "top class probability"),
            (
                "memorised",
                f"{m['memorised']:.4f}",
                "lower",
                f"nearer a training image than {1 - m['memorised_quantile']:.0%} of test images",
            ),
        ]
        rows += self._label_row() + self._cas_rows()
        lines = self._lines(rows)
        hist = " ".join(
            f"{name}:{c}" for name, c in zip(self.class_names, self.histogram, strict=True)
        )
        lines.append(f"  predicted classes  {hist}")
        for title, values in (
            ("accuracy by class", self.class_accuracy),
            ("CAS by class", self.cas_class_accuracy),
        ):
            if values is not None:
                acc = " ".join(
                    f"{name}:{'-' if a is None else f'{a:.3f}'}"
                    for name, a in self._by_class(values).items()
                )
                lines.append(f"  {title:<17}  {acc}")
        return "\n".join(lines)

    def _cas_rows(self) -> list[tuple[str, str, str, str]]:
        m = self.metrics
        if "cas" not in m:
            return []
        return [
            (
                "CAS",
                f"{m['cas']:.4f}",
                "higher",
                f"test accuracy of a classifier trained on {m['cas_samples']} samples",
            ),
            (
                "CAS, real",
                f"{m['cas_real']:.4f}",
                "ceiling",
                f"the same, trained on {m['cas_real_samples']} real training images",
            ),
        ]

    def _label_row(self) -> list[tuple[str, str, str, str]]:
        m = self.metrics
        if "category_purity" in m:
            value = f"{m['category_purity']:.4f}"
            return [("category purity", value, "higher", "samples of their category's class")]
        if "label_accuracy" not in m:
            return []
        value = f"{m['label_accuracy']:.4f}"
        return [("label accuracy", value, "higher", "classifier names the requested class")]

    def _lines(self, rows: list[tuple[str, str, str, str]]) -> list[str]:
        """The heading and the rows (name, value, better, meaning), aligned."""
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        head = (
            f"{self.source}: {self.samples} samples vs {self.reference} of {self.dataset} "
            f"({self.classifier} features, {self.seconds:.1f} s)"
        )
        return [head] + [
            f"  {a:<{widths[0]}}  {b:>{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in rows
        ]

    def _modes_table(self) -> str:
        """The table of a stacked dataset: modes, then the usual metrics of each channel."""
        m, floor = self.metrics, self.floor or {}
        total = len(self.class_names)

        def real(key: str, fmt: str) -> str:
            return f"real data {format(floor[key], fmt)}" if key in floor else ""

        rows = [
            ("modes covered", f"{m['modes_covered']}/{total}", "higher", real("modes_covered", "")),
            ("reverse KL", f"{m['modes_kl']:.4f}", "lower", real("modes_kl", ".4f")),
            ("mean confidence", f"{m['mean_confidence']:.4f}", "higher", "top digit probability"),
        ]
        rows += self._label_row()
        lines = self._lines(rows)
        channels = [name for name in CHANNEL_NAMES if f"{name}/fid" in m]
        if channels:  # the usual metrics, one column per channel
            keys = [k.split("/", 1)[1] for k in m if k.startswith(f"{channels[0]}/")]
            width = max(map(len, keys))
            lines.append(f"  {'per channel':<{width}}" + "".join(f"{c:>12}" for c in channels))
            for key in keys:
                values = "".join(f"{m[f'{c}/{key}']:>12.4f}" for c in channels)
                lines.append(f"  {key:<{width}}{values}")
        return "\n".join(lines)


def _check_shape(what: str, shape: tuple, data: Dataset, clf: DigitClassifier) -> None:
    if tuple(shape) != data.image_shape:
        raise DataError(
            f"{what}: images of shape (C, H, W) = {tuple(shape)}, but dataset {data.name} has "
            f"{data.image_shape}"
        )
    judged, k = _judged(data)
    if clf.image_shape != judged or clf.num_classes != k:
        each = " in each channel" if data.stack_of else ""
        raise ConfigError(
            f"the classifier takes images {clf.image_shape} in {clf.num_classes} classes, "
            f"dataset {data.name} has {judged} in {k}{each}"
        )


def _judged(data: Dataset) -> tuple[tuple[int, int, int], int]:
    """The image shape and classes the classifier judges: for a stacked dataset, one
    channel and the classes of the dataset it stacks."""
    if data.stack_of is None:
        return data.image_shape, data.num_classes
    channels, height, width = data.image_shape
    return (1, height, width), round(data.num_classes ** (1 / channels))


def _test_split(data: Dataset):
    if data.test is None:
        raise DataError(
            f"dataset {data.name} has no test split: evaluation compares with test images"
        )
    return data.test


def evaluate_images(
    images: np.ndarray | torch.Tensor,
    data: Dataset,
    classifier: DigitClassifier,
    *,
    labels: np.ndarray | torch.Tensor | None = None,
    categories: tuple[torch.Tensor, int] | None = None,
    memorisation_quantile: float = 0.01,
) -> tuple[dict[str, float], list[int], list[float | None] | None]:
    """Every metric of ``images`` (N, C, H, W; uint8 or float in [0, 1]) against the test split
    of ``data``, on ``classifier``'s features: (scalar metrics, predicted-class histogram,
    accuracy per class). With ``labels`` (N class labels: the classes the images were drawn
    as), the metrics include ``label_accuracy`` (see :func:`~.metrics.label_accuracy`);
    without, the accuracy per class is None."""
    test = _test_split(data)
    fake_f, fake_p = extract(classifier.features_and_probs, images)
    test_f = extract(classifier.features, test.images)
    balance = class_balance(fake_p)
    kid_ = kid(test_f, fake_f)
    is_ = inception_score(fake_p, splits=min(10, len(fake_p)))
    memo = memorisation(images, data.train.images, test.images, quantile=memorisation_quantile)
    metrics = {
        "fid": fid_from_stats(*gaussian_stats(test_f), *gaussian_stats(fake_f)),
        "kid": kid_["mean"],
        "kid_std": kid_["std"],
        "is": is_["mean"],
        "is_std": is_["std"],
        **prdc(test_f, fake_f),
        "classes_covered": balance["classes_covered"],
        "kl_uniform": balance["kl_uniform"],
        "class_share_min": balance["share_min"],
        "class_share_max": balance["share_max"],
        "mean_confidence": balance["mean_confidence"],
        "memorised": memo["share"],
        "memorised_threshold": memo["threshold"],
        "memorised_quantile": memo["quantile"],
    }
    if categories is not None:  # which classes a model's learnt categories draw
        metrics["category_purity"] = category_purity(fake_p, *categories)
    if labels is None:
        return metrics, balance["histogram"], None
    acc = label_accuracy(fake_p, labels)
    metrics["label_accuracy"] = acc["accuracy"]
    return metrics, balance["histogram"], acc["per_class"]


def evaluate_modes(
    images: np.ndarray | torch.Tensor,
    data: Dataset,
    classifier: DigitClassifier,
    *,
    labels: np.ndarray | torch.Tensor | None = None,
) -> tuple[dict[str, float], list[int], list[float | None] | None]:
    """The modes of ``images`` (N, C, H, W) of a stacked dataset ``data``: ``classifier``
    names the class of each channel, and those make the sample's mode (its label in
    ``data``). Returns (metrics, samples per mode, accuracy per mode): ``modes_covered``,
    ``modes_kl`` (see :func:`~.metrics.mode_balance`), ``mean_confidence`` (the mean top
    class probability over the channels) and, with ``labels`` (the modes asked for),
    ``label_accuracy``: the share of samples whose every channel is the digit asked for."""
    n, c, h, w = images.shape
    _, k = _judged(data)
    probs = extract(classifier.probs, images.reshape(n * c, 1, h, w)).reshape(n, c, k)
    digits = probs.argmax(2)
    modes = mode_balance(digits, k)
    metrics = {
        "modes_covered": modes["modes_covered"],
        "modes_kl": modes["modes_kl"],
        "mean_confidence": float(probs.max(2).values.double().mean()),
    }
    if labels is None:
        return metrics, modes["histogram"], None
    acc = predicted_accuracy(stack_labels(digits.numpy(), k), labels, data.num_classes)
    metrics["label_accuracy"] = acc["accuracy"]
    return metrics, modes["histogram"], acc["per_class"]


def _channel_metrics(images, source: Dataset, classifier: DigitClassifier, labels) -> dict:
    """The metrics of :func:`evaluate_images` of each channel of stacked ``images`` against
    ``source``, the dataset stacked, keyed ``<channel>/<metric>`` (``red/fid``)."""
    digits = None if labels is None else channel_digits(np.asarray(labels), source.num_classes)
    out = {}
    for c, name in enumerate(CHANNEL_NAMES[: images.shape[1]]):
        channel_labels = None if digits is None else digits[:, c]
        metrics, _, _ = evaluate_images(
            images[:, c : c + 1], source, classifier, labels=channel_labels
        )
        out |= {f"{name}/{key}": value for key, value in metrics.items()}
    return out


def _npy_images(path: Path, n: int | None) -> np.ndarray:
    """A uint8 .npy of images (N, H, W), (N, C, H, W) or channels-last (N, H, W, C) as
    (N, C, H, W); the first ``n``. A 4-D array is (N, C, H, W) when its second axis could
    be channels (at most MAX_CHANNELS), else channels-last."""
    expected = (
        "a uint8 array of shape (N, H, W) or (N, C, H, W) as `digitgan sample` writes, "
        "or (N, H, W, C)"
    )

    def check(shape: tuple[int, ...], dtype: np.dtype) -> None:
        if _channels_first(shape):
            shape = (shape[0], *shape[2:], shape[1])  # as check_images takes them
        if dtype != np.uint8 or len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] > 4):
            raise DataError(f"{path}: found {dtype} of shape {shape}; expected {expected}")
        check_images(str(path), shape, dtype)  # and small enough

    arr = read_npy(path, check, mmap=True)
    if n is not None and n > len(arr):
        raise ConfigError(f"--n {n}: {path} holds only {len(arr)} images")
    if len(arr[:n]) < 2:
        raise ConfigError(f"{path}: need at least 2 images to evaluate, found {len(arr[:n])}")
    arr = np.array(arr[:n])  # a writable copy of the (memory-mapped) file
    if arr.ndim == 3:
        return arr[:, np.newaxis]
    return arr if _channels_first(arr.shape) else arr.transpose(0, 3, 1, 2)


def _channels_first(shape: tuple[int, ...]) -> bool:
    """Whether a shape is read as images (N, C, H, W): 4-D with 1 to MAX_CHANNELS channels
    in the second axis."""
    return len(shape) == 4 and 1 <= shape[1] <= MAX_CHANNELS


def _npy_labels(path: Path, count: int) -> np.ndarray:
    """The ``count`` integer class labels (N,) of a ``.npy`` file of samples: its first ones."""
    expected = f"an integer array of shape (N,) with at least {count} labels"

    def check(shape: tuple[int, ...], dtype: np.dtype) -> None:
        if dtype.kind not in "iu" or len(shape) != 1 or shape[0] < count:
            raise DataError(f"--labels {path}: found {dtype} of shape {shape}; expected {expected}")

    return read_npy(path, check, what="--labels")[:count]


def _report(
    source: str,
    data: Dataset,
    images,
    clf: DigitClassifier,
    t0: float,
    labels=None,
    *,
    floor: dict[str, float] | None = None,
    channels: Dataset | None = None,
    categories: tuple[torch.Tensor, int] | None = None,
) -> EvalReport:
    """The report on ``images``: the usual metrics, or for a stacked dataset its modes (and,
    given ``channels``, the dataset it stacks, the usual metrics of each channel)."""
    if data.stack_of is None:
        metrics, hist, class_accuracy = evaluate_images(
            images, data, clf, labels=labels, categories=categories
        )
    else:
        metrics, hist, class_accuracy = evaluate_modes(images, data, clf, labels=labels)
        if channels is not None:
            metrics |= _channel_metrics(images, channels, clf, labels)
    return EvalReport(
        source=str(source),
        dataset=data.name,
        samples=len(images),
        reference=f"the test split ({len(data.test)} images)",
        classifier=_classifier_name(clf),
        metrics=metrics,
        histogram=hist,
        class_names=data.class_names,
        seconds=time.perf_counter() - t0,
        class_accuracy=class_accuracy,
        floor=floor,
    )


def _classifier_name(clf: DigitClassifier) -> str:
    return f"classifier trained on {clf.info.get('dataset', '?')}"


def _name(dataset: str | Dataset) -> str:
    return dataset if isinstance(dataset, str) else dataset.name


def _dataset(dataset: str | Dataset, data_dir: str | None, options=None) -> Dataset:
    if isinstance(dataset, Dataset):
        return dataset
    return load_dataset(dataset, data_dir, options=options)


def _count(n: int | None, default: int = DEFAULT_N) -> int:
    count = default if n is None else n
    if not 2 <= count <= MAX_N:
        raise ConfigError(f"--n {n}: evaluate 2 to {MAX_N:,} samples")
    return count


def _default_n(data: Dataset) -> int:
    """The samples evaluated when none are asked for: STACKED_N for a stacked dataset."""
    return DEFAULT_N if data.stack_of is None else STACKED_N


def _channels(data: Dataset, channels: bool, data_dir: str | None) -> Dataset | None:
    """With ``channels``, the dataset a stacked ``data`` stacks (to score each channel on)."""
    if not channels:
        return None
    if data.stack_of is None:
        raise ConfigError(
            f"--channels: only for a stacked dataset (such as stacked-mnist20k), not {data.name}"
        )
    return load_dataset(data.stack_of, data_dir)


def _real_subset(data: Dataset, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` training images and their labels: a seeded random subset, in order (all
    of them when the split holds no more)."""
    if count >= len(data.train):
        return data.train.images, data.train.labels
    pick = np.sort(np.random.default_rng(seed).permutation(len(data.train))[:count])
    return data.train.images[pick], data.train.labels[pick]


def evaluate(
    source: str | Path,
    *,
    n: int | None = None,
    dataset: str | Dataset | None = None,
    classifier: str | Path | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    device: str | torch.device = "cpu",
    labels: str | Path | None = None,
    truncation: float = 1.0,
    cas: bool | CasRecipe = False,
    log: Callable[[str], None] | None = None,
    channels: bool = False,
) -> EvalReport:
    """Evaluate a run directory, a checkpoint, or a ``.npy`` file of uint8 samples.

    A model draws ``n`` samples (default 10,000) with noise ``seed``, in batches and without
    gradients; a conditional one draws the classes in turn (0, 1, ..., K-1, 0, ...: equal
    numbers) and is scored for ``label_accuracy`` too. A ``.npy`` file gives all its images
    (or its first ``n``), and ``labels``, a ``.npy`` file of one integer class per image,
    what they should be (for its ``label_accuracy``). The dataset (a
    spec, or a loaded :class:`Dataset`) is the run's ``data.dataset`` (``mnist20k`` for a
    file) unless ``dataset`` is given; the classifier is the one shipped for that dataset
    unless ``classifier`` names a weights file. ``truncation`` is the truncation trick's psi
    a model draws with (1, the default: plain sampling; see :class:`~digitgan.sampling.Sampler`).

    ``cas`` (True for the default :class:`CasRecipe`, or a recipe) adds a conditional model's
    classification accuracy score (see :func:`classification_accuracy`; ``log`` is given
    its classifiers' progress lines): the keys ``cas``, ``cas_real``, ``cas_samples`` and
    ``cas_real_samples`` of the metrics, and ``cas_class_accuracy``.

    On a stacked dataset the default ``n`` is 26,000, the metrics are its modes (see
    :func:`evaluate_modes`) and the report's ``floor`` holds the same numbers for as many
    real training stacks (seeded by ``seed``); ``channels`` adds the usual metrics of each
    channel (``red/fid``, ...) against the dataset stacked.
    """
    t0 = time.perf_counter()
    path = Path(source)
    truncation = check_truncation(truncation)
    categories = None  # (the category of each sample, K) for a model with learnt ones
    recipe = _cas_recipe(cas)
    if recipe is not None and path.suffix == ".npy":
        raise ConfigError("--cas: only for a conditional model (it draws the digits to train on)")
    if path.suffix == ".npy" and truncation != 1:
        raise ConfigError("--truncation: only for a model; a .npy file's images are drawn already")
    if path.suffix == ".npy":
        gan, images = None, _npy_images(path, n)
        spec, default_dir = DEFAULT_DATASET, None
        if labels is not None:
            labels = _npy_labels(Path(labels), len(images))
    elif labels is not None:
        raise ConfigError(
            "--labels: only for a .npy file of samples; a conditional model draws its classes"
        )
    else:
        _count(n)  # before any work
        gan = load(path, device=device)
        if recipe is not None:
            _check_conditional(gan)
        spec, default_dir = gan.config.data.dataset, gan.config.data.data_dir or None
    # the run's own dataset is made with the run's options (a stacked dataset's size, seed)
    options = gan.config.data.options if gan is not None and dataset is None else None
    dataset = dataset or spec
    clf = classifier_for(_name(dataset), classifier)  # before loading: fail fast
    data = _dataset(dataset, data_dir or default_dir, options)
    source_data = _channels(data, channels, data_dir or default_dir)
    if gan is not None:
        count = _count(n, _default_n(data))
        labels = gan.labels(count)  # None for an unconditional model
        z = gan.noise(count, seed)
        images = gan.decode(z, labels, truncation=truncation)
        k = gan.generator.categories
        # the class each category draws (scored on digits, not stacks); a conditional
        # model's categories lie within the class asked for, so it has no such score
        if k and labels is None:
            z = truncate_noise(z, truncation, gan.config.model.noise)
            categories = code_of(z, k, gan.generator.code_parts), k
    _check_shape(str(source), images.shape[1:], data, clf)
    floor = None
    if data.stack_of is not None:
        real, _ = _real_subset(data, len(images), seed)
        metrics = evaluate_modes(real, data, clf)[0]
        floor = {k: metrics[k] for k in ("modes_covered", "modes_kl")}
    report = _report(
        str(source),
        data,
        images,
        clf,
        t0,
        labels,
        floor=floor,
        channels=source_data,
        categories=categories,
    )
    if recipe is not None:
        scores, per_class = classification_accuracy(
            gan, data, recipe, seed=seed, truncation=truncation, log=log
        )
        report.metrics |= scores
        report.cas_recipe, report.cas_class_accuracy = recipe, per_class
        report.seconds = time.perf_counter() - t0
    return report


def _cas_recipe(cas) -> CasRecipe | None:
    if isinstance(cas, CasRecipe):
        return cas
    if cas is True:
        return CasRecipe()
    if cas is False or cas is None:
        return None
    raise ConfigError(f"cas={cas!r}: expected True, False or a CasRecipe")


def _check_conditional(sampler: Sampler) -> None:
    if not sampler.num_classes:
        raise ConfigError(
            "--cas: this model is unconditional; the classification accuracy score trains on "
            "the classes a conditional model is asked for"
        )


def classification_accuracy(
    sampler: Sampler,
    data: Dataset,
    recipe: CasRecipe | None = None,
    *,
    seed: int = 0,
    truncation: float = 1.0,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, float], list[float | None]]:
    """The classification accuracy score (CAS; Ravuri and Vinyals 2019; "GAN-train" in
    Shmelkov et al. 2018) of a conditional model, beside the same score of real digits.

    The model draws ``recipe.n`` digits with noise ``seed`` (the classes in turn, as
    :func:`evaluate` asks for them; ``truncation`` as there); a new classifier is trained on
    them alone, and another on as many real training images of ``data`` (a seeded random
    subset; all of them when there are fewer), both with the recipe and from ``seed``
    (:func:`~digitgan.eval.metrics.classification_accuracy_score`). Returns the metrics
    ``cas`` and ``cas_real``, each classifier's accuracy on the test split, ``cas_samples`` and
    ``cas_real_samples``, the images each was trained on, and the accuracy of the first on
    each class of the test split. ``log`` gets each training epoch's line.
    """
    recipe = recipe or CasRecipe()
    _check_conditional(sampler)
    if sampler.num_classes != data.num_classes or sampler.image_shape != data.image_shape:
        raise ConfigError(
            f"--cas: the model draws images {sampler.image_shape} in {sampler.num_classes} "
            f"classes, dataset {data.name} has {data.image_shape} in {data.num_classes}"
        )
    test = _test_split(data)
    labels = sampler.labels(recipe.n)
    images = sampler.generate(recipe.n, seed, labels, truncation=truncation)
    real_images, real_labels = _real_subset(data, recipe.n, seed)
    scores = {}
    for key, tag, train_images, train_labels in (
        ("cas", "generated", images, labels),
        ("cas_real", "real", real_images, real_labels),
    ):
        scores[key] = classification_accuracy_score(
            train_images,
            train_labels,
            test.images,
            test.labels,
            data.class_names,
            seed=seed,
            log=log and (lambda line, tag=tag: log(f"CAS, {tag} digits: {line}")),
            **recipe.training(),
        )
    metrics = {
        "cas": scores["cas"]["accuracy"],
        "cas_real": scores["cas_real"]["accuracy"],
        "cas_samples": len(images),
        "cas_real_samples": len(real_images),
    }
    return metrics, scores["cas"]["per_class"]


def evaluate_real(
    dataset: str | Dataset = DEFAULT_DATASET,
    *,
    n: int | None = None,
    classifier: str | Path | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    channels: bool = False,
) -> EvalReport:
    """The floor: the real training split scored as if it were samples, against the test split.

    Uses ``n`` training images (default 10,000, the size a model is evaluated at, 26,000 for
    a stacked dataset; a seeded random subset when the split is larger). Memorisation is 1
    here by construction: each training image is its own nearest training image. The
    images' own labels make ``label_accuracy`` the classifier's accuracy on them: the
    ceiling for a conditional model. ``channels`` as in :func:`evaluate`.
    """
    t0 = time.perf_counter()
    clf = classifier_for(_name(dataset), classifier)
    data = _dataset(dataset, data_dir)
    source_data = _channels(data, channels, data_dir)
    images, labels = _real_subset(data, _count(n, _default_n(data)), seed)
    _check_shape(f"dataset {data.name}", images.shape[1:], data, clf)
    source = f"real training images of {data.name}"
    return _report(source, data, images, clf, t0, labels, channels=source_data)


EVAL_FILE = "eval.json"
"""Where ``digitgan evaluate --save`` keeps a run's scores, in its run directory."""


def save_evaluation(
    source: str | Path, report: EvalReport, floor: EvalReport | None = None
) -> Path:
    """Write ``{"metrics": ..., "floor": ...}`` (numbers only; the floor of the metrics the
    model has: no label accuracy beside an unconditional model; the floor of ``cas`` is
    ``cas_real``) to the run directory of the evaluated run or checkpoint, atomically;
    ``digitgan serve`` shows it beside the model. The floor is ``floor``'s metrics, or (a
    stacked dataset) the report's own floor."""
    ckpt = resolve_checkpoint(source)
    floor_metrics = report.floor if floor is None else floor.metrics
    if floor_metrics is None:
        raise ConfigError("save_evaluation: no floor to save beside the metrics")

    def numbers(metrics: dict) -> dict:
        return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}

    doc = {
        "checkpoint": str(ckpt),
        "samples": report.samples,
        "dataset": report.dataset,
        "metrics": numbers(report.metrics),
        "floor": numbers({k: v for k, v in floor_metrics.items() if k in report.metrics}),
    }
    if "cas_real" in report.metrics:
        doc["floor"]["cas"] = report.metrics["cas_real"]
    path = run_dir_of(ckpt) / EVAL_FILE
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path


MAX_EVAL_BYTES = MiB
"""The largest eval.json read (it holds a few hundred bytes)."""


def read_evaluation(checkpoint: str | Path) -> dict | None:
    """What :func:`save_evaluation` wrote for the run of ``checkpoint`` (a file in the run):
    ``{"samples", "dataset", "metrics", "floor"}`` (each metric a finite number or null; the
    floor None when the file has none; samples and dataset None when absent or odd), or None
    when the run has no eval.json. Anything else (not a regular file, over MAX_EVAL_BYTES, not
    UTF-8 JSON, nested too deeply, another shape) is one DigitganError naming the file."""
    path = run_dir_of(Path(checkpoint)) / EVAL_FILE
    if not os.path.lexists(path):
        return None
    text = read_text_bounded(path, MAX_EVAL_BYTES, "evaluation metrics")
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise DigitganError(f"evaluation metrics {path}: not valid JSON ({e})") from None
    except RecursionError:
        raise DigitganError(f"evaluation metrics {path}: nested too deeply") from None
    metrics = _scores(doc.get("metrics")) if isinstance(doc, dict) else None
    if metrics is None:
        raise DigitganError(
            f'evaluation metrics {path}: expected {{"metrics": {{name: number}}, "floor": '
            "{...}}, as digitgan evaluate --save writes"
        )
    samples = doc.get("samples")
    return {
        "samples": samples if isinstance(samples, int) and not isinstance(samples, bool) else None,
        "dataset": doc.get("dataset") if isinstance(doc.get("dataset"), str) else None,
        "metrics": metrics,
        "floor": _scores(doc.get("floor")),
    }


def _scores(value) -> dict | None:
    """A {metric name: finite number or null} table, or None if ``value`` is not one."""
    if not isinstance(value, dict):
        return None
    for v in value.values():
        ok = v is None or (
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        )
        if not ok:
            return None
    return value


# --- during training -------------------------------------------------------------------------


class SampleScorer:
    """FID and class balance of a generator's samples, cheap enough to run during training.

    Built once (the classifier and the test split's feature statistics; a missing test split
    or classifier is reported at once), then called with a :class:`~digitgan.sampling.Sampler`:
    it draws ``n`` images with noise ``seed`` (the same every call; no other random state is
    touched), and returns ``fid``, ``kl_uniform``, ``classes_covered``, ``mean_confidence``
    and, for a conditional model (asked for its classes in turn), ``label_accuracy``: the
    keys of :func:`evaluate_images`. On a stacked dataset it returns ``fid`` of the
    samples' channels, all taken as single-channel images, against the test split's channels,
    and the keys of :func:`evaluate_modes` in place of the class balance. It returns numbers
    and writes nothing.
    """

    def __init__(
        self, data: Dataset, classifier: str | Path | None = None, n: int = 2000, seed: int = 0
    ):
        self.n, self.seed, self.data = n, seed, data
        self.classifier = classifier_for(data.name, classifier)
        _check_shape(f"dataset {data.name}", data.image_shape, data, self.classifier)
        test = _test_split(data)
        self.test_stats = gaussian_stats(
            extract(self.classifier.features, self._judged(test.images))
        )

    def _judged(self, images):
        """The images the classifier sees: a stacked dataset's channels, one image each."""
        if self.data.stack_of is None:
            return images
        n, c, h, w = images.shape
        return images.reshape(n * c, 1, h, w)

    def __call__(self, sampler: Sampler) -> dict[str, float]:
        labels = sampler.labels(self.n)  # a conditional model's classes in turn, else None
        images = sampler.generate(self.n, self.seed, labels)
        feats, probs = extract(self.classifier.features_and_probs, self._judged(images))
        values = {"fid": fid_from_stats(*self.test_stats, *gaussian_stats(feats))}
        if self.data.stack_of is not None:
            modes, _, _ = evaluate_modes(images, self.data, self.classifier, labels=labels)
            return values | modes
        balance = class_balance(probs)
        values |= {
            "kl_uniform": balance["kl_uniform"],
            "classes_covered": balance["classes_covered"],
            "mean_confidence": balance["mean_confidence"],
        }
        if labels is not None:
            values["label_accuracy"] = label_accuracy(probs, labels)["accuracy"]
        return values
