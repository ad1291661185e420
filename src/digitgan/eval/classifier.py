"""The bundled digit classifier: a small CNN whose penultimate layer is the metrics' feature space.

Inception-based FID needs a download and judges 28x28 digits poorly, so digitgan ships
its own feature extractor, as TF-GAN does for MNIST. :class:`DigitClassifier` is a
LeNet-like network for images (C, H, W) with values in [0, 1]::

    stage 1: conv3x3(C -> 32), BatchNorm, ReLU, max-pool 2x2        -> (32, H/2, W/2)
    stage 2: conv3x3(32 -> 64), BatchNorm, ReLU, max-pool 2x2       -> (64, H/4, W/4)
    stage 3: conv3x3(64 -> 128), BatchNorm, ReLU, max-pool 2x2      -> (128, H/8, W/8)
    flatten, linear(-> 128), BatchNorm, ReLU                        -> the FEATURES (N, 128)
    dropout 0.3, linear(128 -> K)                                   -> logits (N, K)

**The feature layer** used by FID, KID, precision/recall and density/coverage is the
128-dimensional output of the penultimate block (after its ReLU, so non-negative):
what the final linear layer reads (:meth:`DigitClassifier.features`). The class
probabilities (softmax of the logits, :meth:`DigitClassifier.probs`) feed the
classifier Inception Score and the class-balance numbers.

The weights for ``mnist20k`` (also used for ``mnist``: the same digits and test set, and
for each channel of the stacked datasets made from them)
and ``fashion-mnist`` ship in ``digitgan/eval/weights/`` as safetensors files whose
sha256 is pinned in :data:`SHIPPED` and checked on every load. Each was made by
``digitgan classifier train`` (:func:`train_classifier`); the exact command is in
the file's metadata. Training holds out a seeded slice of the training split for
validation, never looks at the test split, and reports the test accuracy once at
the end. The same command, seed and machine (torch version, thread count) give the
same bytes.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..augment import warp
from ..data import Dataset, Split, load_dataset
from ..errors import CheckpointError, ConfigError
from ..fileio import MiB
from ..store.checkpoint import read_checkpoint, save_checkpoint
from ..version import __version__

FORMAT = "digitgan-classifier"
VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ShippedClassifier:
    """A classifier bundled with the package: its file, pinned sha256 and the datasets it serves."""

    file: str
    sha256: str
    datasets: tuple[str, ...]

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.file


SHIPPED: dict[str, ShippedClassifier] = {
    "mnist20k": ShippedClassifier(
        "mnist20k.safetensors",
        "3a7d6d89b97234b911b55d8e542242c49f5f893830d15d2c34adf5080e1b7385",
        ("mnist20k", "mnist", "stacked-mnist20k", "stacked-mnist"),
    ),
    "fashion-mnist": ShippedClassifier(
        "fashion-mnist.safetensors",
        "249e1b6eb1f4a46489059ea2b9ad5384056ee12ede04d5d723a2d8fb92c8a0b9",
        ("fashion-mnist",),
    ),
}


class _ChannelsLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last)


class DigitClassifier(nn.Module):
    """The LeNet-like classifier described in the module docstring.

    ``widths`` are the channels of the conv stages (each halves H and W), ``feature_dim``
    the size of the feature layer. ``class_names`` travels with the weights.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        class_names: tuple[str, ...],
        widths: tuple[int, ...] = (32, 64, 128),
        feature_dim: int = 128,
        dropout: float = 0.3,
    ):
        super().__init__()
        c, h, w = image_shape
        if h < 2 ** len(widths) or w < 2 ** len(widths):
            raise ConfigError(
                f"images of shape {tuple(image_shape)} are too small for {len(widths)} "
                "classifier stages (each halves height and width)"
            )
        self.image_shape = tuple(int(v) for v in image_shape)
        self.class_names = tuple(class_names)
        self.widths = tuple(int(v) for v in widths)
        self.feature_dim = int(feature_dim)
        layers: list[nn.Module] = []
        for a, b in zip((c, *widths[:-1]), widths, strict=True):
            layers += [
                nn.Conv2d(a, b, 3, padding=1, bias=False),
                nn.BatchNorm2d(b),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
        h, w = h >> len(widths), w >> len(widths)
        layers += [
            nn.Flatten(),
            nn.Linear(widths[-1] * h * w, feature_dim, bias=False),
            nn.BatchNorm1d(feature_dim),
            nn.ReLU(inplace=True),
        ]
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, len(class_names))
        self.info: dict = {}  # the metadata of the file it was loaded from

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [0, 1] -> the feature layer's activations (N, feature_dim)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [0, 1] -> class logits (N, K)."""
        return self.head(self.dropout(self.body(x)))

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [0, 1] -> class probabilities (N, K)."""
        return self(x).softmax(dim=1)

    def features_and_probs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both at once (one pass through the body)."""
        f = self.body(x)
        return f, self.head(f).softmax(dim=1)

    @torch.no_grad()
    def for_inference(self) -> DigitClassifier:
        """Make this network fast to evaluate on a CPU (about 4x) and unfit for training: each
        BatchNorm, with its running statistics, is folded into the layer before it, and the
        convolutions run channels-last. The same function in eval mode up to rounding.
        Returns self, in eval mode and without gradients."""
        layers: list[nn.Module] = [_ChannelsLast()]
        for m in self.body:
            if not isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                layers.append(m)
                continue
            prev = layers[-1]
            scale = m.weight / torch.sqrt(m.running_var + m.eps)
            shape = (-1,) + (1,) * (prev.weight.dim() - 1)
            bias = prev.bias if prev.bias is not None else torch.zeros_like(m.running_mean)
            prev.weight = nn.Parameter(prev.weight * scale.view(shape))
            prev.bias = nn.Parameter((bias - m.running_mean) * scale + m.bias)
        self.body = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        return self.eval().requires_grad_(False)

    def arch(self) -> dict:
        """What rebuilds this network (stored in the weights file)."""
        return {
            "image_shape": list(self.image_shape),
            "class_names": list(self.class_names),
            "widths": list(self.widths),
            "feature_dim": self.feature_dim,
        }


