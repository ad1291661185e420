"""Loading datasets by spec into in-memory arrays, and reporting on them.

A spec is one of the registry names (``mnist20k``, bundled; ``mnist``; ``fashion-mnist``),
``idx:FOLDER`` (a folder of the four standard-named IDX files, each optionally gzipped;
the t10k pair is optional) or ``npz:FILE`` (the Keras ``mnist.npz`` layout: ``x_train``,
``y_train`` and optionally ``x_test``, ``y_test``).

Registry files are checked against their pinned checksums on every load; missing ones are
downloaded into ``<data_dir>/<name>/`` (see :mod:`digitgan.data.fetch`).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitgan.data.fetch import FileCheck, check_file, download_file
from digitgan.data.idx import read_idx
from digitgan.data.npz import read_npz
from digitgan.data.registry import REGISTRY, DatasetEntry, DatasetLoader
from digitgan.errors import DataError

__all__ = [
    "IDX_NAMES",
    "MAX_CLASSES",
    "MAX_IMAGE_SIDE",
    "Dataset",
    "Split",
    "check_images",
    "dataset_info",
    "default_data_dir",
    "list_datasets",
    "load_dataset",
    "verify_dataset",
]

MAX_CLASSES = 256
"""Labels of a dataset outside the registry must lie in 0..MAX_CLASSES-1."""

MAX_IMAGE_SIDE = 1024
"""The most pixels an image may have on a side (height and width): digitgan is for small
images. Files announcing larger ones are refused before their data is read."""

MAX_CHANNELS = 4
"""The most channels an image may have (IDX (N, C, H, W), npz (N, H, W, C))."""

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
"""The standard IDX file names an ``idx:`` folder holds (each may also end in .gz)."""
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class Split:
    """Images (uint8, N x C x H x W) and their labels (int64, N) of one split."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DataError(
                f"Split images must be 4-D uint8, not {self.images.ndim}-D {self.images.dtype}"
            )
        if self.labels.dtype != np.int64 or self.labels.shape != self.images.shape[:1]:
            raise DataError(
                f"Split labels must be int64 of shape {self.images.shape[:1]}, "
                f"not {self.labels.dtype} of shape {self.labels.shape}"
            )

    def __len__(self) -> int:
        """The number of examples."""
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: its train split, optional test split, and class names.

    ``stack_of`` names the single-channel dataset of K classes whose images a stacked dataset
    holds, one per channel (see :mod:`digitgan.data.stacked`); its labels are then the
    channels' labels as base-K digits, the first channel the most significant. None for any
    other dataset.
    """

    name: str
    train: Split
    test: Split | None
    num_classes: int
    class_names: tuple[str, ...]
    stack_of: str | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        channels, height, width = self.train.images.shape[1:]
        return int(channels), int(height), int(width)

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise DataError(
                f"dataset {self.name}: {len(self.class_names)} class names "
                f"for {self.num_classes} classes"
            )


def default_data_dir() -> Path:
    """Where downloads go: $DIGITGAN_DATA, else $XDG_CACHE_HOME/digitgan, else ~/.cache/digitgan."""
    if explicit := os.environ.get("DIGITGAN_DATA"):
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(cache):  # the XDG spec says to ignore a relative path
        cache = os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "digitgan"


def list_datasets() -> list[DatasetEntry | DatasetLoader]:
    """The named datasets (registry entries), in a stable order."""
    return list(REGISTRY.values())


def load_dataset(
    spec: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    options: object | None = None,
) -> Dataset:
    """Load a dataset by spec, downloading a registry dataset's missing files if allowed.

    ``options`` is the option table of a dataset that has one (``cfg.data.options``; default:
    its defaults)."""
    kind, target = _parse(spec)
    if kind == "idx":
        return _load_idx_folder(spec, target)
    if kind == "npz":
        return _load_npz(spec, target)
    entry = REGISTRY[target]
    if isinstance(entry, DatasetLoader):
        return _from_loader(entry, data_dir, options)
    folder = _registry_folder(entry, data_dir)
    _ensure_files(entry, folder, download)
    train_images, train_labels, test_images, test_labels = (folder / f.name for f in entry.files)
    train = _idx_split(train_images, train_labels, entry.num_classes)
    test = _idx_split(test_images, test_labels, entry.num_classes)
    return Dataset(spec, train, test, entry.num_classes, entry.class_names)


def dataset_info(spec: str, data_dir: str | os.PathLike[str] | None = None) -> dict:
    """Describe a dataset: what it is, where it lives, whether it is present, its label counts.

    Keys: name, description, image_shape, num_classes, class_names, train_size, test_size,
    location, present, source, license, and label_counts ({"train": [...], "test": [...]
    or None}) when present. For an ``idx:``/``npz:`` spec, shape, classes and sizes are None
    until it is present, and source and license are None. A present dataset is loaded (no
    download), so a damaged one raises DataError.
    """
    kind, target = _parse(spec)
    if kind == "registry" and isinstance(REGISTRY[target], DatasetLoader):
        entry = REGISTRY[target]
        info = {"name": spec, "description": entry.description, "location": "(made by a function)"}
        info |= {"present": True, "source": entry.source, "license": entry.license}
    elif kind == "registry":
        entry = REGISTRY[target]
        location = _registry_folder(entry, data_dir)
        info = {
            "name": spec,
            "description": entry.description,
            "image_shape": entry.image_shape,
            "num_classes": entry.num_classes,
            "class_names": entry.class_names,
            "train_size": entry.train_size,
            "test_size": entry.test_size,
            "location": str(location),
            "present": all((location / file.name).is_file() for file in entry.files),
            "source": entry.source,
            "license": entry.license,
        }
    else:
        info = dict.fromkeys(
            ("image_shape", "num_classes", "class_names", "train_size", "test_size", "source")
        )
        info.update(
            name=spec,
            description="IDX files in a folder" if kind == "idx" else "a Keras-style .npz archive",
            location=str(target),
            present=target.exists(),
            license=None,
        )
    if info["present"]:
        dataset = load_dataset(spec, data_dir, download=False)
        info.update(
            image_shape=dataset.image_shape,
            num_classes=dataset.num_classes,
            class_names=dataset.class_names,
            train_size=len(dataset.train),
            test_size=len(dataset.test) if dataset.test is not None else 0,
            label_counts={
                "train": _label_counts(dataset.train, dataset.num_classes),
                "test": (
                    None
                    if dataset.test is None
                    else _label_counts(dataset.test, dataset.num_classes)
                ),
            },
        )
    return info


def verify_dataset(spec: str, data_dir: str | os.PathLike[str] | None = None) -> list[FileCheck]:
    """Check each file of a registry dataset against its pinned checksum; download nothing."""
    kind, target = _parse(spec)
    if kind != "registry":
        raise DataError(
            f"cannot verify {spec}: only the named datasets ({', '.join(REGISTRY)}) have pinned "
            f"checksums; load it to check its structure"
        )
    entry = REGISTRY[target]
    if isinstance(entry, DatasetLoader):
        raise DataError(f"cannot verify {spec}: it is made by a function, it has no pinned files")
    folder = _registry_folder(entry, data_dir)
    return [check_file(folder / file.name, file) for file in entry.files]


def _parse(spec: str) -> tuple[str, Path | str]:
    """Split a spec into ("registry", name), ("idx", folder) or ("npz", file)."""
    for kind in ("idx", "npz"):
        if spec.startswith(f"{kind}:"):
            path = spec[len(kind) + 1 :]
            if not path:
                raise DataError(f"dataset spec {spec!r} lacks a path after '{kind}:'")
            return kind, Path(path).expanduser()
    if spec in REGISTRY:
        return "registry", spec
    raise DataError(
        f"unknown dataset {spec!r}; known: {', '.join(REGISTRY)}, "
        f"idx:FOLDER (a folder of MNIST-style IDX files) or npz:FILE (a Keras-style mnist.npz)"
    )


def _registry_folder(entry: DatasetEntry, data_dir: str | os.PathLike[str] | None) -> Path:
    """Where a registry dataset's files are: its local folder if complete, else the data dir.

    An empty ``data_dir`` counts as unset (the default data dir).
    """
    local = entry.local_dir
    if local is not None and (
        not entry.mirrors or all((local / file.name).is_file() for file in entry.files)
    ):
        return local
    return (Path(data_dir) if data_dir else default_data_dir()) / entry.name


def _ensure_files(entry: DatasetEntry, folder: Path, download: bool) -> None:
    """Check the files already in ``folder`` and download the missing ones (if allowed)."""
    for file in entry.files:
        path = folder / file.name
        if not path.is_file():
            if not entry.mirrors:
                raise DataError(
                    f"not found: {path} (part of the installed package: reinstall digitgan)"
                )
            if not download:
                raise DataError(
                    f"dataset '{entry.name}' is not downloaded yet: {path} is missing; allow the "
                    f"download, copy its files into {folder}, or use the bundled mnist20k"
                )
            download_file(entry, file, folder)
            continue
        check = check_file(path, file)
        if check.status != "ok":
            fix = "reinstall digitgan" if not entry.mirrors else "delete it to download it again"
            raise DataError(
                f"{path} is damaged: expected {check.expected}, found {check.actual}; {fix}"
            )


def _from_loader(
    entry: DatasetLoader, data_dir: str | os.PathLike[str] | None, options: object | None
) -> Dataset:
    """The dataset a registered function makes (with its options, if it has some), checked
    to be one."""
    folder = Path(data_dir) if data_dir else None
    if entry.options is None:
        dataset = entry.load(folder)
    else:
        dataset = entry.load(folder, options if options is not None else entry.options())
    if not isinstance(dataset, Dataset):
        raise DataError(
            f"dataset {entry.name}: its loader returned {type(dataset).__name__}, not a "
            "digitgan.data.Dataset"
        )
    return dataset


def _find_idx_file(folder: Path, stem: str) -> Path | None:
    """The file ``stem`` or ``stem.gz`` in ``folder``; None if neither; an error if both."""
    found = [path for path in (folder / stem, folder / f"{stem}.gz") if path.is_file()]
    if len(found) > 1:
        raise DataError(f"both {found[0]} and {found[1]} exist in {folder}; remove one")
    return found[0] if found else None


def _load_idx_folder(spec: str, folder: Path) -> Dataset:
    """Load an ``idx:`` dataset from a folder of standard-named IDX files."""
    if not folder.is_dir():
        raise DataError(f"not found: {folder} (expected a folder of IDX files for {spec})")
    paths = [_find_idx_file(folder, stem) for stem in IDX_NAMES]
    for stem, path in zip(IDX_NAMES[:2], paths[:2], strict=True):
        if path is None:
            raise DataError(f"not found: {folder / stem} (or {stem}.gz), needed for {spec}")
    if (paths[2] is None) != (paths[3] is None):
        raise DataError(f"{folder} holds only one of the t10k files: need both or neither")
    train = _idx_split(paths[0], paths[1], MAX_CLASSES)
    test = _idx_split(paths[2], paths[3], MAX_CLASSES) if paths[2] is not None else None
    return _custom_dataset(spec, train, test)


def _load_npz(spec: str, path: Path) -> Dataset:
    """Load an ``npz:`` dataset in the Keras mnist.npz layout."""
    arrays = read_npz(path, _NPZ_KEYS, functools.partial(_check_npz_header, path))
    missing = [key for key in _NPZ_KEYS if key not in arrays]
    if {"x_train", "y_train"} & set(missing) or len(missing) == 1:
        raise DataError(
            f"{path} lacks the array(s) {', '.join(missing)}; expected x_train, y_train and "
            f"optionally x_test, y_test (the Keras mnist.npz layout)"
        )
    train = _npz_split(path, arrays, "x_train", "y_train")
    test = _npz_split(path, arrays, "x_test", "y_test") if "x_test" in arrays else None
    return _custom_dataset(spec, train, test)


def _idx_split(images_path: Path, labels_path: Path, num_classes: int) -> Split:
    """Read and check a pair of IDX files: uint8 images, 3-D (N, H, W) or 4-D (N, C, H, W)
    with at most MAX_CHANNELS channels, and 1-D uint8 labels."""

    def images_header(shape: tuple[int, ...], dtype: np.dtype) -> None:
        if dtype != np.uint8 or len(shape) not in (3, 4):
            raise DataError(
                f"{images_path}: expected images, a uint8 IDX file of 3 dimensions (N, H, W) "
                f"or 4 (N, C, H, W); found {len(shape)}-D {dtype} of shape {shape}"
            )
        if len(shape) == 4 and not 1 <= shape[1] <= MAX_CHANNELS:
            raise DataError(
                f"{images_path}: {shape[1]} channels in shape {shape} (N, C, H, W); "
                f"expected 1 to {MAX_CHANNELS}"
            )
        _check_image_size(str(images_path), shape[-2], shape[-1])

    def labels_header(shape: tuple[int, ...], dtype: np.dtype) -> None:
        if dtype != np.uint8 or len(shape) != 1:
            raise DataError(
                f"{labels_path}: expected labels, a 1-D uint8 IDX file; "
                f"found {len(shape)}-D {dtype} of shape {shape}"
            )

    images = read_idx(images_path, images_header)
    labels = read_idx(labels_path, labels_header)
    images = images[:, np.newaxis] if images.ndim == 3 else images
    return _split(images, labels, str(images_path), str(labels_path), num_classes)


def check_images(src: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Refuse an array of images (``src`` names it) unless it is uint8 of shape (N, H, W) or
    channels-last (N, H, W, C), with at most MAX_CHANNELS channels and MAX_IMAGE_SIDE pixels a
    side. Readers call it with the shape and dtype a file announces, before reading the data."""
    if dtype != np.uint8 or len(shape) not in (3, 4):
        raise DataError(
            f"{src}: expected uint8 images of shape (N, H, W) or (N, H, W, C); "
            f"found {dtype} of shape {shape}"
        )
    if len(shape) == 4 and shape[3] > MAX_CHANNELS:
        raise DataError(
            f"{src}: {shape[3]} channels in the last axis of shape {shape}; expected "
            f"channels-last images (N, H, W, C) with C at most {MAX_CHANNELS}"
        )
    _check_image_size(src, shape[1], shape[2])


