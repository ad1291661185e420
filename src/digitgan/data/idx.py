"""Strict reader and writer for the IDX format that MNIST and its kin ship in.

An IDX file is a 4-byte magic number -- two zero bytes, a type code, the number of
dimensions -- then one big-endian uint32 per dimension, then the items in C order,
big-endian. Type codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32,
0x0E float64. A name ending in ``.gz`` means the whole file is gzip-compressed.

The reader trusts nothing: it checks the magic number, the type code, the number of
dimensions (1 to 4) and that exactly the announced payload follows, and it reads in
chunks so that a header claiming a huge size costs no more memory than the data really
there. Only regular files are read (a FIFO or a device is refused without waiting), and a
caller may check the announced shape and type before the data is read (datasets refuse
images larger than they take). Every problem with a file is reported as
:class:`~digitgan.errors.DataError`.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from digitgan.errors import DataError
from digitgan.fileio import atomic_write, open_regular

__all__ = ["MAX_DIMS", "MAX_PAYLOAD_BYTES", "read_idx", "write_idx"]

MAX_DIMS = 4
"""The most dimensions an IDX file may have here (MNIST-like data needs at most 3)."""

MAX_PAYLOAD_BYTES = 2**31
"""Refuse a file whose header announces more data than this (2 GiB): corrupt or hostile."""

_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.str[1:]: code for code, dtype in _TYPES.items()}  # "u1" -> 0x08, "i2" -> 0x0B
_TYPE_NAMES = ", ".join(f"0x{code:02X} {dtype.name}" for code, dtype in _TYPES.items())
_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(
    path: str | os.PathLike[str],
    check: Callable[[tuple[int, ...], np.dtype], None] | None = None,
) -> np.ndarray:
    """Read an IDX file (gzip-compressed if its name ends in .gz) into a native-endian array.

    ``check(shape, dtype)``, if given, is called with the shape and (native) dtype the header
    announces, before the data is read; it raises DataError to refuse the file.
    """
    path = Path(path)
    try:
        with open_regular(path, error=DataError) as raw:
            if path.suffix != ".gz":
                return _read_stream(raw, path, check)
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _read_stream(stream, path, check)
    except FileNotFoundError:
        raise DataError(f"not found: {path}") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt gzip data ({exc})") from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write an array as an IDX file (gzip-compressed if the name ends in .gz), atomically."""
    path = Path(path)
    array = np.asarray(array)
    code = _CODES.get(array.dtype.str[1:])
    if code is None:
        raise DataError(
            f"cannot write {path}: IDX has no type for {array.dtype}; "
            f"convert the array to one of: {_TYPE_NAMES}"
        )
    if not 1 <= array.ndim <= MAX_DIMS:
        raise DataError(
            f"cannot write {path}: IDX needs 1 to {MAX_DIMS} dimensions, not {array.ndim}"
        )
    if max(array.shape) >= 2**32 or array.nbytes > MAX_PAYLOAD_BYTES:
        raise DataError(f"cannot write {path}: array of shape {array.shape} is too large for IDX")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = np.ascontiguousarray(array, dtype=_TYPES[code]).tobytes()
    try:
        with atomic_write(path) as out:
            if path.suffix == ".gz":
                # mtime=0 and the final name keep the output reproducible (no time stamp).
                with gzip.GzipFile(filename=path.name, mode="wb", fileobj=out, mtime=0) as gz:
                    gz.write(header + payload)
            else:
                out.write(header + payload)
    except OSError as exc:
        raise DataError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _read_stream(
    stream: BinaryIO, path: Path, check: Callable[[tuple[int, ...], np.dtype], None] | None
) -> np.ndarray:
    """Parse and check one IDX stream; ``path`` only names the file in error messages."""
    magic = _read_capped(stream, 4)
    if len(magic) < 4:
        raise DataError(
            f"{path}: not an IDX file (only {len(magic)} bytes, too short for a header)"
        )
    if magic[:2] != b"\0\0":
        hint = "; it looks gzip-compressed: name it *.gz" if magic[:2] == _GZIP_MAGIC else ""
        raise DataError(
            f"{path}: not an IDX file (magic number {magic.hex()} "
            f"does not start with two zero bytes{hint})"
        )
    code, ndim = magic[2], magic[3]
    if code not in _TYPES:
        raise DataError(f"{path}: unknown IDX type code 0x{code:02X} (known: {_TYPE_NAMES})")
    if not 1 <= ndim <= MAX_DIMS:
        raise DataError(f"{path}: IDX header gives {ndim} dimensions; expected 1 to {MAX_DIMS}")
    dims = _read_capped(stream, 4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(f"{path}: truncated header: {ndim} dimensions announced, file ends first")
    shape = struct.unpack(f">{ndim}I", dims)
    dtype = _TYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    # zero dimensions left out: numpy refuses even an empty shape like (0, 3e9, 3e9) as too big
    nominal = math.prod(d for d in shape if d) * dtype.itemsize
    if nominal > MAX_PAYLOAD_BYTES:
        raise DataError(
            f"{path}: IDX header claims shape {shape} of {dtype.name}, {nominal} bytes, more "
            f"than the {MAX_PAYLOAD_BYTES} allowed; the file is corrupt or not an IDX file"
        )
    if check is not None:
        check(shape, dtype.newbyteorder("="))
    payload = _read_capped(stream, expected + 1)
    if len(payload) < expected:
        raise DataError(
            f"{path}: truncated: expected {expected} bytes of data, found {len(payload)}"
        )
    if len(payload) > expected:
        raise DataError(
            f"{path}: trailing bytes after the {expected} bytes of data that the header announces"
        )
    array = np.frombuffer(payload, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _read_capped(stream: BinaryIO, limit: int) -> bytearray:
    """Read up to ``limit`` bytes in chunks, so memory follows the data actually present."""
    buffer = bytearray()
    while len(buffer) < limit:
        chunk = stream.read(min(_CHUNK, limit - len(buffer)))
        if not chunk:
            break
        buffer += chunk
    return buffer
