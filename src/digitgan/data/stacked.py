"""Stacked MNIST: colour images whose channels are independently drawn digits.

Each image stacks ``C`` (here 3) digits of a single-channel dataset, each drawn uniformly
and independently from its split, as red, green and blue; its label is the channels'
digits read as one number in base K (K = 10 classes: red 7, green 0, blue 3 is label 703),
so the dataset has K^C = 1,000 classes, the *modes* a generator should cover (the
construction of Metz et al. 2017, Srivastava et al. 2017 (VEEGAN) and Lin et al. 2018
(PacGAN)). The training split is drawn from the source's training digits, the test split
the same way from its test digits; both are a function of the source and the
:class:`StackedOptions` alone (sizes and seed), so every load gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..options import opt
from .datasets import Dataset, Split, load_dataset
from .registry import register_dataset

__all__ = [
    "CHANNELS",
    "MAX_STACKS",
    "StackedOptions",
    "channel_digits",
    "load_stacked",
    "stack_split",
]

CHANNEL_NAMES = ("red", "green", "blue")
"""The channels of a stacked image, in order; each holds one digit."""
CHANNELS = len(CHANNEL_NAMES)
"""Digits per stacked image: one per colour channel."""
MAX_STACKS = 1_000_000
"""The most images a stacked split may have (2.4 GB of 28x28 colour images)."""


@dataclass
class StackedOptions:
    """The options of a stacked dataset (``data.<name>.train_size`` and so on)."""

    train_size: int = opt(
        128_000,
        "stacked images in the training split, drawn from the training digits",
        min=1,
        max=MAX_STACKS,
    )
    test_size: int = opt(
        10_000,
        "stacked images in the test split, drawn the same way from the test digits",
        min=2,
        max=MAX_STACKS,
    )
    seed: int = opt(0, "seed of the draw: which digits each stacked image holds", min=0)


def stack_split(split: Split, size: int, num_classes: int, rng: np.random.Generator) -> Split:
    """``size`` images of CHANNELS independently drawn (with replacement) single-channel
    images of ``split``, one per channel; labels the channels' labels as base-``num_classes``
    digits, the first channel the most significant."""
    if split.images.shape[1] != 1:
        raise DataError(
            f"stacking takes single-channel images, not {split.images.shape[1]} channels"
        )
    pick = rng.integers(0, len(split), (size, CHANNELS))
    images = split.images[pick, 0]  # (size, CHANNELS, H, W)
    return Split(images, stack_labels(split.labels[pick], num_classes))


def _places(num_classes: int, channels: int) -> np.ndarray:
    return num_classes ** np.arange(channels - 1, -1, -1, dtype=np.int64)


def stack_labels(digits: np.ndarray, num_classes: int) -> np.ndarray:
    """The stacked labels (N,) of per-channel labels (N, C): base-``num_classes`` numbers,
    the first channel the most significant digit."""
    digits = np.asarray(digits, dtype=np.int64)
    return digits @ _places(num_classes, digits.shape[1])


def channel_digits(labels: np.ndarray, num_classes: int, channels: int = CHANNELS) -> np.ndarray:
    """The per-channel labels (N, channels) of stacked labels (N,): the inverse of
    :func:`stack_labels`."""
    return (np.asarray(labels)[:, None] // _places(num_classes, channels)) % num_classes


def load_stacked(
    source: str, data_dir: Path | None, options: StackedOptions | None = None
) -> Dataset:
    """The stacked version of dataset ``source`` (a single-channel dataset with a test split)."""
    options = options or StackedOptions()
    base = load_dataset(source, data_dir)
    if base.test is None:
        raise DataError(f"dataset {source}: stacking needs a test split to stack")
    train_rng, test_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(options.seed).spawn(2)
    )
    k = base.num_classes
    train = stack_split(base.train, options.train_size, k, train_rng)
    test = stack_split(base.test, options.test_size, k, test_rng)
    modes = channel_digits(np.arange(k**CHANNELS), k)
    names = tuple("".join(base.class_names[d] for d in row) for row in modes)
    return Dataset(f"stacked-{source}", train, test, k**CHANNELS, names, stack_of=source)


def _register(name: str, source: str, what: str) -> None:
    register_dataset(
        name,
        partial(load_stacked, source),
        f"Stacked MNIST: three {what} digits drawn independently as red, green and blue, "
        "1,000 modes (made on load)",
        source=f"made from {source}",
        license=f"as {source}",
        options=StackedOptions,
    )


_register("stacked-mnist20k", "mnist20k", "bundled mnist20k")
_register("stacked-mnist", "mnist", "MNIST")
