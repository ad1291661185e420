"""Safe reading of NumPy .npz archives (such as Keras's ``mnist.npz``) and .npy files.

Arrays are loaded with ``np.load(..., allow_pickle=False)``, and only after each array's
.npy header has been read and checked: an object array (which would need unpickling) is
refused, and so is a header announcing more data than the file or archive member can hold,
or more than :data:`~digitgan.data.idx.MAX_PAYLOAD_BYTES`, before anything is allocated for
it. A caller may check the announced shape and dtype too (e.g. that images are small),
before the data is read. In an archive, only members stored as they are or deflated (what
numpy's ``savez`` and ``savez_compressed`` write) are read: deflate expands data at most
about 1032 times, so the size of the compressed member bounds what it can claim; other
methods (bzip2, lzma, ...) can expand data without a useful bound and are refused. The
archive's central directory (its list of members) may take at most
:data:`MAX_DIRECTORY_BYTES`. Every problem is reported as :class:`~digitgan.errors.DataError`.
"""

from __future__ import annotations

import math
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from digitgan.data.idx import MAX_PAYLOAD_BYTES
from digitgan.errors import DataError
from digitgan.fileio import open_regular

__all__ = ["MAX_DIRECTORY_BYTES", "HeaderCheck", "read_npy", "read_npz"]

HeaderCheck = Callable[[tuple[int, ...], np.dtype], None]
"""Called with an array's announced shape and dtype before its data is read; raises
DataError to refuse it."""

MAX_DIRECTORY_BYTES = 1 << 20
"""The largest central directory (list of members) an .npz archive may have: 1 MiB, room
for thousands of members (a Keras npz has four). Python's zipfile holds several times its
size in memory."""

_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip
_NPY_MAGIC = b"\x93NUMPY"
_MAX_DEFLATE_RATIO = 1032  # deflate cannot expand data more than this
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED}
_METHOD_NAMES = {
    1: "shrink",
    6: "implode",
    9: "deflate64",
    12: "bzip2",
    14: "lzma",
    93: "zstandard",
    95: "xz",
    98: "PPMd",
}
_END = b"PK\x05\x06"  # end of central directory record (22 bytes and a comment)
_END64_LOCATOR = b"PK\x06\x07"  # 20 bytes just before it, in a zip64 archive
_END64 = b"PK\x06\x06"  # the zip64 end record (56 bytes) the locator points to
_ZIP64_BEFORE_END = 20 + 56  # a zip64 end record and its locator, before the end record
_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
# What numpy and zipfile raise for damaged archives and .npy headers.
_CORRUPT = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    RuntimeError,
    OverflowError,
    NotImplementedError,
    struct.error,
    zlib.error,
    zipfile.BadZipFile,
)


def read_npz(
    path: str | os.PathLike[str],
    names: Iterable[str],
    check: Callable[[str, tuple[int, ...], np.dtype], None] | None = None,
) -> dict[str, np.ndarray]:
    """Read the named arrays of an .npz archive; names it does not hold are left out.

    ``check(name, shape, dtype)``, if given, is called with each array's announced shape and
    dtype before its data is read.
    """
    path = Path(path)
    try:
        with open_regular(path, error=DataError) as stream:
            if stream.read(4) not in _ZIP_MAGICS:
                raise DataError(f"{path}: not an .npz archive (a zip file of .npy arrays)")
            _check_directory(stream, path)
            stream.seek(0)
            with np.load(stream, allow_pickle=False) as archive:
                members = set(archive.zip.namelist())
                return {
                    name: _read_member(archive, name, path, check)
                    for name in names
                    if f"{name}.npy" in members
                }
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"not found: {path}") from None
    except _CORRUPT as exc:
        raise DataError(f"{path}: corrupt .npz archive ({type(exc).__name__}: {exc})") from exc


def read_npy(
    path: str | os.PathLike[str],
    check: HeaderCheck | None = None,
    *,
    mmap: bool = False,
    what: str = "",
) -> np.ndarray:
    """Read a .npy file (memory-mapped read-only with ``mmap``), after checking its header;
    ``check(shape, dtype)`` as in :func:`read_npz`. Errors start with ``what`` (e.g. an
    option name) and the file."""
    path = Path(path)
    where = f"{what} {path}" if what else str(path)
    try:
        with open_regular(path, what, DataError) as stream:
            shape, dtype = _npy_header(stream, where)
            room = os.fstat(stream.fileno()).st_size - stream.tell()
            _check_size(shape, dtype, room, f"the {room} bytes that follow its header", where)
            if check is not None:
                check(shape, dtype)
            if mmap:
                return np.load(path, allow_pickle=False, mmap_mode="r")
            stream.seek(0)
            return np.load(stream, allow_pickle=False)
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{where}: no such file") from None
    except _CORRUPT as exc:
        raise DataError(f"{where}: not a readable .npy file ({type(exc).__name__}: {exc})") from exc


