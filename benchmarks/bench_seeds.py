"""Many seeds in one process: stacked runs against the same runs one after another.

For a preset and ``--seeds K`` seeds (0..K-1), each trained ``--iters`` iterations with the
preset's own logging, sample grids and checkpoints:

- in process: ``digitgan.train(cfg, seeds=range(K))`` against ``digitgan.train(cfg)`` once per
  seed, one after another (the baseline, run in the same script);
- whole commands: ``digitgan train --seeds 0-(K-1)`` against K ``digitgan train --seed S``
  commands one after another (start-up, imports and writing included);
- the step alone (``--step``): the training step of the K stacked runs against one run's,
  timed after warm-up (and, on CUDA, the graph's capture), with no logging.

``--baseline one`` times seed 0's run alone in place of the K runs one after another and
counts its throughput as theirs (runs of one configuration cost the same): for many seeds
on a GPU, where the sequence would take most of the benchmark's time.

The seeds are stacked (``train.seeds_mode = stacked``, which auto is not for convolutional
models on a CPU). A preset whose ``train.precision`` is auto (cdcgan, clusters, stacked) runs
in fp32 on both sides: stacked seeds take fp32 by it, so one run does too, for like
arithmetic.

Throughput is seed-iterations per second (K x iters / wall seconds); the table gives each
and the stacked/sequential ratio.

``--split`` also profiles the training step alone (no logging), one run's and the K runs'
stacked, and splits the time of a seed-iteration into matrix products (matrix multiplications
and convolutions, forward and backward) and everything else, with the products' rate in
GFLOP/s: where stacking saves time and where it cannot.

Usage: python benchmarks/bench_seeds.py [--preset seed] [--seeds 8] [--iters 1000]
       [--device cpu|cuda] [--baseline all|one] [--set KEY=VALUE ...] [--threads N]
       [--skip-commands] [--step] [--split] [--record]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import device_name, markdown_table, record
from torch.profiler import profile

import digitgan
from digitgan.training.loop import seed_configs, seeds_step
from digitgan.training.trainer import Trainer

CPU = torch.device("cpu")

PRODUCTS = (
    *("mm", "addmm", "addmm_", "bmm", "baddbmm"),
    *("mkldnn_convolution", "convolution_backward"),
)
"""The aten operators counted as matrix products (each's own time, not its callees')."""


def split_step(cfg, dataset, runs: int, iters: int = 400, profiled: int = 100) -> list:
    """One row: the step of ``runs`` seeds (stacked when more than one), timed for ``iters``
    iterations after 50 warm-up ones, then ``profiled`` iterations under the profiler: the
    products' own time; times per seed-iteration."""
    trainers = [Trainer(c, dataset, torch.device("cpu")) for c in seed_configs(cfg, range(runs))]
    step = seeds_step(trainers)
    for _ in range(50):
        step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    wall = (time.perf_counter() - t0) / iters  # seconds per iteration
    with profile(with_flops=True) as prof:
        for _ in range(profiled):
            step()
    products = [e for e in prof.key_averages() if e.key.removeprefix("aten::") in PRODUCTS]
    product_s = sum(e.self_cpu_time_total for e in products) / 1e6 / profiled
    flops = sum(e.flops for e in products) / profiled
    per = 1e3 / runs  # ms per seed-iteration, from seconds per iteration
    name = f"{runs} seeds stacked" if runs > 1 else "one run"
    return [
        name,
        f"{wall * per:.2f}",
        f"{product_s * per:.2f}",
        f"{(wall - product_s) * per:.2f}",
        f"{flops / product_s / 1e9:.0f}" if flops else "n/a",
    ]


