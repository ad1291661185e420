"""Time to quality: the wall time at which a training run first reaches a quality target.

For every preset in ``--presets`` and seed in ``--seeds``, one run at a time: train with
``log.eval_every`` (``--eval-every``, default a tenth of the preset's iterations) and
``log.eval_samples`` (``--n``, default 10,000), stopping at the first evaluation where FID is
at most ``--target`` times the real-data floor (``digitgan evaluate --real --n N``) and, for a
conditional preset, the label accuracy at least ``--accuracy``; else at the preset's
iterations (``--iters``) or ``--max-minutes``. The training time of an evaluation point is the
run's wall time then, less the time its evaluations took (``eval_s`` in metrics.jsonl).

Printed (and with ``--record`` appended to RESULTS.md): per run, the training seconds and the
iteration at which the target was first met (or the best FID reached), the medians and ranges
over the seeds; a PNG of FID (as a multiple of the floor) against training time, every run a
line (``--png``, default benchmarks/assets/time_to_quality.png).

Usage: python benchmarks/bench_time_to_quality.py [--presets cdcgan] [--seeds 0,1,2]
    [--target 3] [--accuracy 0.97] [--eval-every N] [--n 10000] [--iters N]
    [--max-minutes M] [--set KEY=VALUE ...] [--threads T] [--device cpu|cuda] [--png PATH]
    [--record]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from common import device_name, markdown_table, record

import digitgan
from digitgan.eval.evaluate import evaluate_real


class StopAtTarget(digitgan.Hook):
    """Stops the run at the first evaluation that meets the target."""

    def __init__(self, fid: float, accuracy: float):
        self.fid, self.accuracy = fid, accuracy

    def after_step(self, loop, result):
        if met(loop.scores, self.fid, self.accuracy):
            loop.request_stop("target reached")


def met(scores: dict, fid: float, accuracy: float) -> bool:
    if not scores or scores["fid"] > fid:
        return False
    return scores.get("label_accuracy", 1.0) >= accuracy


def curve(run: Path) -> list[tuple[float, int, dict]]:
    """(training seconds, iteration, scores) of each evaluation of ``run``."""
    points, spent = [], 0.0
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "eval/fid" in r:
            spent += r["eval_s"]
            scores = {k[5:]: v for k, v in r.items() if k.startswith("eval/")}
            points.append((r["wall_s"] - spent, r["step"], scores))
    return points


def spread(values: list[float], fmt: str) -> str:
    if not values:
        return "-"
    lo, mid, hi = (fmt.format(v) for v in (min(values), statistics.median(values), max(values)))
    return mid if lo == hi else f"{mid} ({lo} - {hi})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="cdcgan", help="comma-separated")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated")
    ap.add_argument("--target", type=float, default=3.0, help="FID at most this x the floor")
    ap.add_argument("--accuracy", type=float, default=0.97, help="label accuracy (conditional)")
    ap.add_argument("--eval-every", type=int, help="iterations between evaluations")
    ap.add_argument("--n", type=int, default=10_000, help="samples per evaluation")
    ap.add_argument("--iters", type=int, help="at most this many iterations (default: preset's)")
    ap.add_argument("--max-minutes", type=float, default=0.0, help="at most this training time")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument(
        "--png", default=str(Path(__file__).with_name("assets") / "time_to_quality.png")
    )
    ap.add_argument("--record", action="store_true", help="append the tables to RESULTS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    presets, seeds = args.presets.split(","), [int(s) for s in args.seeds.split(",")]
    floors: dict[str, float] = {}
    runs = []  # (preset, seed, points, reached point or None)
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            base = digitgan.build_config(preset, None, args.set, {"train.device": args.device})
            iters = args.iters or base.train.iters
            every = args.eval_every or max(1, iters // 10)
            dataset = digitgan.load_dataset(base.data.dataset)
            if base.data.dataset not in floors:
                floors[base.data.dataset] = evaluate_real(base.data.dataset, n=args.n).metrics[
                    "fid"
                ]
            goal = args.target * floors[base.data.dataset]
            for seed in seeds:
                cfg = base.replace(
                    train__seed=seed,
                    train__iters=iters,
                    train__max_minutes=args.max_minutes,
                    log__eval_every=every,
                    log__eval_samples=args.n,
                )
                out = Path(tmp) / f"{preset}-{seed}"
                hook = StopAtTarget(goal, args.accuracy)
                digitgan.train(cfg, out, dataset=dataset, progress=False, hooks=[hook])
                points = curve(out)
                reached = next((p for p in points if met(p[2], goal, args.accuracy)), None)
                runs.append((preset, seed, points, reached, floors[base.data.dataset]))
                when = f"{reached[0]:.0f} s, iteration {reached[1]}" if reached else "not reached"
                print(f"{preset} seed {seed}: {when}", flush=True)

    rows, summary = [], []
    for preset, seed, points, reached, floor in runs:
        best = min(p[2]["fid"] for p in points)
        acc = reached[2].get("label_accuracy") if reached else None
        rows.append(
            [
                preset,
                seed,
                f"{reached[0]:.0f}" if reached else "not reached",
                reached[1] if reached else "-",
                f"{reached[2]['fid'] / floor:.2f}x" if reached else f"best {best / floor:.2f}x",
                f"{acc:.3f}" if acc is not None else "-",
            ]
        )
    for preset in presets:
        mine = [r for r in runs if r[0] == preset]
        hit = [r[3] for r in mine if r[3]]
        summary.append(
            [
                preset,
                f"{len(hit)} of {len(mine)}",
                spread([p[0] for p in hit], "{:.0f}"),
                spread([float(p[1]) for p in hit], "{:.0f}"),
            ]
        )
    table = markdown_table(
        ["preset", "seed", "training s to target", "iteration", "FID / floor then", "label acc."],
        rows,
    )
    totals = markdown_table(
        ["preset", "runs reaching the target", "training s (median, range)", "iteration"],
        summary,
    )
    print(totals + "\n\n" + table)
    _plot(runs, args.target, Path(args.png))
    if args.record:
        note = (
            f"Target: FID <= {args.target:g}x the real-data floor at {args.n:,} samples, and "
            f"label accuracy >= {args.accuracy:g} for conditional presets; evaluated every "
            f"{args.eval_every or 'tenth of the iterations'} iterations; training seconds exclude "
            f"the evaluations' own time; {device_name(torch.device(args.device))}, one run at a "
            f"time. "
            f"Curve: `{args.png}`."
        )
        where = " on a GPU" if args.device.startswith("cuda") else ""
        title = f"Time to quality{where}: {', '.join(presets)}"
        record(title, f"{note}\n\n{totals}\n\n{table}")


def _plot(runs, target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for preset, seed, points, _, floor in runs:
        ax.plot(
            [p[0] for p in points],
            [p[2]["fid"] / floor for p in points],
            marker=".",
            label=f"{preset} seed {seed}",
        )
    ax.axhline(target, color="gray", linestyle="--", label=f"target {target:g}x floor")
    ax.set(xlabel="training seconds", ylabel="FID / floor", yscale="log")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
