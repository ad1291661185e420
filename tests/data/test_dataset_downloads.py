"""Downloads of registry datasets against local HTTP mirrors, and Debian's Fashion-MNIST folder."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np
import pytest

from digitgan.data import REGISTRY, dataset_info, load_dataset, verify_dataset
from digitgan.data.datasets import IDX_NAMES
from digitgan.errors import DataError


def files_in(folder: Path) -> list[str]:
    """The names of all files under ``folder`` (hidden temporary files included)."""
    return sorted(path.name for path in folder.rglob("*") if path.is_file())


@pytest.fixture
def fake_mnist(tmp_path: Path, make_mirror, make_idx_folder, register):
    """A mirror serving a small fake MNIST, and ``mnist`` registered to download it (md5 pinned)."""
    mirror = make_mirror()
    arrays = make_idx_folder(mirror.root)
    register("mnist", mirror.root, mirrors=(mirror.url,))
    return mirror, arrays, tmp_path / "data"


def test_download_lands_verified_and_atomically(fake_mnist, dead_url: str, monkeypatch) -> None:
    mirror, arrays, data_dir = fake_mnist
    dataset = load_dataset("mnist", data_dir)
    assert np.array_equal(dataset.train.images[:, 0], arrays[IDX_NAMES[0]])
    assert np.array_equal(dataset.test.labels, arrays[IDX_NAMES[3]])
    assert files_in(data_dir) == sorted(f"{stem}.gz" for stem in IDX_NAMES)
    assert [check.status for check in verify_dataset("mnist", data_dir)] == ["ok"] * 4
    # Once downloaded, loading needs no network.
    entry = dataclasses.replace(REGISTRY["mnist"], mirrors=(dead_url,))
    monkeypatch.setitem(REGISTRY, "mnist", entry)
    assert len(load_dataset("mnist", data_dir).train) == 12
    assert dataset_info("mnist", data_dir)["present"]


def test_recompressed_file_is_accepted_by_content(tmp_path, make_mirror, make_idx_folder, register):
    mirror = make_mirror()
    make_idx_folder(mirror.root)
    entry = register("mnist", mirror.root, pin=("md5", "sha256-gunzip"), mirrors=(mirror.url,))
    served = mirror.root / entry.files[0].name
    served.write_bytes(gzip.compress(gzip.decompress(served.read_bytes()), mtime=12345))
    load_dataset("mnist", tmp_path / "data")
    checks = verify_dataset("mnist", tmp_path / "data")
    assert [check.status for check in checks] == ["ok"] * 4
    assert checks[0].expected.startswith("sha256-gunzip:")


def test_checksum_mismatch_leaves_nothing(fake_mnist) -> None:
    mirror, _, data_dir = fake_mnist
    served = mirror.root / f"{IDX_NAMES[0]}.gz"
    served.write_bytes(served.read_bytes()[:-9] + b"\0" * 9)
    with pytest.raises(DataError, match=f"cannot download {IDX_NAMES[0]}.gz .*checksum mismatch"):
        load_dataset("mnist", data_dir)
    assert files_in(data_dir) == []


@pytest.mark.parametrize("announce_length", [True, False])
def test_oversized_download_is_cut_off(fake_mnist, announce_length: bool) -> None:
    mirror, _, data_dir = fake_mnist
    if not announce_length:
        mirror.omit_content_length()
    (mirror.root / f"{IDX_NAMES[0]}.gz").write_bytes(bytes(200_000))
    with pytest.raises(DataError, match=r"more than the 65794 bytes expected"):
        load_dataset("mnist", data_dir)
    assert files_in(data_dir) == []


@pytest.mark.parametrize("first", ["refused", "404"])
def test_next_mirror_is_tried(fake_mnist, make_mirror, dead_url: str, monkeypatch, first) -> None:
    mirror, _, data_dir = fake_mnist
    broken = dead_url if first == "refused" else make_mirror().url
    entry = dataclasses.replace(REGISTRY["mnist"], mirrors=(broken, mirror.url))
    monkeypatch.setitem(REGISTRY, "mnist", entry)
    assert len(load_dataset("mnist", data_dir).test) == 6
    assert len(files_in(data_dir)) == 4


def test_all_mirrors_down(fake_mnist, make_mirror, dead_url: str, monkeypatch) -> None:
    _, _, data_dir = fake_mnist
    empty = make_mirror().url
    entry = dataclasses.replace(REGISTRY["mnist"], mirrors=(dead_url, empty))
    monkeypatch.setitem(REGISTRY, "mnist", entry)
    with pytest.raises(DataError) as caught:
        load_dataset("mnist", data_dir)
    message = str(caught.value)
    assert "dataset 'mnist'" in message and "--dataset mnist20k" in message
    assert f"{dead_url}{IDX_NAMES[0]}.gz (" in message and "refused" in message
    assert f"{empty}{IDX_NAMES[0]}.gz (HTTP 404" in message
    assert files_in(data_dir) == []


def test_no_download_when_disallowed(fake_mnist) -> None:
    _, _, data_dir = fake_mnist
    with pytest.raises(DataError, match="'mnist' is not downloaded yet.*mnist20k"):
        load_dataset("mnist", data_dir, download=False)
    assert not data_dir.exists()
    info = dataset_info("mnist", data_dir)
    assert not info["present"] and info["location"] == str(data_dir / "mnist")
    assert [check.status for check in verify_dataset("mnist", data_dir)] == ["missing"] * 4


def test_damaged_download_is_not_used(fake_mnist) -> None:
    _, _, data_dir = fake_mnist
    load_dataset("mnist", data_dir)
    damaged = data_dir / "mnist" / f"{IDX_NAMES[3]}.gz"
    damaged.write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"{damaged} is damaged.*delete it to download it again"):
        load_dataset("mnist", data_dir)
    assert [check.status for check in verify_dataset("mnist", data_dir)][3] == "mismatch"


def test_default_data_dir_is_used(fake_mnist, tmp_path: Path) -> None:
    load_dataset("mnist")  # DIGITGAN_DATA points into tmp_path (see conftest)
    assert len(files_in(tmp_path / "data-home" / "mnist")) == 4


def test_fashion_mnist_from_the_system_folder(tmp_path, make_idx_folder, register) -> None:
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    make_idx_folder(system, num_classes=10)
    register("fashion-mnist", system, pin=("sha256-gunzip",), local_dir=system)
    dataset = load_dataset("fashion-mnist", tmp_path / "data")
    assert dataset.class_names[0] == "T-shirt/top" and dataset.num_classes == 10
    assert dataset_info("fashion-mnist", tmp_path / "data")["location"] == str(system)
    assert {check.path.parent for check in verify_dataset("fashion-mnist")} == {system}
    assert not (tmp_path / "data").exists()


def test_fashion_mnist_downloads_without_the_system_folder(
    tmp_path, make_mirror, make_idx_folder, register
) -> None:
    mirror = make_mirror()
    make_idx_folder(mirror.root)
    absent = tmp_path / "no-such-folder"
    register(
        "fashion-mnist",
        mirror.root,
        pin=("sha256-gunzip",),
        mirrors=(mirror.url,),
        local_dir=absent,
    )
    assert len(load_dataset("fashion-mnist", tmp_path / "data").train) == 12
    assert len(files_in(tmp_path / "data" / "fashion-mnist")) == 4


def test_unwritable_data_dir(fake_mnist) -> None:
    _, _, data_dir = fake_mnist
    data_dir.mkdir()
    (data_dir / "mnist").write_text("a file where the folder should be")
    with pytest.raises(DataError, match=f"cannot create the data folder {data_dir / 'mnist'}"):
        load_dataset("mnist", data_dir)
