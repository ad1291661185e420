"""Reading and writing files safely.

Files that users keep are written atomically: a reader sees the old file or the new one.
Files digitgan reads are read with a bound: only regular files (a FIFO or a device could block
or never end), at most a stated number of bytes, and a failure is one line naming the file.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import DigitganError

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


def is_partial_file(path: Path) -> bool:
    """Whether ``path`` is the temporary file of an atomic write that never finished."""
    return bool(_PARTIAL.fullmatch(path.name)) and path.is_file()


def remove_partial_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of atomic writes into ``folder`` that never finished.

    A process killed in the middle of :func:`atomic_write` (SIGKILL, power cut) leaves its
    ``.NAME.<random>.part`` file behind; the real file is untouched. Call this only while no
    other process can be writing into ``folder`` (e.g. while holding its run's lock).
    """
    removed = []
    for p in Path(folder).glob(".*.part"):
        if is_partial_file(p):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


MiB = 1 << 20


def memory_limit() -> int | None:
    """The memory this process can have at most, in bytes (None if unknown): the machine's
    RAM, or the process's address-space limit (RLIMIT_AS) if that is lower."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    try:
        import resource  # (POSIX only)
    except ImportError:
        return ram
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return min(ram, soft) if soft > 0 else ram


MAX_METRICS_BYTES = 256 * MiB
"""The largest metrics.jsonl read (to resume or to plot a run): 256 MiB, about a million
logged steps."""
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # so that opening a FIFO does not wait for a writer


def open_regular(
    path: str | os.PathLike, what: str = "", error: type[DigitganError] = DigitganError
) -> BinaryIO:
    """Regular file ``path``, opened for binary reading. Anything else is ``error`` with one
    line naming ``what`` the file is (if given) and the file: a folder, a FIFO, a device,
    a file that cannot be opened, a name with a NUL character. A FIFO is not waited on: it
    is opened without blocking, then refused. A missing file raises FileNotFoundError, for
    the caller to name."""
    path = Path(path)
    where = f"{what} {path}" if what else str(path)
    try:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise error(f"{where}: is a folder, not a file") from None
    except OSError as e:
        raise error(f"{where}: cannot read it: {e.strerror or e}") from None
    except ValueError:  # what the system calls raise for a NUL in a path
        raise error(f"{where}: not a file name (it holds a NUL character)") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "is a folder, not a file" if stat.S_ISDIR(mode) else "not a regular file"
        raise error(f"{where}: {kind}")
    if _NONBLOCK:
        os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_bounded(
    path: str | os.PathLike, limit: int, what: str, error: type[DigitganError] = DigitganError
) -> bytes:
    """The bytes of regular file ``path``, at most ``limit`` of them; otherwise ``error`` with
    one line naming ``what`` the file is, the file, and the reason (missing, not a regular
    file, too large, unreadable)."""
    path = Path(path)
    try:
        with open_regular(path, what, error) as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise error(f"{what} {path}: {size:,} bytes, more than the {limit:,} allowed")
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise error(f"{what} {path}: no such file") from None
    except OSError as e:
        raise error(f"{what} {path}: cannot read it: {e.strerror or e}") from None
    if len(data) > limit:  # it grew while being read
        raise error(f"{what} {path}: more than the {limit:,} bytes allowed")
    return data


def read_text_bounded(
    path: str | os.PathLike, limit: int, what: str, error: type[DigitganError] = DigitganError
) -> str:
    """:func:`read_bounded`, decoded as UTF-8 (a file that is not is ``error``)."""
    try:
        return read_bounded(path, limit, what, error).decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} {path}: not UTF-8 text (byte {e.start})") from None


def read_jsonl(
    path: str | os.PathLike, limit: int, what: str, error: type[DigitganError] = DigitganError
) -> list[dict]:
    """The JSON objects of a JSON-lines file written by digitgan (``metrics.jsonl``), at most
    ``limit`` bytes (else ``error``, as in :func:`read_bounded`). Lines that are not a JSON
    object (cut short by a crash, or damaged, not UTF-8 included) are skipped; a missing file
    has none."""
    if not Path(path).exists():
        return []
    records = []
    for line in read_bounded(path, limit, what, error).splitlines():
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
