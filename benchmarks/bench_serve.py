"""Latency and throughput of ``digitgan serve``'s API over real HTTP on 127.0.0.1.

A uvicorn server runs the app in this process (in a thread) for the seed-size model (a
run directory given with --run, else a 1-iteration seed run made here: speed does not
depend on training). The table shows, per request kind, the median and 90th-percentile
latency of sequential requests, and the requests per second that 8 concurrent clients get.

Usage: python benchmarks/bench_serve.py [--run DIR] [--requests 40] [--record]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from common import markdown_table, record

import digitgan
from digitgan.serve import create_app
from digitgan.serve.app import _listen, make_server

CASES = [
    ("GET /api/info", "/api/info", None),
    ("samples n=16 png", "/api/samples", {"n": 16, "scale": 4}),
    ("samples n=256 png", "/api/samples", {"n": 256}),
    ("samples n=256 json", "/api/samples", {"n": 256, "format": "json"}),
    ("interpolate 24 json", "/api/interpolate", {"steps": 24, "format": "json"}),
]
CLIENTS = 8


def ask(url: str, body: dict | None) -> float:
    data = None if body is None else json.dumps(body).encode()
    t0 = time.perf_counter()
    headers = {"Content-Type": "application/json"}
    with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=60) as r:
        r.read()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", help="run directory or checkpoint (default: a fresh seed run)")
    ap.add_argument("--requests", type=int, default=40, help="requests per case and mode")
    ap.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            cfg = digitgan.preset("seed").replace(
                train__iters=1, train__device="cpu", log__tb_every=0, log__sample_every=0
            )
            run = digitgan.train(cfg, f"{tmp}/run", progress=False).run_dir
        gan = digitgan.load(run)
        sock = _listen("127.0.0.1", 0)
        server = make_server(create_app(gan))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        rows = []
        for name, path, body in CASES:
            url = base + path
            for _ in range(3):  # warm-up
                ask(url, body)
            times = sorted(ask(url, body) for _ in range(args.requests))
            t0 = time.perf_counter()
            with ThreadPoolExecutor(CLIENTS) as pool:
                list(pool.map(ask, [url] * args.requests, [body] * args.requests))
            rate = args.requests / (time.perf_counter() - t0)
            p90 = times[int(0.9 * (len(times) - 1))]
            rows.append(
                [name, f"{statistics.median(times) * 1e3:.1f}", f"{p90 * 1e3:.1f}", f"{rate:.0f}"]
            )
            print(rows[-1])
        server.should_exit = True
        thread.join()
        sock.close()

    table = markdown_table(
        ["request", "median ms", "p90 ms", f"requests/s, {CLIENTS} clients"], rows
    )
    print(table)
    if args.record:
        record(
            "digitgan serve API latency",
            f"{gan.config.preset} preset model, {args.requests} requests per row, uvicorn in "
            f"the same process, clients over loopback HTTP.\n\n{table}",
        )


if __name__ == "__main__":
    main()
