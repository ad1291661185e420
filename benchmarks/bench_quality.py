"""The quality of each preset: trained over several seeds, each run scored on 10,000 samples
(26,000 on Stacked MNIST, the stacked preset's dataset, whose modes it counts).

For every preset in ``--presets`` and seed in ``--seeds``: train it (the preset's own
iterations, ``--iters N``, or a wall-clock budget ``--minutes M``, which sets
``train.max_minutes``), timing the training call alone, then evaluate the run as
``digitgan evaluate RUN`` does (samples against the test split; a conditional
model draws the classes in turn and is scored for label accuracy). Printed (and with
``--record`` appended to RESULTS.md): a summary of the presets against the quality target,
then per preset the iterations, the training wall time and every metric's median and range
over the seeds, beside the real-data floor. A preset on a stacked dataset (``stacked``) is
summarised by its modes covered (of 1,000) and reverse KL beside real stacks'.

With ``--cas`` a conditional preset's evaluation adds the classification accuracy score
(``digitgan evaluate RUN --n N --cas --cas-n N``: a classifier trained on N samples, with
the shipped classifier's recipe over ``--cas-epochs`` epochs, scored on the test split); its
floor is the same classifier trained on as many real training digits.

Usage: python benchmarks/bench_quality.py [--presets seed,dcgan,cdcgan,wgan-gp,hinge-sn]
    [--seeds 0,1,2] [--iters N] [--minutes M] [--set KEY=VALUE ...] [--device cpu|cuda]
    [--no-stacked] [--jobs J] [--threads T] [--n N] [--cas] [--cas-epochs 20] [--out DIR]
    [--json PATH] [--record]

On a GPU the seeds of a preset train at once in one process by default, their models stacked
(``digitgan train --seeds``, where one run leaves the card mostly idle); on the CPU, where
stacking gains 1.41x for the seed MLP and costs dcgan about 10% (bench_seeds.py in
RESULTS.md), one after another. ``--stacked``/``--no-stacked`` choose; a ``--minutes``
budget, each run's own, and ``--jobs`` do not stack. ``--jobs J`` trains (and evaluates)
J runs at once in separate processes, each with ``--threads`` torch threads (default: the
cores divided by J); the runs then share the machine and slow each other, which the
recorded text says. ``--out DIR`` keeps the runs; a run found there trained with the same
settings, resolving to the same configuration, is not trained again (its recorded training
time is reused) and its evaluation is reused when it used the same ``--n``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

import torch
from common import machine, markdown_table, metric_rows, metric_value, record

import digitgan
from digitgan.config import MAX_INT, PRESETS
from digitgan.fileio import atomic_write_text

RECORD_FILE = "bench_quality.json"
"""What a run directory keeps of its benchmark: settings, training time, evaluation."""

TARGET = {  # the quality target of the "models and objectives" issue, on medians over seeds
    "fid_over_floor": 3.0,
    "is": 9.0,
    "class_share": (0.07, 0.13),
    "label_accuracy": 0.97,
}


def _list(text: str) -> list[str]:
    return [x for x in text.replace(" ", "").split(",") if x]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", type=_list, default=list(PRESETS), help="comma-separated")
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in _list(s)], default=[0, 1, 2])
    ap.add_argument("--iters", type=int, help="iterations per run (default: the preset's own)")
    ap.add_argument(
        "--minutes",
        type=float,
        help="train each run for this wall-clock budget (train.max_minutes); without --iters "
        "the iterations are unbounded",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for every preset (repeatable)",
    )
    ap.add_argument("--device", default="auto", help="train.device and evaluation device")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at once (processes)")
    ap.add_argument(
        "--stacked",
        action=argparse.BooleanOptionalAction,
        help="train each preset's seeds at once in one process, their models stacked "
        "(digitgan train --seeds; default on a GPU; not with --minutes or --jobs)",
    )
    ap.add_argument("--threads", type=int, help="torch threads per run (default: cores / jobs)")
    ap.add_argument(
        "--n",
        type=int,
        help="samples per evaluation (default: evaluate's, 10,000, or 26,000 on stacked data)",
    )
    ap.add_argument(
        "--cas",
        action="store_true",
        help="conditional presets: also the classification accuracy score on --n samples",
    )
    ap.add_argument("--cas-epochs", type=int, default=20, help="--cas: training epochs")
    ap.add_argument("--out", help="keep the runs in this folder and reuse finished ones")
    ap.add_argument("--json", help="also write every result to this JSON file")
    ap.add_argument("--record", action="store_true", help="append the tables to RESULTS.md")
    args = ap.parse_args(argv)
    unknown = [p for p in args.presets if p not in PRESETS]
    if unknown or not args.presets:
        ap.error(
            f"--presets: unknown {', '.join(unknown) or '(none given)'}; known {list(PRESETS)}"
        )
    if args.jobs < 1 or (args.threads is not None and args.threads < 1) or (args.n or 2) < 2:
        ap.error("--jobs and --threads must be at least 1, --n at least 2")
    if args.cas_epochs < 1:
        ap.error("--cas-epochs must be at least 1")
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    # a wall-clock budget is each run's own; separate processes are the other way
    if args.stacked is None:
        args.stacked = _device(args.device).startswith("cuda")
    args.stacked = args.stacked and not args.minutes and args.jobs == 1 and len(args.seeds) > 1
    return args


def _config(settings: dict) -> digitgan.Config:
    """The config of a job's settings (its seed included)."""
    overrides = {
        "train.seed": settings["seed"],
        "train.device": settings["device"],
        "train.max_minutes": settings["minutes"] or 0.0,
    }
    iters = settings["iters"] or (MAX_INT if settings["minutes"] else None)
    if iters:
        overrides["train.iters"] = iters
    return digitgan.build_config(settings["preset"], None, settings["sets"], overrides)


