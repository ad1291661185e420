"""`digitgan serve` as a user runs it: a real server on 127.0.0.1, stopped with Ctrl-C."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPConnection

import numpy as np
import pytest
from PIL import Image

from digitgan.cli import main
from digitgan.serve.app import KEEP_ALIVE, MAX_CONNECTIONS, REQUEST_TIMEOUT

JSON = {"Content-Type": "application/json"}


def http(url: str, body: dict | None = None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data, JSON), timeout=30) as r:
        return r.read()


def test_serve_prints_its_address_and_answers_over_http(cli_server, gan):
    url = cli_server
    assert url.startswith("http://127.0.0.1:")  # loopback unless told otherwise
    info = json.loads(http(f"{url}/api/info"))
    assert info["step"] == 3 and info["checkpoint"].endswith("latest.safetensors")
    assert b"<title>digitgan</title>" in http(f"{url}/")

    def grid(seed):
        return np.asarray(Image.open(io.BytesIO(http(f"{url}/api/samples", {"seed": seed}))))

    with ThreadPoolExecutor(4) as pool:  # concurrent clients each get their own seed's grid
        grids = list(pool.map(grid, [0, 1, 0, 1, 2, 3]))
    assert np.array_equal(grids[0], grids[2]) and np.array_equal(grids[1], grids[3])
    assert not np.array_equal(grids[0], grids[1])


def _status_for_host(url: str, host: str) -> int:
    """The status of GET /api/info on the server at ``url``, sent with Host: ``host``."""
    address = url.removeprefix("http://")
    conn = HTTPConnection(*address.rsplit(":", 1), timeout=30)
    try:
        conn.request("GET", "/api/info", headers={"Host": host})
        return conn.getresponse().status
    finally:
        conn.close()


def test_serve_answers_to_loopback_names_only(cli_server):
    port = cli_server.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "[::1]", "localhost"):
        assert _status_for_host(cli_server, host) == 200, host
    for host in (f"evil.example:{port}", "evil.example", "testserver"):
        assert _status_for_host(cli_server, host) == 400, host


@pytest.mark.parametrize(
    "host, served, refused, note",
    [
        ("127.0.0.1", "localhost:8000", "evil.example", None),
        ("localhost", "[::1]:8000", "evil.example", None),
        ("0.0.0.0", "evil.example", None, "it answers to any Host name"),
    ],
)
def test_serve_passes_the_hosts_it_serves(
    tiny_run, monkeypatch, capsys, host, served, refused, note
):
    """``serve()`` builds the app for the real --host: loopback names and the host itself,
    or on a wildcard address any Host (and the startup lines say so)."""
    import uvicorn
    from starlette.testclient import TestClient

    from digitgan.serve import serve

    seen = {}

    class NotRun(uvicorn.Server):
        def run(self, sockets=None):
            seen["app"], seen["config"] = self.config.app, self.config

    monkeypatch.setattr(uvicorn, "Server", NotRun)
    serve(tiny_run, host=host, port=0)
    out = capsys.readouterr().out
    if note is None:
        assert "note:" not in out
    else:
        assert "reachable from other machines" in out and note in out, out
    config = seen["config"]  # with the bounds on slow and idle clients
    assert config.http.request_timeout == REQUEST_TIMEOUT
    assert config.timeout_keep_alive == KEEP_ALIVE
    assert config.limit_concurrency == MAX_CONNECTIONS
    with TestClient(seen["app"], base_url="http://x") as c:
        assert c.get("/api/info", headers={"host": served}).status_code == 200
        if refused:
            assert c.get("/api/info", headers={"host": refused}).status_code == 400


def test_ctrl_c_stops_the_server_cleanly(tiny_run, spawn_serve):
    proc, line = spawn_serve(tiny_run)
    assert line.startswith("serving ") and "(Ctrl-C to stop)" in line, line
    url = "http://" + line.split("http://", 1)[1].split("/", 1)[0]
    assert json.loads(http(f"{url}/api/info"))["step"] == 3  # up and serving
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.strip() == "stopped" and "Traceback" not in err


def test_serve_with_a_fifo_for_eval_json_logs_one_line_and_keeps_serving(
    tiny_run, spawn_serve, tmp_path
):
    import shutil

    run = shutil.copytree(tiny_run, tmp_path / "run")
    os.mkfifo(run / "eval.json")  # opened for reading, it would wait for a writer
    proc, line = spawn_serve(run)
    try:
        assert "http://" in line, (line, proc.stderr)
        url = "http://" + line.split("http://", 1)[1].split("/", 1)[0]
        with ThreadPoolExecutor(8) as pool:  # more requests than the server has threads
            infos = list(pool.map(lambda _: json.loads(http(f"{url}/api/info")), range(60)))
        assert all(i["metrics"] is None and i["step"] == 3 for i in infos)
        assert b"<title>digitgan</title>" in http(f"{url}/")
        assert http(f"{url}/api/samples", {"n": 4}).startswith(b"\x89PNG")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "eval.json: not a regular file" in lines[0], err
    assert "no scores are shown" in lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["{run}", "--port", "70000"], "--port 70000: must be from 0 to 65535"),
        (["{run}", "--port", "{busy}"], "--port {busy}: cannot listen there"),
        (["{run}", "--host", "no-such-host.invalid"], "--host no-such-host.invalid:"),
        (["/nonexistent-run"], "no such run directory or checkpoint"),
    ],
)
def test_serve_errors_are_one_line(tiny_run, capsys, args, message):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        assert main(["serve", *(a.format(run=tiny_run, busy=port) for a in args)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("digitgan: error: "), err
    assert message.format(busy=port) in err
