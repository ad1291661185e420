"""Fixtures for the web server tests: a tiny trained run, a class-conditional stand-in model,
API clients, live servers on 127.0.0.1 and a headless Chromium."""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

import digitgan
from digitgan.sampling import Sampler
from digitgan.serve import create_app
from digitgan.serve.app import _listen, make_server

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, small_data) -> Path:
    """A run directory with a 3-iteration checkpoint of a 16-unit seed model."""
    cfg = digitgan.preset("seed").replace(
        train__iters=3,
        data__batch_size=16,
        model__mlp__g_hidden=[16],
        model__mlp__d_hidden=[16],
        log__tb_every=0,
        log__sample_every=0,
        train__device="cpu",
    )
    out = tmp_path_factory.mktemp("serve") / "run"
    digitgan.train(cfg, out, dataset=small_data, progress=False)
    return out


@pytest.fixture(scope="session")
def colour_run(tmp_path_factory, tiny) -> Path:
    """A few iterations of the stacked preset (colour images of three digits), shrunk, with
    its modes saved to eval.json as ``digitgan evaluate RUN --save`` writes them."""
    from digitgan.eval.evaluate import evaluate, save_evaluation

    small = {"data__stacked-mnist20k__train_size": 500, "data__stacked-mnist20k__test_size": 100}
    out = tmp_path_factory.mktemp("serve-colour") / "run"
    digitgan.train(tiny("stacked", **small), out, progress=False)
    save_evaluation(out, evaluate(out, n=100))
    return out


@pytest.fixture(scope="session")
def gan(tiny_run) -> Sampler:
    return digitgan.load(tiny_run)


@pytest.fixture(scope="session")
def cat_run(tmp_path_factory, tiny, small_data) -> Path:
    """A model with learnt categories: the clusters preset, shrunk to 4 clusters and a few
    iterations."""
    out = tmp_path_factory.mktemp("serve-categories") / "run"
    cfg = tiny("clusters", model__categories=4, model__z_dim=12)
    digitgan.train(cfg, out, dataset=small_data, progress=False)
    return out


@pytest.fixture(scope="session")
def cat_gan(cat_run) -> Sampler:
    return digitgan.load(cat_run)


@pytest.fixture(scope="session")
def cond_gan(cond_run) -> Sampler:
    """A real class-conditional model: a few iterations of a small cdcgan."""
    return digitgan.load(cond_run)


@contextmanager
def live_server(app, sock=None, **limits):
    """Serve ``app`` as ``digitgan serve`` does (``limits``: of ``make_server``) in a thread
    on ``sock`` (default: 127.0.0.1, a free port); yield its base URL."""
    sock = sock or _listen("127.0.0.1", 0)
    server = make_server(app, **limits)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def running():
    """:func:`live_server`, for test modules: ``with running(app, **limits) as url: ...``."""
    return live_server


@pytest.fixture(scope="session")
def cond_url(cond_gan):
    with live_server(create_app(cond_gan)) as url:
        yield url


@pytest.fixture(scope="session")
def cli_env() -> dict:
    """The environment for running this checkout's ``python -m digitgan``."""
    return {**os.environ, "PYTHONPATH": str(Path(digitgan.__file__).parents[1])}


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The next line of a child's stdout, or '' if it closes or ``timeout`` s pass first."""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        return proc.stdout.readline() if sel.select(timeout) else ""


def _spawn_serve(run: Path, env: dict) -> tuple[subprocess.Popen, str]:
    """Start ``python -m digitgan serve RUN --port 0``: the process and its first line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "digitgan", "serve", str(run), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return proc, _read_line(proc, timeout=60)


@pytest.fixture(scope="session")
def spawn_serve(cli_env):
    return lambda run: _spawn_serve(run, cli_env)


@pytest.fixture(scope="session")
def cli_server(tiny_run, cli_env):
    """``digitgan serve RUN --port 0`` in a child process: yields its base URL."""
    proc, line = _spawn_serve(tiny_run, cli_env)
    if "http://" not in line:
        proc.kill()
        pytest.fail(f"digitgan serve did not start: {line!r} {proc.stderr.read()}")
    url = line.split("http://", 1)[1].split("/", 1)[0]
    yield f"http://{url}"
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


def _chromium() -> str | None:
    return os.environ.get("DIGITGAN_CHROMIUM") or shutil.which("chromium")


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install '.[test]')"
    )
    path = _chromium()
    if not path:
        pytest.skip(
            "Chromium not found: apt-get install chromium (or set DIGITGAN_CHROMIUM to a "
            "Chromium binary) to run the browser tests"
        )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where the browser tests leave screenshots: test-artifacts/ at the repository root."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def page_errors() -> list[str]:
    """JavaScript and console errors of ``page``; a test that causes one on purpose removes it."""
    return []


@pytest.fixture
def page(browser, page_errors):
    """A fresh page (1280x900) that fails the test on any JavaScript error or console error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    problems = page_errors
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    pg.set_default_timeout(15_000)
    yield pg
    context.close()
    assert not problems, problems
