"""Shared helpers for the benchmarks: machine facts and recording results in RESULTS.md."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

import digitgan

RESULTS = Path(__file__).with_name("RESULTS.md")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line describing this machine: CPU model, cores, torch build and threads."""
    cpu = cpu_model()
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores{gpu}; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); Python {platform.python_version()}; "
        f"load average at the end {load}"
    )


def device_name(device: torch.device) -> str:
    """The device a benchmark ran on: the GPU's name, or the CPU's and its torch threads."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU {cpu_model()} ({torch.get_num_threads()} threads)"


METRICS = [  # (key in digitgan's evaluation metrics, label, format)
    ("fid", "FID (lower is better)", "{:.3f}"),
    ("kid", "KID x 1000 (lower)", "{:.3f}"),
    ("is", "Inception score (higher, max 10)", "{:.3f}"),
    ("precision", "precision (higher)", "{:.4f}"),
    ("recall", "recall (higher)", "{:.4f}"),
    ("density", "density (~1)", "{:.4f}"),
    ("coverage", "coverage (higher)", "{:.4f}"),
    ("classes_covered", "classes covered (of 10)", "{:.0f}"),
    ("kl_uniform", "KL to uniform, nats (lower)", "{:.4f}"),
    ("class_share_min", "share of the least predicted class (~0.10)", "{:.4f}"),
    ("class_share_max", "share of the most predicted class (~0.10)", "{:.4f}"),
    ("mean_confidence", "mean confidence (higher)", "{:.4f}"),
    ("label_accuracy", "label accuracy (higher; labelled samples only)", "{:.4f}"),
    ("category_purity", "category purity (higher; model.categories only)", "{:.4f}"),
    ("cas", "classification accuracy score (higher; floor: trained on real digits)", "{:.4f}"),
    ("memorised", "memorised (lower; ~0.01 = as novel as test data)", "{:.4f}"),
    ("modes_covered", "modes covered (of 1,000; stacked data)", "{:.0f}"),
    ("modes_kl", "reverse KL to uniform modes, nats (lower; stacked data)", "{:.4f}"),
]


def metric_value(metrics: dict, key: str) -> float:
    """A metric as tabulated: KID in units of 1/1000, the others as they are."""
    return metrics[key] * 1000 if key == "kid" else metrics[key]


def metric_rows(*metrics: dict) -> list[tuple[str, str, str]]:
    """The rows of :data:`METRICS` whose metric every one of ``metrics`` has."""
    return [row for row in METRICS if all(row[0] in m for m in metrics)]


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def record(title: str, body: str) -> None:
    """Append a dated section with the machine and the exact command to RESULTS.md."""
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = f"\n## {title} ({stamp})\n\nMachine: {machine()}  \nCommand: `{command}`\n\n{body}\n"
    with RESULTS.open("a") as f:
        f.write(section)
    print(f"recorded in {RESULTS}")


def add_preset_run_options(ap: argparse.ArgumentParser, iters: int) -> None:
    """The options of a benchmark over presets' runs (see :func:`preset_runs`)."""
    ap.add_argument("--presets", default="seed,dcgan")
    ap.add_argument("--iters", type=int, default=iters, help="iterations of each run trained here")
    ap.add_argument("--run", action="append", default=[], metavar="PRESET=DIR")


def preset_runs(args: argparse.Namespace, folder: str | Path) -> Iterator[tuple[str, Path]]:
    """(preset, run directory) for each of ``args.presets``: the run given with
    ``--run PRESET=DIR``, else one trained into ``folder`` for ``args.iters`` iterations at the
    preset's full model size, on the CPU, without sample grids or TensorBoard."""
    given = dict(r.split("=", 1) for r in args.run)
    for name in args.presets.split(","):
        run = given.get(name)
        if run is None:
            cfg = digitgan.preset(name).replace(
                train__iters=args.iters,
                train__device="cpu",
                log__tb_every=0,
                log__sample_every=0,
            )
            run = digitgan.train(cfg, Path(folder) / f"{name}-run", progress=False).run_dir
        yield name, Path(run)