def _check_directory(stream: BinaryIO, path: Path) -> None:
    """Refuse an archive whose central directory is larger than MAX_DIRECTORY_BYTES.

    Every place a zip reader may take the directory's size from is read: the end record in
    the last 22 bytes, the last one in the last 64 KiB, and a zip64 end record either right
    before its locator or where the locator points; the largest size counts. A missing or
    damaged record is left to zipfile.
    """
    size = stream.seek(0, os.SEEK_END)
    tail_start = max(0, size - _ZIP64_BEFORE_END - 22 - (1 << 16))
    stream.seek(tail_start)
    tail = stream.read()
    ends = {tail.rfind(_END), len(tail) - 22 if tail[-22:-18] == _END else -1} - {-1}
    sizes = [0]
    for at in ends:
        if len(tail) - at < 22:
            continue
        sizes.append(struct.unpack_from("<I", tail, at + 12)[0])
        locator = at - 20
        if locator < 0 or tail[locator : locator + 4] != _END64_LOCATOR:
            continue
        pointed = struct.unpack_from("<Q", tail, locator + 8)[0]
        places = [tail_start + at - _ZIP64_BEFORE_END, pointed]
        for place in places:
            if 0 <= place <= size - 56:
                stream.seek(place)
                record = stream.read(56)
                if record[:4] == _END64:
                    sizes.append(struct.unpack_from("<Q", record, 40)[0])
    if max(sizes) > MAX_DIRECTORY_BYTES:
        raise DataError(
            f"{path}: its list of members takes {max(sizes):,} bytes, more than the "
            f"{MAX_DIRECTORY_BYTES:,} allowed; a NumPy archive has a handful of members"
        )


def _npy_header(stream: BinaryIO, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """The (shape, dtype) of the .npy header at the stream's position, checked: known format,
    no Python objects, no negative dimensions."""
    magic = stream.read(len(_NPY_MAGIC) + 2)
    if len(magic) < len(_NPY_MAGIC) + 2 or not magic.startswith(_NPY_MAGIC):
        raise DataError(f"{where}: not a .npy file (no .npy magic number)")
    version = (magic[-2], magic[-1])
    read_header = _HEADER_READERS.get(version)
    if read_header is None:
        raise DataError(f"{where} uses .npy format {version}, not supported")
    try:
        shape, _, dtype = read_header(stream)
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile):
        raise  # the file or archive, not the header: reported by the caller
    except Exception as exc:  # numpy parses the header's text with ast and tokenize
        raise DataError(f"{where}: damaged .npy header ({type(exc).__name__}: {exc})") from None
    if dtype.hasobject:
        raise DataError(f"{where} holds Python objects, which would need unpickling; refused")
    if any(d < 0 for d in shape):  # numpy accepts them; the size below would then be wrong
        raise DataError(f"{where} claims an impossible shape {shape}")
    return shape, dtype


def _check_size(shape: tuple[int, ...], dtype: np.dtype, room: int, room_is: str, where: str):
    """Refuse a header announcing more than ``room`` bytes (described by ``room_is``) or more
    than MAX_PAYLOAD_BYTES."""
    announced = math.prod(shape) * dtype.itemsize
    if announced > MAX_PAYLOAD_BYTES:
        room, room_is = MAX_PAYLOAD_BYTES, f"the {MAX_PAYLOAD_BYTES} bytes an array may have"
    if announced > room:
        raise DataError(
            f"{where} claims shape {shape} of {dtype}, {announced} bytes, more than {room_is}"
        )


def _read_member(
    archive: np.lib.npyio.NpzFile,
    name: str,
    path: Path,
    check: Callable[[str, tuple[int, ...], np.dtype], None] | None,
) -> np.ndarray:
    """Check the compression and .npy header of one member, then load it."""
    info = archive.zip.getinfo(f"{name}.npy")
    where = f"{path}: array {name}"
    if info.flag_bits & 0x1:
        raise DataError(f"{where} is encrypted; refused")
    if info.compress_type not in _METHODS:
        method = _METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
        raise DataError(
            f"{where} is compressed with {method}; only stored and deflate members "
            "(what numpy's savez and savez_compressed write) are read"
        )
    with archive.zip.open(info) as stream:
        shape, dtype = _npy_header(stream, where)
        offset = stream.tell()
    expands_to = info.compress_size  # stored
    if info.compress_type == zipfile.ZIP_DEFLATED:
        expands_to = info.compress_size * _MAX_DEFLATE_RATIO + 1024
    if info.file_size <= expands_to:
        room, room_is = info.file_size - offset, "its archive member holds"
    else:
        room, room_is = expands_to - offset, f"its {info.compress_size} compressed bytes can hold"
    _check_size(shape, dtype, room, f"{room_is} ({room} bytes)", where)
    if check is not None:
        check(name, shape, dtype)
    return archive[name]