def _finished(job: dict) -> dict | None:
    """The record of the job's run when its directory holds this job's finished training: the
    same settings, and the configuration they resolve to now (a preset may have changed since)."""
    run = Path(job["run"])
    path, config = run / RECORD_FILE, run / "config.toml"
    old = json.loads(path.read_text()) if path.is_file() else {}
    trained = (run / "checkpoints" / "latest.safetensors").is_file() and config.is_file()
    if old.get("settings") != job["settings"] or not trained:
        return None
    return old if config.read_text() == _config(job["settings"]).to_toml() else None


def _train_record(settings: dict, result, seconds: float, together: int = 1) -> dict:
    return {
        "settings": settings,
        "train": {
            "iters": result.step,
            "seconds": seconds,
            "loop_seconds": result.seconds,  # what train.max_minutes bounds
            "out_of_time": result.out_of_time,
            "runs_together": together,
            "finished_at": time.strftime("%Y-%m-%d %H:%M"),
        },
    }


def train_stacked(jobs: list[dict]) -> None:
    """Train jobs of one preset that differ only in their seed as one stacked run
    (``digitgan.train(..., seeds=...)``) into their shared parent folder, unless each holds its
    training already; each run's record gets the stacked call's wall time."""
    pending = [job for job in jobs if _finished(job) is None]
    if not pending:
        return
    torch.set_num_threads(pending[0]["threads"])
    cfg = _config(pending[0]["settings"]).replace(train__seeds_mode="stacked")
    data = digitgan.load_dataset(cfg.data.dataset, cfg.data.data_dir or None)
    seeds = [job["settings"]["seed"] for job in pending]
    root = Path(pending[0]["run"]).parent
    t0 = time.perf_counter()
    results = digitgan.train(cfg, root, force=True, progress=False, dataset=data, seeds=seeds)
    seconds = time.perf_counter() - t0
    for job, result in zip(pending, results, strict=True):
        if result.error:
            raise result.error
        record_ = _train_record(job["settings"], result, seconds, len(seeds))
        atomic_write_text(Path(job["run"]) / RECORD_FILE, json.dumps(record_, indent=2) + "\n")