def _seconds(fn, device: torch.device = CPU) -> float:
    """The wall time of ``fn()``, its device work finished."""
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def step_seconds(cfg, dataset, runs: int, iters: int, device: torch.device) -> float:
    """The seconds of ``iters`` iterations of the step of ``runs`` seeds (stacked when more
    than one), after 20 untimed ones (warm-up, and on CUDA the graph's capture)."""
    configs = seed_configs(cfg, range(runs))
    step = seeds_step([Trainer(c, dataset, device) for c in configs])
    for _ in range(20):
        step()
    return _seconds(lambda: [step() for _ in range(iters)], device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="seed")
    ap.add_argument("--seeds", type=int, default=8, help="how many seeds (0..K-1)")
    ap.add_argument("--iters", type=int, default=1000, help="iterations per run")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument(
        "--baseline",
        choices=("all", "one"),
        default="all",
        help="the runs one after another, or one run's throughput as theirs",
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config")
    ap.add_argument("--skip-commands", action="store_true", help="only the in-process rows")
    ap.add_argument("--step", action="store_true", help="also time the step alone")
    ap.add_argument("--split", action="store_true", help="also profile the step: products/rest")
    ap.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    k, iters, device = args.seeds, args.iters, torch.device(args.device)
    if args.split and device.type != "cpu":
        ap.error("--split profiles the CPU's operators; use it with --device cpu")
    overrides = {"train.iters": iters, "train.device": args.device}
    cfg = digitgan.build_config(args.preset, None, args.set, overrides)
    if cfg.train.precision == "auto":  # stacked seeds take fp32 by it: one run does the same
        cfg = cfg.replace(train__precision="fp32")
    cfg = cfg.replace(train__seeds_mode="stacked")  # (auto trains a conv model's one by one)
    baseline = k if args.baseline == "all" else 1  # runs timed one after another
    dataset = digitgan.load_dataset(cfg.data.dataset)
    rows = []

    def row(what: str, stacked: float, sequential: float, runs: int = baseline) -> None:
        rate_s, rate_q = k * iters / stacked, runs * iters / sequential
        rows.append(
            [
                what,
                f"{sequential:.1f}",
                f"{rate_q:,.0f}",
                f"{stacked:.1f}",
                f"{rate_s:,.0f}",
                f"{rate_s / rate_q:.2f}",
            ]
        )
        print(rows[-1])

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)

        def one_after_another() -> None:
            for s in range(baseline):
                digitgan.train(
                    cfg.replace(train__seed=s), out / f"seq-{s}", dataset=dataset, progress=False
                )

        def stacked() -> None:
            digitgan.train(cfg, out / "stacked", dataset=dataset, progress=False, seeds=range(k))

        # untimed: what the first training call of a process pays once (lazy imports, the
        # device's and its libraries' initialisation), so that neither side is charged for it
        digitgan.train(
            cfg.replace(train__iters=2), out / "warm-up", dataset=dataset, progress=False
        )
        sequential_s = _seconds(one_after_another, device)
        stacked_s = _seconds(stacked, device)
        row("`digitgan.train` in one process", stacked_s, sequential_s)

        if not args.skip_commands:
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            base = [sys.executable, "-m", "digitgan", "train", "--preset", args.preset]
            base += ["--iters", str(iters), "--no-progress", "--device", args.device]
            base += [arg for kv in args.set for arg in ("--set", kv)]
            base += ["--set", f"train.precision={cfg.train.precision}"]  # (auto: fp32, above)
            base += ["--set", "train.seeds_mode=stacked"]

            def run(extra: list[str]) -> None:
                subprocess.run([*base, *extra], check=True, env=env, stdout=subprocess.DEVNULL)

            sequential_s = _seconds(
                lambda: [
                    run(["--seed", str(s), "--out", str(out / f"cmd-{s}")]) for s in range(baseline)
                ]
            )
            stacked_s = _seconds(lambda: run(["--seeds", f"0-{k - 1}", "--out", str(out / "cmd")]))
            row("whole `digitgan train` commands", stacked_s, sequential_s)

    if args.step:
        one = step_seconds(cfg, dataset, 1, iters, device)
        row("the step alone (no logging)", step_seconds(cfg, dataset, k, iters, device), one, 1)

    headers = [
        "what",
        f"{baseline} run{'s one after another' if baseline > 1 else ''}, s",
        "seed-it/s",
        f"{k} seeds stacked, s",
        "seed-it/s",
        "stacked / sequential",
    ]
    table = markdown_table(headers, rows)
    if args.split:
        split = [split_step(cfg, dataset, n) for n in (1, k)]
        head = ["step", "ms per seed-iteration", "in matrix products", "elsewhere"]
        table += "\n\n" + markdown_table([*head, "products' GFLOP/s"], split)
        table += (
            "\n\nThe step alone (no logging): 400 iterations timed after 50 warm-up ones, then "
            "100 under the profiler for the time in matrix products (the aten operators "
            + ", ".join(PRODUCTS)
            + "; elsewhere: the rest of the timed wall time)."
        )
    print(table)
    if args.record:
        note = (
            f"Preset {args.preset}, {k} seeds (0..{k - 1}), {iters:,} iterations each, with the "
            f"preset's logging, grids and checkpoints"
            + "".join(f", `{kv}`" for kv in args.set)
            + f"; {device_name(device)}. "
            "Seed-iterations per second = seeds x iterations / wall seconds"
            + ("" if baseline > 1 else "; the baseline is seed 0's run alone")
            + "."
        )
        record(f"Many seeds in one process: {args.preset}, {k} seeds", f"{note}\n\n{table}")


if __name__ == "__main__":
    main()
