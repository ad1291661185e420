"""Training speed of every preset's inner loop, the training step, per precision/compile.

For each preset (seed, dcgan, cdcgan, wgan-gp, hinge-sn) and variant (fp32, bf16, compile,
bf16+compile: ``train.precision`` and ``train.compile``; nchw and nhwc: fp32 with the
weights in the default layout, or channels-last, whatever the trainer chose; eager: fp32 with
``train.cuda_graph`` off, every operation launched from Python, the baseline of the CUDA
graph that fp32 replays on CUDA; tf32: ``train.precision = tf32``, CUDA only;
cudnn-benchmark: fp32 with ``train.cudnn_benchmark``) a trainer is built on the device,
stepped ``--warmup`` times (this includes torch.compile's compilation and the CUDA graph's
capture), then timed over
``--rounds`` rounds of ``--iters`` steps; each round ends with a device synchronisation
(``torch.cuda.synchronize()`` on CUDA), so it counts finished work.

- it/s: iterations per second, the median over the rounds (and their range). One
  iteration is ``train.d_steps`` discriminator steps and one generator step.
- images/s: real and generated images processed per second, defined as
  ``batch_size * (2 * d_steps + 1) * it/s``: each D step takes one real batch and generates
  one batch, the G step generates one more (the seed preset: 384 images per iteration;
  wgan-gp, 5 critic steps of 64: 704).

``--check-sync`` (CUDA only) runs the timed steps under
``torch.cuda.set_sync_debug_mode("warn")``, which warns at every operation that makes the
host wait for the GPU; the warnings are counted per row (the ``syncs`` column, 0 = none)
and the distinct messages printed below the table. A variant that cannot run (say
compile with a gradient penalty) is reported in its row and the rest go on.

Usage: python benchmarks/bench_presets.py [--device auto|cpu|cuda]
    [--variants fp32,bf16,compile,bf16+compile,nchw,nhwc,eager,tf32,cudnn-benchmark]
    [--presets seed,dcgan,...]
    [--iters N] [--rounds 3] [--warmup 10] [--check-sync] [--json PATH] [--record]
Defaults: fp32 and 50 iterations on a CPU; fp32,eager,bf16,compile and 200 iterations on CUDA
(sized for about 3 minutes on one GPU).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import warnings

import torch
from common import device_name, machine, markdown_table, record

import digitgan
from digitgan.config import resolve_device
from digitgan.data import load_dataset
from digitgan.errors import DigitganError
from digitgan.fileio import atomic_write_text
from digitgan.training.dense import DenseStep
from digitgan.training.graph import GraphStep
from digitgan.training.loop import make_step
from digitgan.training.step import read_scalars
from digitgan.training.trainer import Trainer

PRESETS = ("seed", "dcgan", "cdcgan", "wgan-gp", "hinge-sn")
FP32 = {"train__precision": "fp32"}  # (a preset's own may be auto: bf16 on a CPU with AMX units)
VARIANTS = {
    "fp32": FP32,
    "bf16": {"train__precision": "bf16"},
    "compile": FP32 | {"train__compile": True},
    "bf16+compile": {"train__precision": "bf16", "train__compile": True},
    "nchw": FP32,  # fp32 with the weights in another layout than the trainer's: see LAYOUTS
    "nhwc": FP32,
    "eager": FP32 | {"train__cuda_graph": False},  # on CUDA, every operation launched
    "tf32": {"train__precision": "tf32"},  # CUDA only
    "cudnn-benchmark": FP32 | {"train__cudnn_benchmark": True},
}


LAYOUTS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}
"""The variants that put the models' weights in a layout of their own after the trainer has
laid them out (channels-last on a CPU, the default contiguous one elsewhere): the baselines
of the trainer's choice, in the same run on the same machine."""


def relayout(trainer: Trainer, layout: torch.memory_format) -> None:
    models = [trainer.G, trainer.D] + ([trainer.ema.model] if trainer.ema else [])
    for model in models:
        model.to(memory_format=layout)


