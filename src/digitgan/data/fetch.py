"""Checking registry files against their pinned checksums, and downloading them safely.

A download goes to a temporary file beside its destination, is capped at the size the
file can have, is checked against the registry's checksums, fsynced, and only then renamed
into place; anything that goes wrong leaves no file behind. Mirrors come from the
dataset's :class:`~digitgan.data.registry.DatasetEntry` and are tried in order.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from digitgan.data.registry import DataFile, DatasetEntry
from digitgan.errors import DataError
from digitgan.fileio import atomic_write
from digitgan.version import __version__

__all__ = ["TIMEOUT_S", "DownloadFailed", "FileCheck", "check_file", "download_file", "stream_url"]

log = logging.getLogger(__name__)

TIMEOUT_S = 30.0
"""Seconds to wait for a mirror to connect or to send the next block."""

_CHUNK = 1 << 20
_HASHES = {"md5": lambda: hashlib.md5(usedforsecurity=False), "sha256": hashlib.sha256}


@dataclass(frozen=True)
class FileCheck:
    """The outcome of checking one file: its checksum as pinned and as found, and a verdict."""

    path: Path
    expected: str  # e.g. "md5:f68b3c2d..." (several pinned checksums are joined with " or ")
    actual: str | None  # None when the file is missing
    status: Literal["ok", "mismatch", "missing"]


class DownloadFailed(Exception):
    """One mirror could not deliver a good file; the message says why."""


def check_file(path: Path, file: DataFile) -> FileCheck:
    """Check a file against every checksum the registry pins for it; any match is "ok"."""
    pinned = file.checksums()
    if not path.is_file():
        return FileCheck(path, _join(pinned), None, "missing")
    found = []
    for kind, expected in pinned:
        actual = _digest(path, kind, file.raw_size)
        if actual == expected:
            return FileCheck(path, f"{kind}:{expected}", f"{kind}:{actual}", "ok")
        found.append((kind, actual))
    return FileCheck(path, _join(pinned), _join(found, ", "), "mismatch")


def download_file(entry: DatasetEntry, file: DataFile, folder: Path) -> Path:
    """Download a dataset file into ``folder`` from the first mirror that serves it intact."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the data folder {folder}: {exc.strerror or exc}") from exc
    dest = folder / file.name
    failures = []
    for mirror in entry.mirrors:
        url = mirror.rstrip("/") + "/" + file.name
        log.info("downloading %s", url)
        try:
            _download(url, dest, file)
            return dest
        except DownloadFailed as exc:
            log.info("%s failed: %s", url, exc)
            failures.append(f"{url} ({exc})")
        except OSError as exc:  # writing here failed, not the mirror: no use trying others
            raise DataError(f"cannot write {dest}: {exc.strerror or exc}") from exc
    tried = "; ".join(failures) or "no mirrors are configured"
    raise DataError(
        f"cannot download {file.name} of dataset '{entry.name}': tried {tried}. Without a "
        f"network, use the bundled dataset mnist20k (e.g. --dataset mnist20k), or copy the "
        f"dataset's files into {folder} yourself"
    )


def _download(url: str, dest: Path, file: DataFile) -> None:
    """Fetch ``url`` into ``dest`` all-or-nothing, accepting it only if its checksum matches."""
    with atomic_write(dest) as out:
        for chunk in stream_url(url, file.max_download):
            out.write(chunk)
        out.flush()
        check = check_file(Path(out.name), file)
        if check.status != "ok":
            raise DownloadFailed(
                f"checksum mismatch: expected {check.expected}, got {check.actual}"
            )


def stream_url(url: str, limit: int) -> Iterator[bytes]:
    """Yield the body of ``url`` in chunks, failing if it is unreachable or exceeds ``limit``."""
    request = urllib.request.Request(url, headers={"User-Agent": f"digitgan/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            announced = response.headers.get("Content-Length", "")
            if announced.isdigit() and int(announced) > limit:
                raise DownloadFailed(
                    f"{announced} bytes announced, more than the {limit} bytes expected"
                )
            received = 0
            while chunk := response.read(_CHUNK):
                received += len(chunk)
                if received > limit:
                    raise DownloadFailed(f"more than the {limit} bytes expected")
                yield chunk
    except urllib.error.HTTPError as exc:
        raise DownloadFailed(f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DownloadFailed(str(exc.reason)) from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise DownloadFailed(f"{type(exc).__name__}: {exc}") from exc


def _digest(path: Path, kind: str, raw_size: int) -> str:
    """The hex digest of ``kind`` ("md5", "sha256" or "sha256-gunzip") for the file at ``path``."""
    try:
        if kind != "sha256-gunzip":
            with open(path, "rb") as stream:
                return hashlib.file_digest(stream, _HASHES[kind]).hexdigest()
        digest = hashlib.sha256()
        size = 0
        with gzip.open(path, "rb") as stream:
            # Read at most one byte past the expected size: a gzip bomb costs nothing.
            while size <= raw_size and (chunk := stream.read(min(_CHUNK, raw_size + 1 - size))):
                digest.update(chunk)
                size += len(chunk)
        return digest.hexdigest() if size <= raw_size else f"(more than {raw_size} bytes)"
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        return f"(corrupt gzip: {exc})"
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _join(checksums: list[tuple[str, str]], separator: str = " or ") -> str:
    """Render (kind, hex) pairs as "kind:hex or kind:hex"."""
    return separator.join(f"{kind}:{value}" for kind, value in checksums)
