"""Whether this tree trains the same numbers as another git revision, preset by preset.

Each case trains a few iterations on the CPU in a fresh process, once with this tree's
package and once with revision REV's (checked out into a temporary worktree), and compares
the SHA-256 of everything the final checkpoint's tensors hold (weights, EMA, Adam moments,
random and data-order state). Identical hashes mean the runs are bit for bit the same, so a
quality measured with REV holds for this tree unchanged.

Usage: python benchmarks/bench_same_numbers.py --baseline REV [--iters 12] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import markdown_table, record

CASES = {
    "seed": ("seed", {}),
    "seed, generic step": ("seed", {"train.fast_step": False}),
    "seed, d_steps 2, label smoothing": ("seed", {"train.d_steps": 2, "loss.label_smoothing": 0.1}),
    "seed, conditional, instance noise": (
        "seed",
        {"model.conditional": True, "loss.instance_noise": 0.1},
    ),
    "dcgan": ("dcgan", {}),
    "cdcgan": ("cdcgan", {}),
    "hinge-sn": ("hinge-sn", {}),
    "wgan-gp": ("wgan-gp", {}),
}

_RUN = """
import hashlib, json, sys, tempfile
import torch
from safetensors.torch import load_file
import digitgan
from digitgan.config import apply_sets
from digitgan.data import load_dataset

torch.set_num_threads(1)
preset, sets, iters = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
cfg = digitgan.preset(preset).replace(train__device="cpu", train__iters=iters)
apply_sets(cfg, [f"{k}={json.dumps(v)}" for k, v in sets.items()])
with tempfile.TemporaryDirectory() as d:
    digitgan.train(cfg, d + "/run", dataset=load_dataset("mnist20k"), progress=False)
    tensors = load_file(d + "/run/checkpoints/latest.safetensors")
h = hashlib.sha256()
for k in sorted(tensors):
    h.update(k.encode())
    h.update(tensors[k].contiguous().numpy().tobytes())
print("sha256", h.hexdigest())
"""


def fingerprint(src: Path, preset: str, sets: dict, iters: int) -> str:
    env = {**os.environ, "PYTHONPATH": str(src)}
    args = [sys.executable, "-c", _RUN, preset, json.dumps(sets), str(iters)]
    out = subprocess.run(
        args, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True, check=True
    ).stdout
    return out.split("sha256")[-1].strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, metavar="REV", help="git revision to compare")
    ap.add_argument("--iters", type=int, default=12, help="iterations per run")
    ap.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    args = ap.parse_args()
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "add", "--detach", str(old), args.baseline],
            check=True,
            capture_output=True,
        )
        try:
            rows = []
            for name, (preset, sets) in CASES.items():
                a = fingerprint(repo / "src", preset, sets, args.iters)
                b = fingerprint(old / "src", preset, sets, args.iters)
                rows.append([name, "yes" if a == b else "no", a[:12], b[:12]])
                print(rows[-1], flush=True)
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(old)])
    table = markdown_table(
        ["case", "bit-identical", "this tree (sha256)", f"{args.baseline} (sha256)"], rows
    )
    notes = (
        f"{args.iters} iterations per case on the CPU (one thread), mnist20k; the hash covers "
        "every tensor of the final checkpoint."
    )
    print(table + "\n\n" + notes)
    if args.record:
        record(f"Same numbers as {args.baseline}?", table + "\n\n" + notes)


if __name__ == "__main__":
    main()