def is_sync(w: warnings.WarningMessage) -> bool:
    """Whether a caught warning reports a synchronising call (the debug mode's first use
    also warns that it is a prototype: that is no sync)."""
    text = str(w.message)
    return "synchroniz" in text and "prototype" not in text


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_variant(dataset, device, name: str, variant: str, args) -> dict:
    """One row: build the trainer, warm up, time the rounds (under sync checking if asked)."""
    cfg = digitgan.preset(name).replace(train__device=str(device), **VARIANTS[variant])
    row = {"preset": name, "variant": variant, "batch_size": cfg.data.batch_size}
    row["images_per_iter"] = cfg.data.batch_size * (2 * cfg.train.d_steps + 1)
    trainer = Trainer(cfg, dataset, device)
    if variant in LAYOUTS:
        relayout(trainer, LAYOUTS[variant])
    step = make_step(trainer)
    inner = step.step if isinstance(step, GraphStep) else step
    row["step"] = "dense kernel" if isinstance(inner, DenseStep) else "generic"
    if isinstance(step, GraphStep):
        row["step"] += ", CUDA graph"
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        result = step()
    synchronize(device)
    row["warmup_s"] = time.perf_counter() - t0
    rates = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if args.check_sync:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(args.rounds):
                synchronize(device)
                t0 = time.perf_counter()
                for _ in range(args.iters):
                    result = step()
                synchronize(device)
                rates.append(args.iters / (time.perf_counter() - t0))
        finally:
            if args.check_sync:
                torch.cuda.set_sync_debug_mode("default")
    for w in caught:  # other warnings are shown as usual
        if not (args.check_sync and is_sync(w)):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    syncs = [str(w.message) for w in caught if is_sync(w)]
    finite = all(math.isfinite(v) for v in read_scalars(result, trainer.dist).values())
    row |= {
        "it_per_s": statistics.median(rates),
        "it_per_s_rounds": rates,
        "images_per_s": statistics.median(rates) * row["images_per_iter"],
        "losses_finite": finite,
    }
    if args.check_sync:
        row |= {"syncs": len(syncs), "sync_messages": sorted(set(syncs))}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--variants", help="comma-separated, from " + ", ".join(VARIANTS))
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--iters", type=int, help="timed iterations per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first (compiles)")
    ap.add_argument("--check-sync", action="store_true", help="CUDA: count host syncs")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    args = ap.parse_args()

    try:
        device = resolve_device(args.device)
    except DigitganError as e:
        ap.error(str(e))
    cuda = device.type == "cuda"
    variants = (args.variants or ("fp32,eager,bf16,compile" if cuda else "fp32")).split(",")
    presets = args.presets.split(",")
    for v in variants:
        if v not in VARIANTS:
            ap.error(f"--variants: unknown variant {v!r}; known: {', '.join(VARIANTS)}")
    for p in presets:
        if p not in PRESETS:
            ap.error(f"--presets: unknown preset {p!r}; known: {', '.join(PRESETS)}")
    if args.check_sync and not cuda:
        ap.error("--check-sync: needs a CUDA device (sync debug mode is CUDA's)")
    args.iters = args.iters or (200 if cuda else 50)
    if cuda:
        torch.backends.cudnn.benchmark = True

    dataset = load_dataset("mnist20k")
    where = device_name(device)
    print(f"device: {where}; {args.rounds} rounds of {args.iters} iterations", flush=True)
    rows, start = [], time.perf_counter()
    for name in presets:
        for variant in variants:
            try:
                row = time_variant(dataset, device, name, variant, args)
            except Exception as e:  # report it in the table and go on to the next variant
                message = (str(e).strip().splitlines() or [""])[0]
                row = {"preset": name, "variant": variant, "error": f"{type(e).__name__}: "}
                row["error"] += message[:300]
            rows.append(row)
            status = row.get("error") or f"{row['it_per_s']:.1f} it/s"
            print(f"[{time.perf_counter() - start:6.1f} s] {name} {variant}: {status}", flush=True)
            if args.json:  # after every row: a run cut short keeps what it measured
                result = {
                    "device": where,
                    "machine": machine(),
                    "args": vars(args),
                    "results": rows,
                }
                atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")

    headers = ["preset", "variant", "step", "it/s (median)", "it/s (range)", "images/s"]
    headers += ["syncs"] if args.check_sync else []
    table_rows = []
    for r in rows:
        if "error" in r:
            table_rows.append([r["preset"], r["variant"], f"not run: {r['error']}"])
            table_rows[-1] += [""] * (len(headers) - 3)
            continue
        lo, hi = min(r["it_per_s_rounds"]), max(r["it_per_s_rounds"])
        cells = [r["preset"], r["variant"], r["step"], f"{r['it_per_s']:.1f}"]
        cells += [f"{lo:.1f}-{hi:.1f}", f"{r['images_per_s']:,.0f}"]
        cells += [r["syncs"]] if args.check_sync else []
        table_rows.append(cells)
    notes = [f"Device: {where}. Timed: {args.rounds} rounds of {args.iters} iterations after "]
    notes[0] += f"{args.warmup} warm-up iterations; images/s = batch x (2 d_steps + 1) x it/s."
    if args.check_sync:
        total = sum(r.get("syncs", 0) for r in rows)
        notes.append(f"Host syncs in the timed steps (set_sync_debug_mode warn): {total} in all.")
        messages = sorted({m for r in rows for m in r.get("sync_messages", [])})
        notes += [f"- sync warning: {m}" for m in messages]
    not_finite = [f"{r['preset']} {r['variant']}" for r in rows if r.get("losses_finite") is False]
    if not_finite:
        notes.append(f"Losses not finite after timing: {', '.join(not_finite)}.")
    body = markdown_table(headers, table_rows) + "\n\n" + "\n".join(notes)
    print(body)
    if args.json:
        print(f"wrote {args.json}")
    if args.record:
        record(f"Preset step speed on {where}", body)


if __name__ == "__main__":
    main()
