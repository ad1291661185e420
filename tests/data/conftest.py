"""Fixtures for the data-layer tests: small fake IDX datasets and registry stand-ins (the local
mirrors, make_mirror and dead_url, are in tests/conftest.py)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from digitgan.data import REGISTRY, DataFile, DatasetEntry, write_idx
from digitgan.data.datasets import IDX_NAMES


@pytest.fixture(autouse=True)
def _private_data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test away from the user's real download folder."""
    monkeypatch.setenv("DIGITGAN_DATA", str(tmp_path / "data-home"))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for fuzz tests (hypothesis runs many examples per test, so not tmp_path)."""
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture
def make_idx_folder() -> Callable[..., dict[str, np.ndarray]]:
    """Return a function that writes a small fake MNIST-like IDX dataset into a folder."""

    def make(
        folder: Path,
        *,
        n_train: int = 12,
        n_test: int = 6,
        shape: tuple[int, int] = (4, 5),
        num_classes: int = 10,
        gz: bool = True,
        test: bool = True,
        seed: int = 0,
    ) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        arrays = {
            IDX_NAMES[0]: rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
            IDX_NAMES[1]: (np.arange(n_train) % num_classes).astype(np.uint8),
            IDX_NAMES[2]: rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
            IDX_NAMES[3]: (np.arange(n_test) % num_classes).astype(np.uint8),
        }
        if not test:
            del arrays[IDX_NAMES[2]], arrays[IDX_NAMES[3]]
        folder.mkdir(parents=True, exist_ok=True)
        for stem, array in arrays.items():
            write_idx(folder / (f"{stem}.gz" if gz else stem), array)
        return arrays

    return make


@pytest.fixture
def register(monkeypatch: pytest.MonkeyPatch) -> Callable[..., DatasetEntry]:
    """Return a function that swaps a registry entry for one pinned to the .gz files in a folder.

    ``pin`` chooses the checksums: "md5" (of the .gz) and/or "sha256-gunzip" (of the content).
    """

    def register(
        name: str,
        folder: Path,
        *,
        pin: tuple[str, ...] = ("md5",),
        mirrors: tuple[str, ...] = (),
        local_dir: Path | None = None,
    ) -> DatasetEntry:
        files = []
        for stem in IDX_NAMES:
            packed = (folder / f"{stem}.gz").read_bytes()
            raw = gzip.decompress(packed)
            files.append(
                DataFile(
                    f"{stem}.gz",
                    len(raw),
                    md5_gz=hashlib.md5(packed).hexdigest() if "md5" in pin else None,
                    sha256_raw=hashlib.sha256(raw).hexdigest() if "sha256-gunzip" in pin else None,
                )
            )
        entry = dataclasses.replace(
            REGISTRY[name], files=tuple(files), mirrors=mirrors, local_dir=local_dir
        )
        monkeypatch.setitem(REGISTRY, name, entry)
        return entry

    return register
