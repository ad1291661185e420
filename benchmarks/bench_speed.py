"""Speed of the seed preset against a plain eager PyTorch loop of the same model.

Both loops run in this process, alternating in rounds so that machine noise hits
both alike; the table shows iterations per second (median over rounds) and the
ratio. Three things are timed:

- ``plain``: the textbook eager loop (nn.Sequential MLPs, BCEWithLogits, two Adams,
  one D step then one G step on fresh noise, random batches from a float tensor);
- ``digitgan step``: the step alone, the inner loop of ``digitgan train``, with the dense
  kernel (the default, training/dense.py) and with the generic step
  (``train.fast_step = false``);
- ``digitgan train``: the whole ``digitgan.train`` call with its normal outputs (grids,
  TensorBoard with histograms, checkpoints, metrics), start-up included;
- with ``--baseline REV``: the same ``digitgan.train`` call of this tree and of git revision
  REV (checked out into a temporary worktree), each in a fresh process per round, timed
  inside the call as above: a before/after comparison in one run.

Usage: python benchmarks/bench_speed.py [--iters 1000] [--rounds 3] [--baseline REV] [--record]
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
from common import markdown_table, record
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import digitgan
from digitgan.data import load_dataset
from digitgan.training.loop import make_step
from digitgan.training.step import read_scalars
from digitgan.training.trainer import Trainer


class PlainLoop:
    """The eager loop a PyTorch user would write for the seed article."""

    def __init__(self, images: torch.Tensor):
        self.images = images
        self.G = nn.Sequential(nn.Linear(100, 128), nn.ReLU(), nn.Linear(128, 784), nn.Sigmoid())
        self.D = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 1))
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=1e-3)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=1e-3)
        self.bce = nn.BCEWithLogitsLoss()
        self.ones, self.zeros = torch.ones(128, 1), torch.zeros(128, 1)

    def step(self) -> None:
        G, D, bce = self.G, self.D, self.bce
        x = self.images[torch.randint(0, self.images.shape[0], (128,))]
        z = torch.rand(128, 100) * 2 - 1
        d_loss = bce(D(x), self.ones) + bce(D(G(z).detach()), self.zeros)
        self.opt_d.zero_grad()
        d_loss.backward()
        self.opt_d.step()
        z = torch.rand(128, 100) * 2 - 1
        g_loss = bce(D(G(z)), self.ones)
        self.opt_g.zero_grad()
        g_loss.backward()
        self.opt_g.step()


def timed(step, iters: int) -> float:
    """Seconds for ``iters`` calls of ``step``."""
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return time.perf_counter() - t0


def seed_step(dataset, fast: bool = True):
    """The step ``digitgan train`` runs for the seed preset (or the generic one)."""
    cfg = digitgan.preset("seed").replace(train__device="cpu", train__fast_step=fast)
    return make_step(Trainer(cfg, dataset))


def digitgan_steps(dataset, iters: int, fast: bool = True) -> float:
    step = seed_step(dataset, fast)
    t0 = time.perf_counter()
    for _ in range(iters):
        result = step()
    read_scalars(result, step.trainer.dist)  # the last step's results, as the loop reads them
    return time.perf_counter() - t0


def digitgan_train(dataset, iters: int) -> float:
    """The whole train call with the seed preset's outputs, for ``iters`` iterations."""
    cfg = digitgan.preset("seed").replace(train__iters=iters, train__device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        digitgan.train(cfg, f"{tmp}/run", dataset=dataset, progress=False)
        return time.perf_counter() - t0


_TRAIN_CALL = """
import sys, tempfile, time
import digitgan
from digitgan.data import load_dataset
dataset = load_dataset("mnist20k")
cfg = digitgan.preset("seed").replace(train__iters=int(sys.argv[1]), train__device="cpu")
with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    digitgan.train(cfg, tmp + "/run", dataset=dataset, progress=False)
    print("seconds", time.perf_counter() - t0)
"""


def train_in_process_of(src: Path, iters: int) -> float:
    """Seconds of the seed preset's ``digitgan.train`` call with the package in ``src``, in a
    fresh Python process (its start-up and imports not counted)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run(
        [sys.executable, "-c", _TRAIN_CALL, str(iters)],
        env=env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.split("seconds")[-1])


def worktree(rev: str, into: Path) -> Path:
    """A checkout of git revision ``rev`` in ``into``; its ``src`` folder."""
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "--detach", str(into), rev],
        check=True,
        capture_output=True,
    )
    return into / "src"


def flops_per_iteration(step) -> int:
    """Floating-point operations of one call of ``step``, as torch's FLOP counter counts
    them (matrix products: 2 per multiply-add; elementwise work is not counted)."""
    step()  # optimiser state created outside the count
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def matmul_rate(n: int = 2048, reps: int = 10) -> float:
    """This machine's float32 matrix-multiply rate (FLOP/s, best of ``reps`` n x n products
    with torch's threads): the hardware's ceiling for this work."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(timed(lambda: a @ b, 1) for _ in range(reps))
    return 2 * n**3 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=1000, help="iterations per timed loop")
    ap.add_argument(
        "--train-iters", type=int, default=2000, help="iterations of the whole train call"
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--baseline",
        metavar="REV",
        help="also time the train call of git revision REV against this tree's, alternating",
    )
    ap.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    args = ap.parse_args()

    dataset = load_dataset("mnist20k")
    flat = torch.from_numpy(dataset.train.images).float().div(255).flatten(1)
    plain_flops = flops_per_iteration(PlainLoop(flat).step)
    step_flops = flops_per_iteration(seed_step(dataset))
    # name: (iterations, seconds for them, FLOP per iteration)
    runs = {
        "plain eager loop": (
            args.iters,
            lambda: timed(PlainLoop(flat).step, args.iters),
            plain_flops,
        ),
        "digitgan step (dense kernel, default)": (
            args.iters,
            lambda: digitgan_steps(dataset, args.iters),
            step_flops,
        ),
        "digitgan step (generic)": (
            args.iters,
            lambda: digitgan_steps(dataset, args.iters, fast=False),
            flops_per_iteration(seed_step(dataset, fast=False)),
        ),
        "digitgan train (all outputs)": (
            args.train_iters,
            lambda: digitgan_train(dataset, args.train_iters),
            step_flops,
        ),
    }
    base_dir = tempfile.TemporaryDirectory()
    if args.baseline:
        here = Path(digitgan.__file__).resolve().parents[1]
        old = worktree(args.baseline, Path(base_dir.name) / "baseline")
        for name, src in (("this tree", here), (args.baseline, old)):
            runs[f"digitgan train, own process ({name})"] = (
                args.train_iters,
                lambda src=src: train_in_process_of(src, args.train_iters),
                step_flops,
            )
    timed(PlainLoop(flat).step, 50)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, (_, fn, _) in runs.items():
            times[name].append(fn())
    if args.baseline:
        repo = Path(__file__).resolve().parents[1]
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", old.parent])
    base_dir.cleanup()
    peak = matmul_rate()
    rates = {name: sorted(runs[name][0] / t for t in ts) for name, ts in times.items()}
    base = statistics.median(rates["plain eager loop"])
    rows = []
    for name, r in rates.items():
        it_s, flop = statistics.median(r), runs[name][2]
        rows.append(
            [
                name,
                f"{it_s:.1f}",
                f"{r[0]:.1f}-{r[-1]:.1f}",
                f"{it_s / base:.2f}",
                f"{flop / 1e9:.3f}",
                f"{it_s * flop / 1e9:.1f}",
                f"{it_s * flop / peak:.0%}",
            ]
        )
    table = markdown_table(
        [
            "loop (seed preset, batch 128)",
            "it/s (median)",
            "it/s (range)",
            "ratio to plain",
            "GFLOP/it",
            "GFLOP/s",
            "of matmul rate",
        ],
        rows,
    )
    notes = (
        (f"Baseline: git revision {args.baseline}. " if args.baseline else "")
        + f"Matrix-multiply rate of this machine: {peak / 1e9:.0f} GFLOP/s (best of 10 float32 "
        f"2048x2048 products, {torch.get_num_threads()} threads). FLOP per iteration counted by "
        "torch.utils.flop_counter (matrix products only). Timed loops: "
        f"{args.iters} iterations; the train call: {args.train_iters} iterations, start-up, "
        "grids, TensorBoard (scalars, histograms, graph) and checkpoints included; medians "
        f"over {args.rounds} rounds, loops interleaved."
    )
    print(table + "\n\n" + notes)
    if args.record:
        record(
            f"Seed preset speed, {args.iters} iterations x {args.rounds} rounds",
            table + "\n\n" + notes,
        )


if __name__ == "__main__":
    main()
