"""Evaluation numbers: the real-data floor, the seed preset after training, evaluate's speed.

1. The floor: ``digitgan evaluate --real`` for each dataset with a shipped classifier (the
   real training split, 10,000 images, against the test split).
2. The seed preset trained for ``--iters`` iterations (default 10,000) with each of
   ``--seeds`` (default 0 1 2), then evaluated on 10,000 samples: median and range of
   every metric over the seeds.
3. The time ``evaluate`` takes for 10,000 samples on the CPU: the library call
   (generation included; median over the seeds) and one ``digitgan evaluate`` process
   (wall time, start-up and imports included).

Usage: python benchmarks/bench_eval.py [--seeds 0 1 2] [--iters 10000] [--runs DIR] [--record]

With ``--runs DIR`` the training runs are kept in DIR, and a run found there finished
is evaluated again rather than retrained.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import markdown_table, metric_rows, metric_value, record

import digitgan
from digitgan.eval.classifier import SHIPPED
from digitgan.eval.evaluate import evaluate, evaluate_real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iters", type=int, default=10_000)
    ap.add_argument("--runs", help="keep the runs in this folder (default: a temporary one)")
    ap.add_argument("--record", action="store_true", help="append the tables to RESULTS.md")
    args = ap.parse_args()

    floors = {}
    for name in SHIPPED:
        floors[name] = evaluate_real(name)
        print(floors[name].table(), flush=True)

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.runs or tmp)
        for seed in args.seeds:
            run = folder / f"seed-{seed}"
            latest = run / "checkpoints" / "latest.safetensors"
            if not (latest.is_file() and digitgan.load(latest).step == args.iters):
                cfg = digitgan.preset("seed").replace(
                    train__seed=seed, train__iters=args.iters, train__device="cpu"
                )
                t0 = time.perf_counter()
                digitgan.train(cfg, run, progress=False, force=True)
                print(f"seed {seed}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
            report = evaluate(run, n=10_000)
            print(report.table(), flush=True)
            runs.append(report)
        t0 = time.perf_counter()
        cli = subprocess.run(
            [sys.executable, "-m", "digitgan", "evaluate", str(folder / f"seed-{args.seeds[0]}")],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(digitgan.__file__).parents[1])},
        )
        cli_s = time.perf_counter() - t0
        if cli.returncode:
            sys.exit(cli.stderr)

    floor = floors["mnist20k"]
    rows = []
    for key, label, fmt in metric_rows(floor.metrics, *(r.metrics for r in runs)):
        vals = [metric_value(r.metrics, key) for r in runs]
        rows.append(
            [
                label,
                fmt.format(metric_value(floor.metrics, key)),
                fmt.format(statistics.median(vals)),
                f"{fmt.format(min(vals))} - {fmt.format(max(vals))}",
            ]
        )
    seeds = ", ".join(map(str, args.seeds))
    table = markdown_table(
        [
            "metric (10,000 samples vs the 10,000 test digits)",
            "real training digits (floor)",
            f"seed preset, {args.iters} it (median)",
            f"range over seeds {seeds}",
        ],
        rows,
    )
    other = [n for n in floors if n != "mnist20k"]
    floor_rows = [
        [label] + [fmt.format(metric_value(floors[n].metrics, key)) for n in other]
        for key, label, fmt in metric_rows(*(floors[n].metrics for n in other))
    ]
    floor_table = markdown_table(["metric", *(f"{n} floor" for n in other)], floor_rows)
    lib_s = statistics.median(r.seconds for r in runs)
    timing = (
        f"`evaluate` on 10,000 samples (library call, generation included): median "
        f"{lib_s:.1f} s over {len(runs)} calls; `digitgan evaluate RUN` as a process: "
        f"{cli_s:.1f} s wall (start-up and imports included); {torch.get_num_threads()} "
        "torch threads."
    )
    body = f"mnist20k:\n\n{table}\n\n" + (f"{floor_table}\n\n" if other else "") + timing
    print(body)
    if args.record:
        record(f"Evaluation: real-data floor and seed preset ({args.iters} iterations)", body)


if __name__ == "__main__":
    main()
