"""Export time and generation speed of ``digitgan export --onnx``: PyTorch against ONNX Runtime.

For each preset (default seed and dcgan) a short run is trained here (speed does not depend
on training; --iters sets how long, default 20) at the preset's full model size, or a run is
given with --run PRESET=DIR. It is exported with ``--onnx`` (the time includes the ONNX
export and its check with ONNX Runtime), then both the exported model in PyTorch
(``digitgan.load(DIR).generate``) and ``generator.onnx`` in ONNX Runtime on the CPU draw
batches of --batch images: the table shows the median images per second of --repeats draws,
both with the same number of threads (--threads).

Usage: python benchmarks/bench_export.py [--presets seed,dcgan] [--iters 20] [--batch 256]
       [--repeats 10] [--threads 1] [--run PRESET=DIR ...] [--record]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from common import add_preset_run_options, markdown_table, preset_runs, record

import digitgan
from digitgan.export import export


def rate(draw, batch: int, repeats: int) -> float:
    for _ in range(2):  # warm-up
        draw()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        draw()
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_preset_run_options(ap, iters=20)
    ap.add_argument("--batch", type=int, default=256, help="images per draw")
    ap.add_argument("--repeats", type=int, default=10, help="timed draws per engine")
    ap.add_argument("--threads", type=int, default=1, help="threads for PyTorch and ORT")
    ap.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    args = ap.parse_args()
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, run in preset_runs(args, tmp):
            t0 = time.perf_counter()
            result = export(run, Path(tmp) / f"{name}-model", onnx=True)
            seconds = time.perf_counter() - t0
            gan = digitgan.load(result.path)
            z = gan.noise(args.batch, seed=1)
            labels = gan.labels(args.batch)
            options = ort.SessionOptions()
            options.intra_op_num_threads = options.inter_op_num_threads = args.threads
            session = ort.InferenceSession(
                str(result.path / "generator.onnx"), options, providers=["CPUExecutionProvider"]
            )
            feeds = {"noise": z.numpy()} | ({} if labels is None else {"labels": labels.numpy()})
            torch_rate = rate(partial(gan.decode, z, labels), args.batch, args.repeats)
            ort_rate = rate(partial(session.run, None, feeds), args.batch, args.repeats)
            rows.append(
                [
                    name,
                    f"{gan.step:,}",
                    f"{seconds:.1f}",
                    f"{result.onnx_max_diff:.1e}",
                    f"{torch_rate:,.0f}",
                    f"{ort_rate:,.0f}",
                    f"{ort_rate / torch_rate:.2f}",
                ]
            )
            print(rows[-1])
    table = markdown_table(
        [
            "preset",
            "iterations trained",
            "export s (with --onnx)",
            "max abs diff ORT vs PyTorch",
            "PyTorch images/s",
            "ONNX Runtime images/s",
            "ORT / PyTorch",
        ],
        rows,
    )
    print(table)
    if args.record:
        record(
            "digitgan export: export time, PyTorch and ONNX Runtime generation speed",
            f"Runs trained for a few iterations only, at each preset's full model size (speed "
            f"does not depend on training). CPU, {args.threads} thread(s) for both engines, "
            f"batches of {args.batch} images, median of {args.repeats} draws; onnxruntime "
            f"{ort.__version__}.\n\n{table}",
        )


if __name__ == "__main__":
    main()
