"""Stacked MNIST: made deterministically from the digits, 1,000 modes in the expected shares."""

from __future__ import annotations

import numpy as np
import pytest

from digitgan.config import build_config
from digitgan.data import StackedOptions, load_dataset
from digitgan.data.stacked import channel_digits, stack_labels
from digitgan.errors import ConfigError


@pytest.fixture(scope="module")
def stacked():
    return load_dataset("stacked-mnist20k")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist20k")


def test_shape_sizes_and_names(stacked) -> None:
    assert stacked.image_shape == (3, 28, 28) and stacked.stack_of == "mnist20k"
    assert len(stacked.train) == 128_000 and len(stacked.test) == 10_000
    assert stacked.num_classes == 1000 and stacked.class_names[703] == "703"


def test_each_channel_is_a_digit_of_its_split_and_the_label_names_them(stacked, digits) -> None:
    for split, source in ((stacked.train, digits.train), (stacked.test, digits.test)):
        pairs = zip(source.images[:, 0], source.labels, strict=True)
        index = {image.tobytes(): label for image, label in pairs}
        for image, label in zip(split.images[:200], split.labels[:200], strict=True):
            found = [index[channel.tobytes()] for channel in image]  # KeyError: not a digit
            assert stack_labels(np.array([found]), 10)[0] == label


def test_deterministic_and_the_seed_changes_the_draw(stacked) -> None:
    again = load_dataset("stacked-mnist20k")
    assert np.array_equal(again.train.images, stacked.train.images)
    assert np.array_equal(again.test.labels, stacked.test.labels)
    other = load_dataset("stacked-mnist20k", options=StackedOptions(seed=1, train_size=1000))
    assert len(other.train) == 1000
    assert not np.array_equal(other.train.labels, stacked.train.labels[:1000])


def test_all_1000_modes_in_the_proportions_of_independent_digits(stacked, digits) -> None:
    for split, source in ((stacked.train, digits.train), (stacked.test, digits.test)):
        counts = np.bincount(split.labels, minlength=1000)
        share = np.bincount(source.labels, minlength=10) / len(source)
        expected = len(split) * np.einsum("i,j,k->ijk", share, share, share).ravel()
        chi2 = ((counts - expected) ** 2 / expected).sum()
        assert counts.min() > 0
        # 999 degrees of freedom: mean 999, sd 45; far above that if channels were dependent
        assert chi2 < 999 + 5 * 45, chi2
        per_channel = channel_digits(split.labels, 10)
        for c in range(3):
            got = np.bincount(per_channel[:, c], minlength=10) / len(split)
            assert np.abs(got - share).max() < 0.01


def test_labels_and_channel_digits_are_inverse() -> None:
    labels = np.arange(1000)
    assert np.array_equal(stack_labels(channel_digits(labels, 10), 10), labels)
    assert channel_digits(np.array([703]), 10).tolist() == [[7, 0, 3]]


def test_options_are_config_fields_checked_before_work() -> None:
    cfg = build_config(
        "stacked", sets=["data.stacked-mnist20k.train_size=500", "data.stacked-mnist20k.seed=3"]
    )
    assert cfg.data.options == StackedOptions(train_size=500, test_size=10_000, seed=3)
    assert "[data.stacked-mnist20k]" in cfg.to_toml()
    assert "stacked-mnist20k" not in build_config("dcgan").to_toml()
    with pytest.raises(ConfigError, match="data.stacked-mnist20k.test_size: 1 is below"):
        build_config("stacked", sets=["data.stacked-mnist20k.test_size=1"])
    with pytest.raises(ConfigError, match="train_size: 1000001 is above the maximum 1000000"):
        build_config("stacked", sets=["data.stacked-mnist20k.train_size=1000001"])
