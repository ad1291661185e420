"""The time it takes to find a drawing in a model (``Sampler.project``, ``digitgan project``,
the page's *Find it*), per image, with the default search (4 restarts per class, 300 steps).

For each preset (default seed and dcgan) a run is trained here for --iters iterations at the
preset's full model size (speed does not depend on training; the distances do), or a run is
given with --run PRESET=DIR. Each of the first --n test digits of the run's dataset, digits
the model never saw, is then found one at a time, as the server finds one drawing per
request: the table shows the median seconds per image (and the range) of the search alone
and of the whole of ``find_drawing`` (the search, the three nearest training digits and a
10-frame walk), the optimiser steps per second, and, for context, the median distance of the
found digits from their targets beside that of the nearest of 64 random samples.

Usage: python benchmarks/bench_project.py [--presets seed,dcgan] [--iters 200] [--n 10]
       [--restarts 4] [--steps 300] [--threads 2] [--run PRESET=DIR ...] [--record]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from common import add_preset_run_options, markdown_table, preset_runs, record

import digitgan
from digitgan.data import load_dataset
from digitgan.projection import find_drawing, training_digits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_preset_run_options(ap, iters=200)
    ap.add_argument("--n", type=int, default=10, help="test digits found, one at a time")
    ap.add_argument("--restarts", type=int, default=4, help="restarts per class (default 4)")
    ap.add_argument("--steps", type=int, default=300, help="optimiser steps (default 300)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in preset_runs(args, tmp):
            gan = digitgan.load(run)
            train = training_digits(gan)
            spec = gan.meta.get("dataset") or gan.config.data.dataset
            test = load_dataset(spec, gan.config.data.data_dir or None).test
            targets = torch.from_numpy(test.images[: args.n]).float() / 255
            options = {"restarts": args.restarts, "steps": args.steps}
            find_drawing(gan, targets[0], train, steps=5)  # warm-up
            search, whole, found = [], [], []
            for i, target in enumerate(targets):
                t0 = time.perf_counter()
                result = find_drawing(gan, target, train, seed=i, **options)
                whole.append(time.perf_counter() - t0)
                search.append(result.projection.seconds)
                found.append(float(result.projection.distance[0]))
            randoms = gan.generate(64, seed=12345)
            nearest = (randoms[None] - targets[:, None]).square().flatten(2).mean(2).sqrt()
            classes = max(gan.num_classes, 1)
            rows.append(
                [
                    name,
                    f"{gan.step:,}",
                    f"{classes} x {args.restarts} x {args.steps}",
                    f"{statistics.median(search):.2f} ({min(search):.2f}-{max(search):.2f})",
                    f"{statistics.median(whole):.2f}",
                    f"{args.steps / statistics.median(search):.0f}",
                    f"{statistics.median(found):.3f}",
                    f"{float(nearest.min(dim=1).values.median()):.3f}",
                ]
            )
            print(" | ".join(rows[-1]), flush=True)

    table = markdown_table(
        [
            "preset",
            "iterations",
            "classes x restarts x steps",
            "search, s per image (range)",
            "whole find, s per image",
            "steps per s",
            "distance found (median)",
            "nearest of 64 random samples (median)",
        ],
        rows,
    )
    body = (
        f"Each row: the first {args.n} test digits of the run's dataset found one at a time "
        f"(`digitgan.projection.find_drawing`, {args.restarts} restarts per class, "
        f"{args.steps} steps, no time limit) with {torch.get_num_threads()} torch threads; "
        "distances are root mean squared pixel differences in [0, 1].\n\n" + table
    )
    print(body)
    if args.record:
        record("Projection: time to find a drawing in a model", body)


if __name__ == "__main__":
    main()