# --- loading ---------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """The sha256 of a file, in hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


MAX_CLASSIFIER_BYTES = 256 * MiB
"""The largest classifier weights file read (the shipped ones take about 1 MB)."""


def load_classifier(path: str | Path, sha256: str | None = None) -> DigitClassifier:
    """Load a classifier weights file (made by :func:`train_classifier`), ready for inference
    (see :meth:`DigitClassifier.for_inference`).

    With ``sha256``, the file must have that checksum (the shipped ones always do). The file
    may take at most MAX_CLASSIFIER_BYTES; its header is checked before its tensors are read,
    and the network its metadata describes is built on PyTorch's meta device and compared
    with the tensors (names, shapes, dtypes) before any memory is allocated for it.
    """
    path = Path(path)
    if path.is_file() and (size := path.stat().st_size) > MAX_CLASSIFIER_BYTES:
        raise CheckpointError(
            f"{path}: {size:,} bytes, more than the {MAX_CLASSIFIER_BYTES:,} a classifier "
            "weights file may have"
        )
    if sha256 is not None and path.is_file() and (actual := sha256_file(path)) != sha256:
        raise CheckpointError(
            f"{path} is damaged: expected sha256 {sha256}, found {actual}; reinstall digitgan"
        )
    tensors, meta = read_checkpoint(path, FORMAT, VERSION)
    try:
        arch = meta["arch"]
        args = (
            tuple(arch["image_shape"]),
            tuple(arch["class_names"]),
            tuple(arch["widths"]),
            arch["feature_dim"],
        )
        with torch.device("meta"):
            want = DigitClassifier(*args).state_dict()
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError, ConfigError) as e:
        raise CheckpointError(f"{path}: not a usable classifier ({e})") from None
    _check_weights(path, want, tensors)
    with torch.random.fork_rng(devices=[]):  # building draws an init we then overwrite
        model = DigitClassifier(*args)
    model.load_state_dict(tensors)
    model.info = meta
    return model.for_inference()


