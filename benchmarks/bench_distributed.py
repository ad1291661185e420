"""Training speed with 1, 2, ... processes under torchrun, at the same global batch.

Each case runs ``torchrun --nproc_per_node N -m digitgan train`` on this machine (Gloo on
the CPU, NCCL with --device cuda) with the given preset and only the final checkpoint as
output, and reads the training time that ``digitgan train`` prints (start-up excluded). The
table shows iterations per second (median over rounds) and global-batch images per second.
One process runs the dense kernel where it applies (train.fast_step), several
processes the autograd step with DistributedDataParallel.

Usage: python benchmarks/bench_distributed.py [--procs 1 2] [--iters 300] [--rounds 3]
       [--preset seed] [--device cpu] [--threads T] [--record]
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import markdown_table, record

import digitgan

NOTE = (
    "One process runs the dense kernel where it applies (train.fast_step), "
    "several processes the autograd step with DistributedDataParallel."
)
QUIET = ["log.sample_every=0", "log.print_every=0", "log.tb_every=0", "log.ckpt_every=0"]


def seconds(procs: int, args: argparse.Namespace) -> float:
    """Training time of one run with ``procs`` processes, as ``digitgan train`` reports it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    threads = args.threads or max(1, (os.cpu_count() or 1) // procs)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": str(Path(digitgan.__file__).parents[1]),
    }
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs)]
        command += ["--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "digitgan"]
        command += ["train", "--preset", args.preset, "--iters", str(args.iters), "--out", tmp]
        command += ["--force", "--device", args.device, "--no-progress"]
        command += [f"--set={s}" for s in QUIET]
        out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    return float(re.search(r"finished iteration \d+ in ([\d.]+) s", out)[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--preset", default="seed")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--threads", type=int, help="OMP_NUM_THREADS per process (default: cores / processes)"
    )
    ap.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    args = ap.parse_args()
    batch = digitgan.preset(args.preset).data.batch_size
    times: dict[int, list[float]] = {n: [] for n in args.procs}
    for _ in range(args.rounds):  # alternate, so that machine noise hits every case alike
        for n in args.procs:
            times[n].append(seconds(n, args))
    rows = []
    for n in args.procs:
        rate = args.iters / statistics.median(times[n])
        rows.append([n, batch // n, f"{rate:.1f}", f"{rate * batch:.0f}"])
    table = markdown_table(["processes", "batch per process", "it/s", "images/s"], rows)
    print(table)
    if args.record:
        record(
            f"Distributed training, preset {args.preset} on {args.device}, global batch {batch}",
            f"{args.iters} iterations, median of {args.rounds} rounds; OMP_NUM_THREADS "
            f"{args.threads or 'cores / processes'}. {NOTE}\n\n{table}",
        )


if __name__ == "__main__":
    main()
