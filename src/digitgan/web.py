"""The static web page of an exported model (``digitgan export --web DIR``).

The page is ``digitgan serve``'s (the files of ``serve/static``: its HTML, style and
script), with the server's API replaced by ``web.js``, which runs ``generator.onnx`` in the
browser with ONNX Runtime Web and draws the noise of a seed exactly as PyTorch draws it. The
folder needs no server of its own: any static file host, or ``python -m http.server``,
serves it.

DIR/index.html              the page
DIR/model.json              what the page shows and needs: config.json's description of the
                            generator and the run's saved evaluation (or null)
DIR/generator.onnx          the generator (images in [0, 1])
DIR/static/app.js, style.css, web.js                    the page's script and look
DIR/static/ort.wasm.min.js, ort-wasm-simd-threaded.*    ONNX Runtime Web (:data:`RUNTIME`)

ONNX Runtime Web is the npm registry's ``onnxruntime-web`` at a pinned version. It is not
shipped with digitgan (its WebAssembly file alone is 15 MB): the first export with ``--web``
downloads the package's tarball into the download cache (``$DIGITGAN_DATA``, else
``~/.cache/digitgan``) and every export checks it against the pinned checksum before
copying the three files the page needs out of it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .data.datasets import default_data_dir
from .data.fetch import DownloadFailed, stream_url
from .errors import DataError
from .fileio import atomic_write, atomic_write_bytes, atomic_write_text
from .store.exported import ONNX, our_json

STATIC = Path(__file__).with_name("serve") / "static"
"""The page's files, shared with ``digitgan serve`` (data files; nothing is imported)."""
PAGE_FILES = ("app.js", "style.css", "web.js")
"""The files of :data:`STATIC` the static page uses (``api.js`` talks to the server)."""
INDEX = "index.html"
MODEL = "model.json"
SERVER_SCRIPT = '<script src="static/api.js" defer></script>'
"""The script tag of the served page that the static page replaces with its own scripts."""
REGISTRY_ENV = "DIGITGAN_NPM_REGISTRY"
DEFAULT_REGISTRY = "https://registry.npmjs.org"


@dataclass(frozen=True)
class NpmPackage:
    """A package of the npm registry at one version, pinned by its tarball's checksum (the
    registry's ``dist.integrity``, a base64 SHA-512) and size; ``files``: the paths inside
    it (under ``package/``) that are used."""

    name: str
    version: str
    integrity: str
    size: int
    files: tuple[str, ...]

    @property
    def tarball(self) -> str:
        """The tarball's file name, as ``npm pack`` writes it."""
        return f"{self.name}-{self.version}.tgz"

    def url(self, registry: str) -> str:
        return f"{registry.rstrip('/')}/{self.name}/-/{self.tarball}"


RUNTIME = NpmPackage(
    name="onnxruntime-web",
    version="1.31.1",
    integrity="sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw==",
    size=34_586_352,
    files=(
        "dist/ort.wasm.min.js",  # the runtime's script (WebAssembly backend only)
        "dist/ort-wasm-simd-threaded.mjs",  # the loader of its WebAssembly
        "dist/ort-wasm-simd-threaded.wasm",  # the runtime itself
    ),
)
"""ONNX Runtime Web, as the page uses it."""


def _integrity(path: Path) -> str:
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha512").digest()
    return "sha512-" + base64.b64encode(digest).decode()


def runtime_tarball(package: NpmPackage | None = None, cache: Path | None = None) -> Path:
    """The package's tarball in the download cache, downloaded first from the npm registry
    (``$DIGITGAN_NPM_REGISTRY``, default registry.npmjs.org) when the cache lacks it or
    holds a file that does not match the pinned checksum. A download is written to a
    temporary file and kept only when its checksum matches. Any failure is one DataError
    that says how to put the tarball there by hand. ``package``: :data:`RUNTIME` if None."""
    package = package or RUNTIME
    cache = default_data_dir() if cache is None else Path(cache)
    path = cache / package.tarball
    if path.is_file() and _integrity(path) == package.integrity:
        return path
    url = package.url(os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as out:
            for chunk in stream_url(url, package.size):
                out.write(chunk)
            out.flush()
            found = _integrity(Path(out.name))
            if found != package.integrity:
                raise DownloadFailed(f"checksum {found}, expected {package.integrity}")
    except DownloadFailed as e:
        raise DataError(
            f"--web: cannot download {package.name} {package.version} from {url} ({e}) and "
            f"{path} {'does not match its checksum' if path.exists() else 'does not exist'}; "
            f"where the npm registry is reachable, `npm pack {package.name}@{package.version} "
            f"--pack-destination {cache}` puts it there"
        ) from None
    except OSError as e:
        raise DataError(f"--web: cannot write {path}: {e.strerror or e}") from None
    return path


def runtime_files(package: NpmPackage | None = None, cache: Path | None = None) -> dict[str, bytes]:
    """{file name: content} of the package's ``files`` (default :data:`RUNTIME`), out of its
    checked tarball (see :func:`runtime_tarball`)."""
    package = package or RUNTIME
    path = runtime_tarball(package, cache)
    wanted = {f"package/{name}": Path(name).name for name in package.files}
    found = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    found[wanted[member.name]] = tar.extractfile(member).read()
    except (OSError, tarfile.TarError, EOFError) as e:
        raise DataError(f"--web: cannot read {path}: {e}") from None
    missing = [name for name in wanted if wanted[name] not in found]
    if missing:
        raise DataError(f"--web: {path} lacks {', '.join(missing)}")
    return found


def index_html() -> str:
    """The served page's HTML with the runtime and web.js in place of the server's script."""
    html = (STATIC / INDEX).read_text()
    if html.count(SERVER_SCRIPT) != 1:
        raise AssertionError(f"{STATIC / INDEX} does not load static/api.js once")
    scripts = [Path(RUNTIME.files[0]).name, "web.js"]
    tags = "\n  ".join(f'<script src="static/{name}" defer></script>' for name in scripts)
    return html.replace(SERVER_SCRIPT, tags)


def write_site(
    folder: Path, onnx: Path, config: dict, evaluation: dict | None, runtime: dict[str, bytes]
) -> None:
    """Write the page into the empty ``folder``: the page's files, a copy of the ONNX file
    ``onnx``, model.json (``config``: config.json's document; ``evaluation``: the run's saved
    one or None) and the runtime's files (from :func:`runtime_files`)."""
    (folder / "static").mkdir()
    page = {name: (STATIC / name).read_bytes() for name in PAGE_FILES}
    for name, data in (page | runtime).items():
        atomic_write_bytes(folder / "static" / name, data)
    atomic_write_bytes(folder / ONNX, onnx.read_bytes())
    doc = {"config": config, "evaluation": evaluation}
    atomic_write_text(folder / MODEL, json.dumps(doc, indent=2) + "\n")
    atomic_write_text(folder / INDEX, index_html())


def foreign_site_files(folder: Path) -> list[str]:
    """What in ``folder`` ``digitgan export --web`` did not write (empty for a page folder
    it wrote, which ``--force`` may replace); the whole folder when it lacks the page."""
    entries = sorted(folder.iterdir())
    kinds = {INDEX: Path.is_file, MODEL: Path.is_file, ONNX: Path.is_file, "static": Path.is_dir}
    odd = [p.name for p in entries if p.name not in kinds or p.is_symlink() or not kinds[p.name](p)]
    if odd:
        return odd
    if len(entries) != len(kinds) or not our_json(folder / MODEL, "config"):
        return [p.name for p in entries]
    return []
