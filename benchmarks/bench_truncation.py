"""The truncation trick's effect: one unconditional model evaluated at several psi.

Trains the ``dcgan`` preset (unconditional, normal noise) for ``--iters`` iterations
(``digitgan.train`` with ``train.iters`` set; default 3,000, a few minutes on one CPU core), or
takes an existing run or checkpoint with ``--run``, then scores 10,000 samples (noise seed 0)
with ``digitgan.evaluate(..., truncation=psi)`` at each ``--psi`` against the 10,000 test
digits: FID, precision, recall, density, coverage and the predicted classes' shares.

Usage: python benchmarks/bench_truncation.py [--iters 3000] [--run DIR] [--psi 1 0.9 0.8 0.7 0.5]
       [--threads 1] [--record]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import markdown_table, record

import digitgan

COLUMNS = [  # (metric key, header, format)
    ("fid", "FID (lower)", "{:.3f}"),
    ("precision", "precision", "{:.4f}"),
    ("recall", "recall", "{:.4f}"),
    ("density", "density", "{:.4f}"),
    ("coverage", "coverage", "{:.4f}"),
    ("class_share_min", "least class share", "{:.1%}"),
    ("class_share_max", "most class share", "{:.1%}"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=3000, help="training iterations (train.iters)")
    ap.add_argument("--run", help="evaluate this run or checkpoint instead of training one")
    ap.add_argument("--psi", type=float, nargs="+", default=[1.0, 0.9, 0.8, 0.7, 0.5])
    ap.add_argument("--n", type=int, default=10_000, help="samples per evaluation")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(args.run) if args.run else Path(tmp) / "dcgan"
        train_note = f"the run {source}"
        if not args.run:
            cfg = digitgan.preset("dcgan").replace(
                train__iters=args.iters, train__device="cpu", train__seed=0
            )
            t0 = time.perf_counter()
            digitgan.train(cfg, source, progress=False)
            train_s = time.perf_counter() - t0
            train_note = (
                f"the dcgan preset trained here for {args.iters:,} iterations "
                f"(`digitgan.train` with `train.iters={args.iters}`, seed 0, CPU) "
                f"in {train_s:.0f} s"
            )
            print(f"trained in {train_s:.0f} s", flush=True)
        gan = digitgan.load(source)
        rows, histograms = [], []
        for psi in args.psi:
            report = digitgan.evaluate(source, n=args.n, truncation=psi)
            m = report.metrics
            rows.append([f"{psi:g}", *(fmt.format(m[key]) for key, _, fmt in COLUMNS)])
            total = sum(report.histogram)
            shares = " ".join(f"{h / total:.0%}" for h in report.histogram)
            histograms.append([f"{psi:g}", shares])
            print(
                f"psi {psi:g}: " + ", ".join(f"{k} {m[k]:.4f}" for k, _, _ in COLUMNS), flush=True
            )
            print(f"  class shares {shares} ({report.seconds:.0f} s)", flush=True)

    table = markdown_table(["psi", *(header for _, header, _ in COLUMNS)], rows)
    names = " ".join(gan.class_names)
    shares = markdown_table(["psi", f"predicted class shares ({names})"], histograms)
    body = (
        f"Model: {train_note}; {gan.config.model.noise} noise, {gan.config.model.z_dim} "
        f"dimensions, EMA generator {'yes' if gan.ema else 'no'}. Each row: "
        f"`digitgan.evaluate(run, n={args.n}, truncation=psi)`, {args.n:,} samples (noise "
        f"seed 0) against the 10,000 test digits; torch threads: {torch.get_num_threads()}.\n\n"
        f"{table}\n\n{shares}"
    )
    print(body)
    if args.record:
        record("Truncation trick: dcgan preset at several psi", body)


if __name__ == "__main__":
    main()