def _check_weights(path: Path, want: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Check the file's tensors against the state of the network its metadata describes."""
    if set(want) != set(tensors):
        odd = sorted(set(want) ^ set(tensors))[:4]
        raise CheckpointError(
            f"{path}: not a usable classifier (its weights do not match the network its "
            f"metadata describes: {', '.join(odd)})"
        )
    for name, tensor in tensors.items():
        if tensor.shape != want[name].shape or tensor.dtype != want[name].dtype:
            raise CheckpointError(
                f"{path}: not a usable classifier ({name} has shape {tuple(tensor.shape)} "
                f"{tensor.dtype}, the network expects {tuple(want[name].shape)} "
                f"{want[name].dtype})"
            )
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise CheckpointError(f"{path}: not a usable classifier ({name} holds NaN or inf)")


@functools.cache
def _load_shipped(name: str) -> DigitClassifier:
    s = SHIPPED[name]
    return load_classifier(s.path, s.sha256)


def classifier_for(dataset: str, path: str | Path | None = None) -> DigitClassifier:
    """The classifier to judge images of ``dataset``: the file ``path`` if given, else the
    shipped one for that dataset (a clear error when none ships)."""
    if path:
        return load_classifier(path)
    for name, shipped in SHIPPED.items():
        if dataset in shipped.datasets:
            return _load_shipped(name)
    served = ", ".join(d for s in SHIPPED.values() for d in s.datasets)
    raise ConfigError(
        f"no classifier ships for dataset {dataset!r} (only for {served}); train one with "
        f"`digitgan classifier train --dataset {dataset} --out FILE` and pass --classifier FILE"
    )


def default_classifier() -> DigitClassifier:
    """The shipped MNIST classifier: the default feature extractor of the metrics."""
    return _load_shipped("mnist20k")


# --- training --------------------------------------------------------------------------------


def random_affine(
    x: torch.Tensor, shift: float = 2.0, rotate: float = 10.0, scale: float = 0.1
) -> torch.Tensor:
    """Each image moved by its own random affine map: up to ``shift`` pixels each way,
    ``rotate`` degrees and a zoom of 1 +- ``scale`` (global torch RNG; zeros fill in)."""
    n, _, h, w = x.shape

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n) * 2 - 1) * limit

    angle, zoom = uniform(math.radians(rotate)), 1 + uniform(scale)
    offset = torch.stack([uniform(2 * shift / w), uniform(2 * shift / h)], 1)
    return warp(x, angle, zoom, offset)


def as_float_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """An image batch as a float tensor in [0, 1] (uint8 is divided by 255)."""
    t = torch.as_tensor(images)
    return t.float().div_(255) if t.dtype == torch.uint8 else t.float()


@torch.inference_mode()
def accuracy(model: DigitClassifier, split: Split, batch_size: int = 1000) -> float:
    """The share of ``split`` that ``model`` labels correctly."""
    model.eval()
    correct = 0
    for i in range(0, len(split), batch_size):
        logits = model(as_float_images(split.images[i : i + batch_size]))
        correct += int((logits.argmax(1).numpy() == split.labels[i : i + batch_size]).sum())
    return correct / max(len(split), 1)


@dataclass
class ClassifierReport:
    """What :func:`train_classifier` made: the file, its checksum and accuracies."""

    path: Path
    sha256: str
    val_accuracy: float
    test_accuracy: float | None
    seconds: float


DEFAULT_EPOCHS = 20
DEFAULT_BATCH_SIZE = 128
DEFAULT_LR = 2e-3


