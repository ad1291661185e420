"""Files that users keep are written atomically: a reader sees the old file or the new one."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_TOKEN_BYTES = 6
_PARTIAL = re.compile(rf"\..+\.[0-9a-f]{{{2 * _TOKEN_BYTES}}}\.part")


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` on success (fsynced) and vanishes on failure.

    The temporary file lives in the same folder (so ``os.replace`` is atomic) and is named
    ``.NAME.<random>.part``; its ``name`` attribute is its path, so callers may re-read it
    (e.g. to verify a checksum) before the context exits. After the rename the folder is
    fsynced too, so the new name survives a power cut.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(_TOKEN_BYTES)}.part")
    try:
        with open(tmp, "xb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode())


def remove_partial_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of atomic writes into ``folder`` that never finished.

    A process killed in the middle of :func:`atomic_write` (SIGKILL, power cut) leaves its
    ``.NAME.<random>.part`` file behind; the real file is untouched. Call this only while no
    other process can be writing into ``folder`` (e.g. while holding its run's lock).
    """
    removed = []
    for p in Path(folder).glob(".*.part"):
        if _PARTIAL.fullmatch(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
