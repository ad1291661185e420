"""Loading by spec: the bundled mnist20k, ``idx:`` folders, the registry, info and verification."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from digitgan.data import (
    DEFAULT_DATASET,
    REGISTRY,
    Dataset,
    Split,
    dataset_info,
    default_data_dir,
    list_datasets,
    load_dataset,
    verify_dataset,
    write_idx,
)
from digitgan.data.datasets import IDX_NAMES
from digitgan.errors import DataError

# From src/digitgan/data/mnist20k/README.md.
MNIST20K_TRAIN_COUNTS = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
MNIST20K_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist20k() -> Dataset:
    return load_dataset("mnist20k")


def test_mnist20k_loads(mnist20k: Dataset) -> None:
    assert DEFAULT_DATASET == "mnist20k"
    assert mnist20k.name == "mnist20k" and mnist20k.image_shape == (1, 28, 28)
    for split in (mnist20k.train, mnist20k.test):
        assert split.images.shape == (10_000, 1, 28, 28) and split.images.dtype == np.uint8
        assert split.labels.shape == (10_000,) and split.labels.dtype == np.int64
        assert split.images.min() == 0 and split.images.max() == 255
    assert np.bincount(mnist20k.train.labels).tolist() == MNIST20K_TRAIN_COUNTS
    assert np.bincount(mnist20k.test.labels).tolist() == MNIST20K_TEST_COUNTS
    assert mnist20k.num_classes == 10 and mnist20k.class_names == tuple("0123456789")


def test_mnist20k_verifies() -> None:
    checks = verify_dataset("mnist20k")
    assert [check.status for check in checks] == ["ok"] * 4
    assert [check.path.name for check in checks] == [f"{stem}.gz" for stem in IDX_NAMES]
    assert (
        checks[0].expected
        == checks[0].actual
        == ("sha256:3591e9bbb6c2525aa7559769b931f1b4feca950ea6c0d74d14b8f75c8055f1fc")
    )


def test_mnist20k_info() -> None:
    info = dataset_info("mnist20k")
    assert info["present"] and info["image_shape"] == (1, 28, 28)
    assert (info["train_size"], info["test_size"], info["num_classes"]) == (10_000, 10_000, 10)
    assert info["label_counts"] == {"train": MNIST20K_TRAIN_COUNTS, "test": MNIST20K_TEST_COUNTS}
    assert Path(info["location"]) == REGISTRY["mnist20k"].local_dir
    assert "LeCun" in info["license"]


def test_damaged_bundled_file_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = REGISTRY["mnist20k"]
    wrong = dataclasses.replace(entry.files[1], sha256_gz="0" * 64)
    monkeypatch.setitem(
        REGISTRY,
        "mnist20k",
        dataclasses.replace(entry, files=(entry.files[0], wrong, *entry.files[2:])),
    )
    assert [check.status for check in verify_dataset("mnist20k")] == ["ok", "mismatch", "ok", "ok"]
    with pytest.raises(
        DataError, match="train-labels-idx1-ubyte.gz is damaged.*reinstall digitgan"
    ):
        load_dataset("mnist20k")


def test_missing_bundled_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = REGISTRY["mnist20k"]
    monkeypatch.setitem(REGISTRY, "mnist20k", dataclasses.replace(entry, local_dir=tmp_path))
    assert {check.status for check in verify_dataset("mnist20k")} == {"missing"}
    assert verify_dataset("mnist20k")[0].actual is None
    with pytest.raises(DataError, match=f"not found: {tmp_path}.*reinstall digitgan"):
        load_dataset("mnist20k")


def test_registry_lists_the_named_datasets() -> None:
    entries = list_datasets()
    names = ["mnist20k", "mnist", "fashion-mnist", "stacked-mnist20k", "stacked-mnist"]
    assert [entry.name for entry in entries] == names
    entries = entries[:3]  # the stacked ones are made on load: tests/data/test_stacked.py
    for entry in entries:
        assert entry.description and entry.license and entry.num_classes == 10
        assert len(entry.files) == 4 and all(file.checksums() for file in entry.files)
    assert REGISTRY["mnist"].mirrors == (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    )
    assert REGISTRY["fashion-mnist"].local_dir == Path("/usr/share/datasets/fashion-mnist")
    assert REGISTRY["fashion-mnist"].class_names[::7] == ("T-shirt/top", "Sneaker")
    assert REGISTRY["fashion-mnist"].class_names[-1] == "Ankle boot"


@pytest.mark.parametrize("spec", ["MNIST", "cifar10", "", "idx", "mnist20k "])
def test_unknown_spec(spec: str) -> None:
    with pytest.raises(
        DataError, match="unknown dataset.*mnist20k, mnist, fashion-mnist.*idx:.*npz:"
    ):
        load_dataset(spec)


@pytest.mark.parametrize("spec", ["idx:", "npz:"])
def test_spec_without_path(spec: str) -> None:
    with pytest.raises(DataError, match="lacks a path"):
        load_dataset(spec)


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DIGITGAN_DATA", str(tmp_path / "explicit"))
    assert default_data_dir() == tmp_path / "explicit"
    monkeypatch.delenv("DIGITGAN_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "digitgan"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".cache" / "digitgan"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_data_dir() == tmp_path / "home" / ".cache" / "digitgan"


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_loads(tmp_path: Path, make_idx_folder, gz: bool) -> None:
    arrays = make_idx_folder(tmp_path, num_classes=7, gz=gz)
    dataset = load_dataset(f"idx:{tmp_path}")
    assert dataset.image_shape == (1, 4, 5)
    assert np.array_equal(dataset.train.images[:, 0], arrays[IDX_NAMES[0]])
    assert np.array_equal(dataset.test.labels, arrays[IDX_NAMES[3]])
    assert dataset.num_classes == 7 and dataset.class_names == tuple("0123456")


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_of_4d_images_loads_with_its_channels(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    images = {n: rng.integers(0, 256, (n, 3, 4, 5), dtype=np.uint8) for n in (12, 6)}
    labels = {n: (np.arange(n) % 7).astype(np.uint8) for n in (12, 6)}
    for (image_name, label_name), n in zip((IDX_NAMES[:2], IDX_NAMES[2:]), (12, 6), strict=True):
        write_idx(tmp_path / f"{image_name}{suffix}", images[n])
        write_idx(tmp_path / f"{label_name}{suffix}", labels[n])
    dataset = load_dataset(f"idx:{tmp_path}")
    assert dataset.image_shape == (3, 4, 5)
    assert np.array_equal(dataset.train.images, images[12])
    assert np.array_equal(dataset.test.images, images[6])
    assert np.array_equal(dataset.test.labels, labels[6])
    assert dataset_info(f"idx:{tmp_path}")["image_shape"] == (3, 4, 5)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((12, 5, 4, 5), r"5 channels in shape \(12, 5, 4, 5\) \(N, C, H, W\); expected 1 to 4"),
        ((12, 0, 4, 5), r"0 channels in shape \(12, 0, 4, 5\)"),
        ((12, 3, 1025, 5), "images of 1025x5 pixels; .* at most 1024 pixels a side"),
    ],
)
def test_bad_4d_idx_images_are_refused_before_reading(
    tmp_path: Path, make_idx_folder, shape: tuple, message: str
) -> None:
    make_idx_folder(tmp_path, test=False)
    # only the header: a reader that looked past it would report a truncated file instead
    header = bytes([0, 0, 0x08, 4]) + np.array(shape, ">u4").tobytes()
    (tmp_path / f"{IDX_NAMES[0]}.gz").unlink()
    (tmp_path / IDX_NAMES[0]).write_bytes(header)
    with pytest.raises(DataError, match=f"{IDX_NAMES[0]}: {message}"):
        load_dataset(f"idx:{tmp_path}")


def test_idx_folder_mixed_compression_and_no_test_split(tmp_path: Path, make_idx_folder) -> None:
    make_idx_folder(tmp_path, test=False)
    (tmp_path / f"{IDX_NAMES[1]}.gz").unlink()
    write_idx(tmp_path / IDX_NAMES[1], (np.arange(12) % 10).astype(np.uint8))
    dataset = load_dataset(f"idx:{tmp_path}")
    assert dataset.test is None and len(dataset.train) == 12
    info = dataset_info(f"idx:{tmp_path}")
    assert info["present"] and info["test_size"] == 0 and info["label_counts"]["test"] is None


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda folder: (folder / f"{IDX_NAMES[1]}.gz").unlink(), "not found: .*train-labels"),
        (lambda folder: (folder / f"{IDX_NAMES[3]}.gz").unlink(), "only one of the t10k files"),
        (lambda folder: (folder / IDX_NAMES[0]).write_bytes(b""), "both .* exist .* remove one"),
        (
            lambda folder: write_idx(folder / f"{IDX_NAMES[1]}.gz", np.zeros(11, np.uint8)),
            r"train-images-idx3-ubyte.gz holds 12 images but .*train-labels-idx1-ubyte.gz holds 11",
        ),
        (
            lambda folder: write_idx(folder / f"{IDX_NAMES[0]}.gz", np.zeros((12, 4, 5), np.int16)),
            "train-images-idx3-ubyte.gz: expected images, a uint8 IDX file .* found 3-D int16",
        ),
        (
            lambda folder: shutil.copy(
                folder / f"{IDX_NAMES[1]}.gz", folder / f"{IDX_NAMES[0]}.gz"
            ),
            "train-images-idx3-ubyte.gz: expected images, a uint8 IDX file .* found 1-D uint8",
        ),
        (
            lambda folder: shutil.copy(
                folder / f"{IDX_NAMES[2]}.gz", folder / f"{IDX_NAMES[3]}.gz"
            ),
            "t10k-labels-idx1-ubyte.gz: expected labels, a 1-D uint8 .* found 3-D",
        ),
        (
            lambda folder: write_idx(folder / f"{IDX_NAMES[2]}.gz", np.zeros((6, 5, 4), np.uint8)),
            r"test images are \(1, 5, 4\) but training images are \(1, 4, 5\)",
        ),
        (
            lambda folder: (folder / f"{IDX_NAMES[0]}.gz").write_bytes(b"\x1f\x8bjunk"),
            "train-images-idx3-ubyte.gz: corrupt gzip data",
        ),
    ],
)
def test_bad_idx_folder(tmp_path: Path, make_idx_folder, damage, message: str) -> None:
    make_idx_folder(tmp_path)
    damage(tmp_path)
    with pytest.raises(DataError, match=message):
        load_dataset(f"idx:{tmp_path}")


def test_idx_spec_must_be_an_existing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"not found: {tmp_path / 'absent'}"):
        load_dataset(f"idx:{tmp_path / 'absent'}")
    (tmp_path / "file").touch()
    with pytest.raises(DataError, match="expected a folder of IDX files"):
        load_dataset(f"idx:{tmp_path / 'file'}")
    info = dataset_info(f"idx:{tmp_path / 'absent'}")
    assert not info["present"] and info["train_size"] is None and "label_counts" not in info


def test_verify_needs_a_registry_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="only the named datasets .* have pinned checksums"):
        verify_dataset(f"idx:{tmp_path}")


def test_registry_labels_must_be_in_range(tmp_path: Path, make_idx_folder, register) -> None:
    make_idx_folder(tmp_path, num_classes=11)  # label 10 in a 10-class dataset
    register("fashion-mnist", tmp_path, pin=("sha256-gunzip",), local_dir=tmp_path)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: label 10 out of range 0..9"):
        load_dataset("fashion-mnist")


def test_split_and_dataset_invariants() -> None:
    images = np.zeros((2, 1, 3, 3), np.uint8)
    with pytest.raises(DataError, match="4-D uint8"):
        Split(images.astype(np.float32), np.zeros(2, np.int64))
    with pytest.raises(DataError, match="int64 of shape"):
        Split(images, np.zeros(3, np.int64))
    split = Split(images, np.zeros(2, np.int64))
    with pytest.raises(DataError, match="1 class names for 2 classes"):
        Dataset("x", split, None, 2, ("0",))


@pytest.mark.parametrize(
    "shape, refused", [((2, 1024, 3), False), ((2, 3, 1025), True), ((2, 1025, 1), True)]
)
def test_idx_images_of_more_than_1024_pixels_a_side_are_refused(
    tmp_path: Path, shape: tuple, refused: bool
) -> None:
    write_idx(tmp_path / IDX_NAMES[0], np.zeros(shape, np.uint8))
    write_idx(tmp_path / IDX_NAMES[1], np.zeros(2, np.uint8))
    if not refused:
        assert load_dataset(f"idx:{tmp_path}").image_shape == (1, *shape[1:])
        return
    message = f"{IDX_NAMES[0]}: images of {shape[1]}x{shape[2]} pixels; .* at most 1024 pixels"
    with pytest.raises(DataError, match=message):
        load_dataset(f"idx:{tmp_path}")
