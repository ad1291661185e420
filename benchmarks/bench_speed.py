"""Speed of the seed preset against a plain eager PyTorch loop of the same model.

Both loops run in this process, alternating in rounds so that machine noise hits
both alike; the table shows iterations per second (median over rounds) and the
ratio. Three things are timed:

- ``plain``: the textbook eager loop (nn.Sequential MLPs, BCEWithLogits, two Adams,
  one D step then one G step on fresh noise, random batches from a float tensor);
- ``digitgan step``: ``GANTrainer.step()`` alone, the inner loop of ``digitgan train``,
  with the hand-written MLP step (the default, training/fast_mlp.py) and with the generic
  autograd step (``train.fast_step = false``);
- ``digitgan train``: the whole ``digitgan.train`` call with its normal outputs (grids,
  TensorBoard with histograms, checkpoints, metrics), start-up included.

Usage: python benchmarks/bench_speed.py [--iters 1000] [--rounds 3] [--record]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from common import markdown_table, record
from torch import nn

import digitgan
from digitgan.data import load_dataset
from digitgan.training.loop import GANTrainer


def plain_loop(images: torch.Tensor, iters: int) -> float:
    """The eager loop a PyTorch user would write for the seed article; returns seconds."""
    G = nn.Sequential(nn.Linear(100, 128), nn.ReLU(), nn.Linear(128, 784), nn.Sigmoid())
    D = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 1))
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3)
    bce = nn.BCEWithLogitsLoss()
    ones, zeros = torch.ones(128, 1), torch.zeros(128, 1)
    t0 = time.perf_counter()
    for _ in range(iters):
        x = images[torch.randint(0, images.shape[0], (128,))]
        z = torch.rand(128, 100) * 2 - 1
        d_loss = bce(D(x), ones) + bce(D(G(z).detach()), zeros)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        z = torch.rand(128, 100) * 2 - 1
        g_loss = bce(D(G(z)), ones)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    return time.perf_counter() - t0


def digitgan_steps(dataset, iters: int, fast: bool = True) -> float:
    cfg = digitgan.preset("seed").replace(train__device="cpu", train__fast_step=fast)
    trainer = GANTrainer(cfg, dataset)
    t0 = time.perf_counter()
    for _ in range(iters):
        trainer.step()
    trainer.stats()  # wait for the last step's results
    return time.perf_counter() - t0


def digitgan_train(dataset, iters: int) -> float:
    """The whole train call with the seed preset's outputs, scaled to ``iters`` iterations."""
    cfg = digitgan.preset("seed").replace(train__iters=iters, train__device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        digitgan.train(cfg, f"{tmp}/run", dataset=dataset, progress=False)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    args = ap.parse_args()

    dataset = load_dataset("mnist20k")
    flat = torch.from_numpy(dataset.train.images).float().div(255).flatten(1)
    runs = {
        "plain eager loop": lambda: plain_loop(flat, args.iters),
        "digitgan step (hand-written, default)": lambda: digitgan_steps(dataset, args.iters),
        "digitgan step (autograd)": lambda: digitgan_steps(dataset, args.iters, fast=False),
        "digitgan train (all outputs)": lambda: digitgan_train(dataset, args.iters),
    }
    plain_loop(flat, 50)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            times[name].append(fn())
    base = statistics.median(times["plain eager loop"])
    rows = []
    for name, ts in times.items():
        t = statistics.median(ts)
        rows.append(
            [
                name,
                f"{args.iters / t:.1f}",
                f"{min(args.iters / x for x in ts):.1f}-{max(args.iters / x for x in ts):.1f}",
                f"{base / t:.2f}",
            ]
        )
    table = markdown_table(
        ["loop (seed preset, batch 128)", "it/s (median)", "it/s (range)", "ratio to plain"], rows
    )
    print(table)
    if args.record:
        record(f"Seed preset speed, {args.iters} iterations x {args.rounds} rounds", table)


if __name__ == "__main__":
    main()
