"""Safe reading of NumPy .npz archives (such as Keras's ``mnist.npz``).

Arrays are loaded with ``np.load(..., allow_pickle=False)``, and only after each member's
.npy header has been read and checked: an object array (which would need unpickling) is
refused, and so is a header announcing more data than the archive member can hold, before
anything is allocated for it. Every problem is reported as :class:`~digitgan.errors.DataError`.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from digitgan.data.idx import MAX_PAYLOAD_BYTES
from digitgan.errors import DataError

__all__ = ["read_npz"]

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip
_MAX_DEFLATE_RATIO = 1032  # deflate cannot expand data more than this
# What numpy and zipfile raise for damaged archives and .npy headers.
_CORRUPT = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    RuntimeError,
    OverflowError,
    struct.error,
    zlib.error,
    zipfile.BadZipFile,
)


def read_npz(path: str | os.PathLike[str], names: Iterable[str]) -> dict[str, np.ndarray]:
    """Read the named arrays of an .npz archive; names it does not hold are left out."""
    path = Path(path)
    try:
        with open(path, "rb") as stream:
            magic = stream.read(4)
    except FileNotFoundError:
        raise DataError(f"not found: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if magic not in _ZIP_MAGICS:
        raise DataError(f"{path}: not an .npz archive (a zip file of .npy arrays)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            members = set(archive.zip.namelist())
            return {
                name: _read_member(archive, name, path)
                for name in names
                if f"{name}.npy" in members
            }
    except DataError:
        raise
    except _CORRUPT as exc:
        raise DataError(f"{path}: corrupt .npz archive ({type(exc).__name__}: {exc})") from exc


def _read_member(archive: np.lib.npyio.NpzFile, name: str, path: Path) -> np.ndarray:
    """Check the .npy header of one member, then load it."""
    info = archive.zip.getinfo(f"{name}.npy")
    with archive.zip.open(info) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise DataError(f"{path}: array {name} uses .npy format {version}, not supported")
    if dtype.hasobject:
        raise DataError(
            f"{path}: array {name} holds Python objects, which would need unpickling; refused"
        )
    if any(d < 0 for d in shape):  # numpy accepts them; the size below would then be wrong
        raise DataError(f"{path}: array {name} claims an impossible shape {shape}")
    announced = math.prod(shape) * dtype.itemsize
    if announced > min(info.file_size, _max_expanded_size(info), MAX_PAYLOAD_BYTES):
        raise DataError(
            f"{path}: array {name} claims shape {shape} of {dtype}, {announced} bytes, "
            f"more than its archive member holds ({info.file_size} bytes)"
        )
    return archive[name]


def _max_expanded_size(info: zipfile.ZipInfo) -> int:
    """The most bytes a zip member's compressed data can expand to."""
    if info.compress_type == zipfile.ZIP_STORED:
        return info.compress_size
    if info.compress_type == zipfile.ZIP_DEFLATED:
        return info.compress_size * _MAX_DEFLATE_RATIO + 1024
    return MAX_PAYLOAD_BYTES