def _check_image_size(src: str, height: int, width: int) -> None:
    if height > MAX_IMAGE_SIDE or width > MAX_IMAGE_SIDE:
        raise DataError(
            f"{src}: images of {height}x{width} pixels; digitgan takes images of at most "
            f"{MAX_IMAGE_SIDE} pixels a side"
        )


def _npz_split(
    path: Path, arrays: dict[str, np.ndarray], images_key: str, labels_key: str
) -> Split:
    """Check arrays from an .npz: uint8 images (N, H, W) or (N, H, W, C), integer labels (N,)."""
    images, labels = arrays[images_key], arrays[labels_key]
    images_src, labels_src = f"{path}[{images_key}]", f"{path}[{labels_key}]"
    check_images(images_src, images.shape, images.dtype)
    images = images[:, np.newaxis] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    _check_npz_labels(labels_src, labels.shape, labels.dtype)
    return _split(images, labels, images_src, labels_src, MAX_CLASSES)


def _check_npz_header(path: Path, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """The checks of :func:`_npz_split`, on an array's header, before its data is read."""
    src = f"{path}[{name}]"
    if name.startswith("x_"):
        check_images(src, shape, dtype)
    else:
        _check_npz_labels(src, shape, dtype)


def _check_npz_labels(src: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if dtype.kind not in "iu" or len(shape) != 1:
        raise DataError(
            f"{src}: expected integer labels of shape (N,); found {dtype} of shape {shape}"
        )


def _split(
    images: np.ndarray, labels: np.ndarray, images_src: str, labels_src: str, num_classes: int
) -> Split:
    """Build a Split from N x C x H x W images and N labels, checking sizes and label range."""
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{images_src} holds {images.shape[0]} images but {labels_src} holds "
            f"{labels.shape[0]} labels"
        )
    if 0 in images.shape:
        raise DataError(f"{images_src}: no images (shape {images.shape})")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise DataError(f"{labels_src}: label {bad} out of range 0..{num_classes - 1}")
    return Split(np.ascontiguousarray(images), labels.astype(np.int64))


def _custom_dataset(spec: str, train: Split, test: Split | None) -> Dataset:
    """A Dataset outside the registry: classes 0..max label, named by their numbers."""
    if test is not None and test.images.shape[1:] != train.images.shape[1:]:
        raise DataError(
            f"{spec}: test images are {test.images.shape[1:]} but training images are "
            f"{train.images.shape[1:]} (C, H, W)"
        )
    num_classes = 1 + max(int(split.labels.max()) for split in (train, test) if split is not None)
    return Dataset(
        spec, train, test, num_classes, tuple(str(label) for label in range(num_classes))
    )


def _label_counts(split: Split, num_classes: int) -> list[int]:
    """How many examples of each class a split holds."""
    return np.bincount(split.labels, minlength=num_classes).tolist()
