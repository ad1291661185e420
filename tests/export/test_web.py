"""digitgan export --web: ONNX Runtime Web fetched once from an npm registry (a stand-in on
127.0.0.1), checked against its pinned checksum and kept in the download cache; the page's
folder and the folders that are refused. The page itself is tested in a browser in
tests/serve/test_web_page.py."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import tarfile

import pytest

import digitgan
from digitgan import web
from digitgan.cli import main
from digitgan.errors import ConfigError, DataError
from digitgan.export import export
from digitgan.web import NpmPackage, runtime_files

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install '.[test]')")
pytestmark = pytest.mark.usefixtures("one_thread")

FILES = {  # what the page needs of the package, with stand-in contents
    "ort.wasm.min.js": b"/* the runtime's script */",
    "ort-wasm-simd-threaded.mjs": b"/* its loader */",
    "ort-wasm-simd-threaded.wasm": b"\0asm\1\0\0\0",
}


def tarball(files: dict[str, bytes]) -> bytes:
    """An npm package tarball (gzipped tar, everything under package/) holding ``files``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in {
            "package.json": b"{}",
            **{f"dist/{k}": v for k, v in files.items()},
        }.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def registry(make_mirror, monkeypatch, tmp_path):
    """A stand-in npm registry serving a small package pinned as the runtime, and a fresh
    download cache: (the pinned package, the tarball's path on the registry, the cache)."""
    data = tarball(FILES)
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    package = NpmPackage(
        "onnxruntime-web",
        "0.0.1-test",
        f"sha512-{digest}",
        len(data),
        tuple(f"dist/{k}" for k in FILES),
    )
    mirror = make_mirror()
    served = mirror.root / package.name / "-" / package.tarball
    served.parent.mkdir(parents=True)
    served.write_bytes(data)
    monkeypatch.setattr(web, "RUNTIME", package)
    monkeypatch.setenv(web.REGISTRY_ENV, mirror.url)
    cache = tmp_path / "cache"
    monkeypatch.setenv("DIGITGAN_DATA", str(cache))
    return package, served, cache


def test_the_runtime_is_downloaded_once_checked_and_kept(registry, monkeypatch, dead_url):
    package, served, cache = registry
    assert runtime_files() == FILES
    assert sorted(p.name for p in cache.iterdir()) == [package.tarball]  # and nothing else
    served.unlink()
    monkeypatch.setenv(web.REGISTRY_ENV, dead_url)  # offline: the cache serves
    assert runtime_files() == FILES


def test_a_download_that_does_not_match_its_checksum_is_refused_and_not_kept(registry):
    package, served, cache = registry
    served.write_bytes(tarball({**FILES, "ort.wasm.min.js": b"/* altered */"}))
    with pytest.raises(
        DataError, match=r"cannot download onnxruntime-web 0\.0\.1-test .*checksum sha512-"
    ) as e:
        runtime_files()
    assert "\n" not in str(e.value)
    assert list(cache.iterdir()) == []


def test_offline_without_the_runtime_is_one_line_that_says_what_to_do(
    registry, monkeypatch, dead_url
):
    package, served, cache = registry
    monkeypatch.setenv(web.REGISTRY_ENV, dead_url)
    with pytest.raises(DataError) as e:
        runtime_files()
    message = str(e.value)
    assert "\n" not in message and "does not exist" in message and dead_url in message
    command = f"npm pack onnxruntime-web@0.0.1-test --pack-destination {cache}"
    assert command in message
    # what it says to do works: the tarball put in the cache by hand is used
    shutil.copy(served, cache / package.tarball)
    assert runtime_files() == FILES
    # a damaged one is not, and is named as such
    (cache / package.tarball).write_bytes(served.read_bytes()[:-10])
    with pytest.raises(DataError, match="does not match its checksum"):
        runtime_files()


def test_a_damaged_cached_runtime_is_downloaded_again(registry):
    package, served, cache = registry
    cache.mkdir()
    (cache / package.tarball).write_bytes(b"partly downloaded")
    assert runtime_files() == FILES
    assert (cache / package.tarball).read_bytes() == served.read_bytes()


def test_a_tarball_without_the_files_is_refused(registry):
    package, served, _ = registry
    data = tarball({"ort.wasm.min.js": FILES["ort.wasm.min.js"]})
    served.write_bytes(data)
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    pinned = NpmPackage(package.name, package.version, f"sha512-{digest}", len(data), package.files)
    with pytest.raises(
        DataError, match="lacks package/dist/ort-wasm-simd-threaded.mjs, package/dist/ort-wasm"
    ):
        runtime_files(pinned)


