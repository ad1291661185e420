"""The data layer: datasets by spec, IDX and .npz files, the registry and downloads.

``load_dataset("mnist20k")`` returns the bundled offline sample; ``"mnist"`` and
``"fashion-mnist"`` are fetched on first use into :func:`default_data_dir`;
``"idx:FOLDER"`` and ``"npz:FILE"`` load a user's own files; ``"stacked-mnist20k"`` and
``"stacked-mnist"`` are Stacked MNIST, made on load (:mod:`digitgan.data.stacked`). See
:mod:`digitgan.data.registry` for how to point a named dataset at other mirrors or folders.
"""

from digitgan.data.datasets import (
    IDX_NAMES,
    MAX_CLASSES,
    MAX_IMAGE_SIDE,
    Dataset,
    Split,
    check_images,
    dataset_info,
    default_data_dir,
    list_datasets,
    load_dataset,
    verify_dataset,
)
from digitgan.data.fetch import FileCheck
from digitgan.data.idx import read_idx, write_idx
from digitgan.data.npz import read_npy, read_npz
from digitgan.data.registry import (
    DATASET_OPTIONS,
    DEFAULT_DATASET,
    REGISTRY,
    DataFile,
    DatasetEntry,
    DatasetLoader,
    register_dataset,
)
from digitgan.data.stacked import StackedOptions, load_stacked

__all__ = [
    "DATASET_OPTIONS",
    "DEFAULT_DATASET",
    "IDX_NAMES",
    "MAX_CLASSES",
    "MAX_IMAGE_SIDE",
    "REGISTRY",
    "DataFile",
    "Dataset",
    "DatasetEntry",
    "DatasetLoader",
    "FileCheck",
    "Split",
    "StackedOptions",
    "check_images",
    "dataset_info",
    "default_data_dir",
    "list_datasets",
    "load_dataset",
    "load_stacked",
    "read_idx",
    "read_npy",
    "read_npz",
    "register_dataset",
    "verify_dataset",
    "write_idx",
]