def run_one(job: dict) -> dict:
    """Train (unless the run dir holds this job's finished training) and evaluate one run.

    ``job``: the settings (preset, seed, iters, minutes, sets, device, threads, jobs), the
    run directory ``run``, the sample count ``n`` and ``cas``, the CAS epochs or None.
    Returns the run's record: its settings, ``train`` (iterations reached, wall seconds of
    the training call) and ``eval`` (the evaluation's metrics, per-class accuracy and
    histogram; with ``cas`` and a conditional model, its CAS).
    """
    from digitgan.eval.evaluate import CasRecipe, evaluate

    torch.set_num_threads(job["threads"])
    run, settings = Path(job["run"]), job["settings"]
    old = _finished(job)
    if old is None:
        cfg = _config(settings)
        data = digitgan.load_dataset(cfg.data.dataset, cfg.data.data_dir or None)
        t0 = time.perf_counter()
        result = digitgan.train(cfg, run, force=True, progress=False, dataset=data)
        old = _train_record(settings, result, time.perf_counter() - t0)
    cas = None
    if job["cas"] and digitgan.load(run).num_classes:
        cas = CasRecipe(**({"n": job["n"]} if job["n"] else {}), epochs=job["cas"])
    evaluated = old.get("eval")
    if (
        evaluated is None
        or job["n"] not in (None, evaluated["samples"])
        or (cas and evaluated.get("cas_recipe") != asdict(cas))
    ):
        report = evaluate(run, n=job["n"], device=_device(settings["device"]), cas=cas)
        old["eval"] = {**report.to_dict(), "seconds": report.seconds}
    atomic_write_text(run / RECORD_FILE, json.dumps(old, indent=2) + "\n")
    return {**old, "run": str(run)}