@pytest.fixture(scope="module")
def run(tmp_path_factory, small_data, tiny):
    """A tiny trained seed model."""
    cfg = tiny("seed", train__iters=3, log__tb_every=0, log__sample_every=0)
    out = tmp_path_factory.mktemp("web") / "run"
    digitgan.train(cfg, out, dataset=small_data, progress=False)
    return out


@pytest.fixture
def where(tmp_path):
    """A folder for the exported folders (apart from the registry's and the cache)."""
    (tmp_path / "out").mkdir()
    return tmp_path / "out"


def test_export_writes_the_page_beside_the_model(registry, run, where, capsys):
    site = where / "site"
    assert main(["export", str(run), "--out", str(where / "model"), "--web", str(site)]) == 0
    assert f"python -m http.server --directory {site}" in capsys.readouterr().out
    assert sorted(p.name for p in where.iterdir()) == ["model", "site"]  # no leftovers
    model = where / "model"
    assert (model / "generator.onnx").is_file()  # --web implies --onnx
    assert sorted(p.name for p in site.iterdir()) == [
        "generator.onnx",
        "index.html",
        "model.json",
        "static",
    ]
    assert sorted(p.name for p in (site / "static").iterdir()) == sorted(
        ["app.js", "style.css", "web.js", *FILES]
    )
    for name, data in FILES.items():
        assert (site / "static" / name).read_bytes() == data
    assert (site / "generator.onnx").read_bytes() == (model / "generator.onnx").read_bytes()
    doc = json.loads((site / "model.json").read_text())
    assert doc == {"config": json.loads((model / "config.json").read_text()), "evaluation": None}
    html = (site / "index.html").read_text()
    scripts = [line.split('"')[1] for line in html.splitlines() if "<script" in line]
    assert scripts == ["static/ort.wasm.min.js", "static/web.js", "static/app.js"]
    assert "api.js" not in html


def test_the_page_holds_the_runs_saved_evaluation(registry, run, where):
    source = where / "run"
    shutil.copytree(run, source)
    metrics, floor = {"fid": 45.7, "is": 3.88}, {"fid": 0.285, "is": 9.8}
    (source / "eval.json").write_text(json.dumps({"metrics": metrics, "floor": floor}))
    export(source, where / "model", web=where / "site")
    evaluation = json.loads((where / "site" / "model.json").read_text())["evaluation"]
    assert evaluation["metrics"] == metrics and evaluation["floor"] == floor


def test_without_the_runtime_nothing_is_written(registry, run, where, monkeypatch, dead_url):
    monkeypatch.setenv(web.REGISTRY_ENV, dead_url)
    with pytest.raises(DataError, match="--web: cannot download onnxruntime-web"):
        export(run, where / "model", web=where / "site")
    assert sorted(p.name for p in where.iterdir()) == []


@pytest.mark.parametrize(
    "out, site", [("m", "m/site"), ("m", "m"), ("site/m", "site"), ("m", "site/../m/x")]
)
def test_the_page_and_the_model_need_folders_of_their_own(registry, run, where, out, site):
    (where / "site").mkdir()
    with pytest.raises(ConfigError, match="must be a folder apart from --out"):
        export(run, where / out, web=where / site)


def test_an_existing_page_is_replaced_only_with_force_and_only_if_exported(registry, run, where):
    model, site = where / "model", where / "site"
    export(run, model, web=site)
    with pytest.raises(ConfigError, match=f"--web {site}: exists and is not empty; use --force"):
        export(run, where / "model2", web=site)
    (site / "index.html").write_text("old")
    export(run, model, web=site, force=True)
    assert "static/web.js" in (site / "index.html").read_text()

    (site / "notes.txt").write_text("mine")
    with pytest.raises(
        ConfigError, match=r"not a web page folder digitgan exported \(it holds notes.txt\)"
    ):
        export(run, model, web=site, force=True)
    assert (site / "notes.txt").read_text() == "mine"
    mine = where / "mine"
    mine.mkdir()
    (mine / "index.html").write_text("my own page")
    with pytest.raises(ConfigError, match="not a web page folder digitgan exported"):
        export(run, model, web=mine, force=True)
    assert (mine / "index.html").read_text() == "my own page"