def fit_classifier(
    images: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    class_names: tuple[str, ...],
    *,
    seed: int = 0,
    epochs: int = DEFAULT_EPOCHS,
    val_size: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    log: Callable[[str], None] = print,
) -> tuple[DigitClassifier, float | None]:
    """Train a new :class:`DigitClassifier` on labelled ``images`` (N, C, H, W; uint8 or float
    in [0, 1]) with the shipped classifiers' recipe; (the network in eval mode, its last
    validation accuracy or None without ``val_size``).

    The recipe: Adam (weight decay 1e-4) with a one-epoch warm-up and a cosine decay of the
    learning rate to 0 over ``epochs``; each batch is augmented by :func:`random_affine`. A
    seeded random ``val_size`` of the images are held out and only reported on after each
    epoch (no early stopping, no choice made from them). An epoch's last batch is left out
    when it would hold one image (BatchNorm cannot train on one). Reproducible: all randomness comes
    from ``seed`` (the caller's global RNG state is left untouched).
    """
    n = len(images)
    if epochs < 1:
        raise ConfigError(f"--epochs {epochs}: need at least 1")
    if not 0 <= val_size <= n - 2:
        raise ConfigError(
            f"val_size {val_size}: must be between 0 and {n - 2} (at least 2 of the {n} images "
            "to train on)"
        )
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        order = torch.randperm(n).numpy()
        images, labels = np.asarray(images)[order], np.asarray(labels)[order]
        val = Split(images[:val_size], labels[:val_size]) if val_size else None
        train_x = torch.from_numpy(images[val_size:])
        train_y = torch.from_numpy(labels[val_size:]).long()
        model = DigitClassifier(tuple(images.shape[1:]), class_names)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        # each epoch's batches start here; a last batch of one image is left out (BatchNorm
        # cannot train on one)
        starts = range(0, len(train_x) - 1, batch_size)
        steps_per_epoch = len(starts)
        total = epochs * steps_per_epoch

        def lr_at(step: int) -> float:
            if step < steps_per_epoch:
                return lr * (step + 1) / steps_per_epoch
            return lr * 0.5 * (1 + math.cos(math.pi * step / total))

        step = 0
        val_acc = None
        for epoch in range(1, epochs + 1):
            model.train()
            perm = torch.randperm(len(train_x))
            loss_sum = correct = seen = 0.0
            for i in starts:
                idx = perm[i : i + batch_size]
                x = random_affine(as_float_images(train_x[idx]))
                y = train_y[idx]
                for group in opt.param_groups:
                    group["lr"] = lr_at(step)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                loss_sum += float(loss.detach()) * len(idx)
                correct += float((logits.argmax(1) == y).sum())
                seen += len(idx)
            line = (
                f"epoch {epoch}/{epochs}: loss {loss_sum / seen:.4f}, train accuracy "
                f"{correct / seen:.4f}"
            )
            if val is not None:
                val_acc = accuracy(model, val)
                line += f", validation accuracy {val_acc:.4f}"
            log(f"{line} ({time.perf_counter() - t0:.0f} s)")
    return model.eval(), val_acc


def train_classifier(
    dataset: str | Dataset,
    out: str | Path,
    *,
    seed: int = 0,
    epochs: int = DEFAULT_EPOCHS,
    val_size: int = 500,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    data_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> ClassifierReport:
    """Train a :class:`DigitClassifier` on a dataset's training split and save it to ``out``.

    The recipe is :func:`fit_classifier`'s, holding out ``val_size`` training images (at
    least 1) for the validation accuracy; the test split is used once, after training, to
    report the test accuracy. Reproducible from ``seed``.
    """
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"--out {out}: the classifier file must end in .safetensors")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: folder {out.parent} does not exist")
    spec = dataset if isinstance(dataset, str) else dataset.name
    data = load_dataset(dataset, data_dir) if isinstance(dataset, str) else dataset
    if val_size < 1:
        raise ConfigError(f"val_size {val_size}: hold out at least 1 image to validate on")
    t0 = time.perf_counter()
    model, val_acc = fit_classifier(
        data.train.images,
        data.train.labels,
        data.class_names,
        seed=seed,
        epochs=epochs,
        val_size=val_size,
        batch_size=batch_size,
        lr=lr,
        log=log,
    )
    test_acc = accuracy(model, data.test) if data.test is not None else None
    command = (
        f"digitgan classifier train --dataset {spec} --seed {seed} --epochs {epochs} --out "
        f"{out.name}"
    )
    meta = {
        "arch": model.arch(),
        "dataset": spec,
        "seed": seed,
        "epochs": epochs,
        "val_size": val_size,
        "val_accuracy": val_acc,
        "test_accuracy": test_acc,
        "test_size": len(data.test) if data.test is not None else 0,
        "command": command,
        "feature_layer": "penultimate block: linear -> BatchNorm -> ReLU, "
        f"{model.feature_dim} features",
        "digitgan_version": __version__,
        "torch_version": torch.__version__,
    }
    save_checkpoint(out, model.state_dict(), meta, FORMAT, VERSION)
    return ClassifierReport(out, sha256_file(out), val_acc, test_acc, time.perf_counter() - t0)