def _device(name: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def spread(values: list[float], fmt: str) -> tuple[str, str]:
    """(median, "min - max") of ``values``, formatted with ``fmt``."""
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return fmt.format(statistics.median(values)), lo if lo == hi else f"{lo} - {hi}"


def summarise(runs: list[dict]) -> dict:
    """Per preset (in the runs' order): median, min and max of the iterations, the training
    seconds and every metric over its runs."""
    out: dict[str, dict] = {}
    for preset in dict.fromkeys(r["settings"]["preset"] for r in runs):
        mine = [r for r in runs if r["settings"]["preset"] == preset]
        metrics = [r["eval"]["metrics"] for r in mine]
        values = {
            "iters": [r["train"]["iters"] for r in mine],
            "train_seconds": [r["train"]["seconds"] for r in mine],
        }
        values |= {key: [m[key] for m in metrics] for key, _, _ in metric_rows(*metrics)}
        out[preset] = {
            "seeds": [r["settings"]["seed"] for r in mine],
            "dataset": mine[0]["eval"]["dataset"],
            **{
                k: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                for k, v in values.items()
            },
        }
    return out


def meets_target(s: dict, floor: dict) -> list[str]:
    """The parts of the quality target a preset's medians miss (empty: all met)."""
    misses = []
    if s["fid"]["median"] > TARGET["fid_over_floor"] * floor["fid"]:
        misses.append(f"FID > {TARGET['fid_over_floor']:g}x floor")
    if s["is"]["median"] < TARGET["is"]:
        misses.append(f"IS < {TARGET['is']:g}")
    lo, hi = TARGET["class_share"]
    if s["class_share_min"]["median"] < lo or s["class_share_max"]["median"] > hi:
        misses.append(f"a class share outside {lo:.0%}-{hi:.0%}")
    if "label_accuracy" in s and s["label_accuracy"]["median"] < TARGET["label_accuracy"]:
        misses.append(f"label accuracy < {TARGET['label_accuracy']:.0%}")
    return misses


def _stat(s: dict, unit: str = "") -> str:
    """A summarised value as "median (min - max)", whole numbers."""
    med, lo, hi = (f"{s[k]:.0f}{unit}" for k in ("median", "min", "max"))
    return med if lo == hi else f"{med} ({lo} - {hi})"


def summary_table(summary: dict, floors: dict) -> str:
    rows = []
    for preset, s in summary.items():
        floor = floors[s["dataset"]]
        acc = s.get("label_accuracy")
        if "modes_kl" in s:  # stacked data: no FID target, see modes_table
            continue
        misses = meets_target(s, floor)
        rows.append(
            [
                preset,
                _stat(s["iters"]),
                _stat(s["train_seconds"], " s"),
                f"{s['fid']['median']:.3f} ({s['fid']['median'] / floor['fid']:.1f}x floor)",
                f"{s['is']['median']:.2f}",
                f"{s['class_share_min']['median']:.1%} - {s['class_share_max']['median']:.1%}",
                "n/a" if acc is None else f"{acc['median']:.2%}",
                "yes" if not misses else "no: " + "; ".join(misses),
            ]
        )
    if not rows:
        return ""
    return markdown_table(
        [
            "preset",
            "iterations (median, range)",
            "training time (median, range)",
            "FID (median)",
            "IS (median)",
            "class shares (medians)",
            "label accuracy (median)",
            "meets the target",
        ],
        rows,
    )


def modes_table(summary: dict, floors: dict) -> str:
    """The presets on stacked data: modes covered and reverse KL, beside real stacks'."""
    rows = []
    for preset, s in summary.items():
        if "modes_kl" in s:
            floor = floors[s["dataset"]]
            rows.append(
                [
                    preset,
                    _stat(s["iters"]),
                    _stat(s["train_seconds"], " s"),
                    f"{_stat(s['modes_covered'])} (real {floor['modes_covered']})",
                    f"{s['modes_kl']['median']:.3f} ({s['modes_kl']['min']:.3f} - "
                    f"{s['modes_kl']['max']:.3f}; real {floor['modes_kl']:.3f})",
                ]
            )
    headers = ["preset", "iterations (median, range)", "training time (median, range)"]
    headers += ["modes covered of 1,000 (median, range)", "reverse KL, nats (median, range)"]
    return markdown_table(headers, rows) if rows else ""


def preset_table(preset: str, runs: list[dict], floor: dict) -> str:
    """One preset's metrics: floor, median and range over its runs."""
    mine = [r for r in runs if r["settings"]["preset"] == preset]
    metrics = [r["eval"]["metrics"] for r in mine]
    iters = [r["train"]["iters"] for r in mine]
    secs = [r["train"]["seconds"] for r in mine]
    rows = [
        ["iterations", "", *spread(iters, "{:.0f}")],
        ["training wall time, s", "", *spread(secs, "{:.0f}")],
    ]
    for key, label, fmt in metric_rows(*metrics):
        vals = [metric_value(m, key) for m in metrics]
        real = fmt.format(metric_value(floor, key)) if key in floor else ""
        rows.append([label, real, *spread(vals, fmt)])
    seeds = ", ".join(str(r["settings"]["seed"]) for r in mine)
    return markdown_table(
        [f"{preset} (seeds {seeds})", "real data (floor)", "median", "range over seeds"], rows
    )


def _reproduce(args: argparse.Namespace, preset: str) -> str:
    """The command that reproduces one preset's row."""
    words = ["python", "benchmarks/bench_quality.py", "--presets", preset]
    words += ["--seeds", ",".join(map(str, args.seeds))] + (["--n", str(args.n)] if args.n else [])
    words += ["--device", args.device, "--jobs", str(args.jobs), "--threads", str(args.threads)]
    if args.iters:
        words += ["--iters", str(args.iters)]
    words += ["--stacked" if args.stacked else "--no-stacked"]
    if args.minutes:
        words += ["--minutes", f"{args.minutes:g}"]
    for item in args.set:
        words += ["--set", item]
    if args.cas:
        words += ["--cas", "--cas-epochs", str(args.cas_epochs)]
    return " ".join(shlex.quote(w) for w in words)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = _device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.out or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        jobs = []
        for seed in args.seeds:  # seeds outermost: parallel jobs mix the presets
            for preset in args.presets:
                settings = {
                    "preset": preset,
                    "seed": seed,
                    "iters": args.iters,
                    "minutes": args.minutes,
                    "sets": args.set,
                    "device": args.device,
                    "threads": args.threads,
                    "jobs": args.jobs,
                    "stacked": args.stacked,
                }
                run = folder / (
                    f"{preset}-seeds/seed-{seed}" if args.stacked else f"{preset}-seed{seed}"
                )
                jobs.append(
                    {
                        "settings": settings,
                        "run": str(run),
                        "threads": args.threads,
                        "n": args.n,
                        "cas": args.cas_epochs if args.cas else None,
                    }
                )
        runs = []

        def done(r: dict) -> None:
            s, m = r["settings"], r["eval"]["metrics"]
            acc = f", label accuracy {m['label_accuracy']:.3f}" if "label_accuracy" in m else ""
            if "modes_kl" in m:
                score = f"{m['modes_covered']} modes, reverse KL {m['modes_kl']:.3f}"
            else:
                score = f"FID {m['fid']:.3f}, IS {m['is']:.2f}"
            if "cas" in m:
                acc += f", CAS {m['cas']:.4f} (real digits {m['cas_real']:.4f})"
            print(
                f"{s['preset']} seed {s['seed']}: {r['train']['iters']} it in "
                f"{r['train']['seconds']:.0f} s; {score}{acc}",
                flush=True,
            )
            runs.append(r)

        if args.stacked:
            for preset in args.presets:
                train_stacked([j for j in jobs if j["settings"]["preset"] == preset])
        if args.jobs == 1:
            for job in jobs:
                done(run_one(job))
        else:
            ctx = multiprocessing.get_context("spawn")  # CUDA cannot be forked
            with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
                for r in pool.map(run_one, jobs):
                    done(r)
    runs.sort(key=lambda r: (args.presets.index(r["settings"]["preset"]), r["settings"]["seed"]))

    from digitgan.eval.evaluate import evaluate_real

    datasets = dict.fromkeys(r["eval"]["dataset"] for r in runs)
    floors = {d: evaluate_real(d, n=args.n).metrics for d in datasets}
    for r in runs:  # CAS's floor: a classifier trained on real digits the same way (the
        m = r["eval"]["metrics"]  # same for every run of a dataset: the same digits and seed)
        if "cas_real" in m:
            floors[r["eval"]["dataset"]]["cas"] = m["cas_real"]
    n = f"--n {args.n}" if args.n else "(default --n: 10,000, 26,000 on stacked data)"
    summary = summarise(runs)
    budget = (
        f"{args.minutes:g} minutes of training each"
        + (f" (at most {args.iters} iterations)" if args.iters else "")
        if args.minutes
        else f"{args.iters} iterations each"
        if args.iters
        else "each preset's own iterations"
    )
    sets = f"; config overrides {' '.join(args.set)}" if args.set else ""
    gpu = f" ({torch.cuda.get_device_name()})" if device.startswith("cuda") else ""
    note = (
        f"Device {device}{gpu}; "
        + (
            f"{args.jobs} runs trained at once in separate processes"
            if args.jobs > 1
            else f"each preset's {len(args.seeds)} seeds trained at once in one process, their "
            "models stacked (`digitgan train --seeds`; each run's training time is that shared "
            "call's)"
            if args.stacked
            else "one run at a time"
        )
        + f", {args.threads} torch thread(s) each"
        + (
            " (parallel runs share the machine and slow each other: the times are under that "
            "load, not those of a run alone)"
            if args.jobs > 1
            else ""
        )
        + f". {budget}{sets}. Each run is evaluated as `digitgan evaluate RUN` {n}: "
        "samples against the test split (a conditional model draws the classes in "
        f"turn); the floor is `digitgan evaluate --real` {n}. Training time: the "
        "wall time of the training call alone (model building, the training loop and its "
        "outputs; no data loading, no evaluation; a --minutes budget bounds the loop, so the "
        "call takes a few seconds longer). Target "
        f"(medians): FID <= {TARGET['fid_over_floor']:g}x floor, IS >= {TARGET['is']:g}, every "
        f"class {TARGET['class_share'][0]:.0%}-{TARGET['class_share'][1]:.0%} of samples, "
        f"label accuracy >= {TARGET['label_accuracy']:.0%} (conditional presets)."
    )
    if args.cas:
        note += (
            f" CAS (conditional presets): `digitgan evaluate RUN {n} --cas --cas-epochs "
            f"{args.cas_epochs}` (with --cas-n as --n), the test accuracy of a classifier "
            "trained on the samples alone; its floor is the same classifier trained on as many "
            "real training digits (or all there are)."
        )
    parts = [note, summary_table(summary, floors), modes_table(summary, floors)]
    parts = [part for part in parts if part]
    for preset in summary:
        parts.append(preset_table(preset, runs, floors[summary[preset]["dataset"]]))
        parts.append(f"Reproduce: `{_reproduce(args, preset)}`")
    body = "\n\n".join(parts)
    print(body)
    if args.json:
        doc = {
            "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
            "machine": machine(),
            "note": note,
            "markdown": body,  # what --record would append, to paste from another machine
            "floors": floors,
            "summary": summary,
            "runs": runs,
        }
        atomic_write_text(args.json, json.dumps(doc, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.record:
        record(f"Quality of the presets ({budget}, seeds {args.seeds})", body)


if __name__ == "__main__":
    main()
