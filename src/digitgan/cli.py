"""The ``digitgan`` command line: a thin layer that parses options and calls the library.

Every user mistake is a DigitganError: printed as one line, exit status 2, and no
traceback unless ``--debug`` is given. Under torchrun each error is printed by the process
that met it (the others stop with the same status, silently).

Each command imports the library inside its function: ``digitgan --help`` and a mistyped
option answer at once, without loading PyTorch.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
from pathlib import Path

from .errors import ConfigError, DigitganError
from .version import __version__

# train flags that map onto a config field
FIELD_FLAGS = {
    "iters": "train.iters",
    "batch_size": "data.batch_size",
    "seed": "train.seed",
    "dataset": "data.dataset",
    "data_dir": "data.data_dir",
    "device": "train.device",
}


def _train(args) -> int:
    from .config import build_config
    from .training.loop import resume, train

    progress = None if args.progress is None else args.progress
    if args.resume:
        changed = [
            f"--{k.replace('_', '-')}"
            for k in ("preset", "config", "batch_size", "seed", "dataset", "data_dir", "out")
            if getattr(args, k)
        ]
        changed += [f for f, on in (("--dry-run", args.dry_run), ("--force", args.force)) if on]
        changed += ["--seeds"] if args.seeds else []
        if changed:
            raise ConfigError(
                f"--resume continues a run with its own config; {', '.join(changed)} cannot be "
                "given with it (only --iters, --device and --set can)"
            )
        result = resume(
            args.resume,
            iters=args.iters,
            sets=args.set or (),
            device=args.device,
            progress=progress,
        )
        if isinstance(result, list):  # the folder of a --seeds training
            return _report_runs(result)
    else:
        overrides = {
            f: getattr(args, k) for k, f in FIELD_FLAGS.items() if getattr(args, k) is not None
        }
        if args.dry_run:
            overrides.setdefault("train.iters", 2)
            for key in ("sample_every", "print_every", "tb_every", "ckpt_every"):
                overrides[f"log.{key}"] = 1
        if args.seeds and args.seed is not None:
            raise ConfigError("--seed: not with --seeds (which gives every run's seed)")
        cfg = build_config(args.preset, args.config, args.set or (), overrides)
        if args.seeds:
            return _report_runs(
                train(cfg, args.out, force=args.force, progress=progress, seeds=args.seeds)
            )
        result = train(cfg, args.out, force=args.force, progress=progress)
    if env_rank() == 0:
        print(_outcome(result))
    return 130 if result.interrupted else 0


def _outcome(result) -> str:
    state = "interrupted at" if result.interrupted else "finished"
    if result.out_of_time:
        state = "stopped (train.max_minutes spent) at"
    return (
        f"{state} iteration {result.step} in {result.seconds:.1f} s; run directory: "
        f"{result.run_dir}"
    )


def _report_runs(results) -> int:
    """One line per run of ``train --seeds`` (this process's share, under torchrun); status
    2 when a run stopped with an error, 130 when interrupted."""
    for result in results:
        seed = result.run_dir.name
        if result.error:
            print(f"digitgan: error: {seed}: {_one_line(str(result.error))}", file=sys.stderr)
        else:
            print(f"{seed}: {_outcome(result)}")
    if any(r.error for r in results):
        return 2
    return 130 if any(r.interrupted for r in results) else 0


def _seed_list(text: str) -> list[int]:
    """An argparse type: seeds as ``0-7``, ``1,4,9`` or both (``0-3,8``)."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi if dash else lo)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected seeds such as 0-7 or 1,4,9, got {text!r}"
            ) from None
        if last < first:
            raise argparse.ArgumentTypeError(f"{part.strip()!r}: the range is empty")
        if len(seeds) + last - first + 1 > MAX_SEEDS:
            raise argparse.ArgumentTypeError(f"at most {MAX_SEEDS} seeds at once")
        seeds.extend(range(first, last + 1))
    return seeds


MAX_SEEDS = 1024
"""The most runs ``train --seeds`` trains at once."""


def _a(n: int) -> str:
    """``n`` after "a" or "an" as it is read aloud: a 7, an 8, an 11, an 18,000."""
    digits = str(n)
    lead = int(digits[: (len(digits) - 1) % 3 + 1])  # the leading group: 18 of 18000
    return f"{'an' if digits.startswith('8') or lead in (11, 18) else 'a'} {n}"


def _sample(args) -> int:
    from .models.base import category_text
    from .sampling import check_truncation, load, save_image_rows, save_runs_grid
    from .store.checkpoint import runs_in

    psi = check_truncation(args.truncation)  # before loading anything
    category, device = args.category, _device(args.device)
    runs = runs_in(args.source)  # a folder of runs (train --seeds's): a row each
    if runs:
        if args.class_grid or args.walk is not None:
            mode = "--class-grid" if args.class_grid else "--walk"
            raise ConfigError(f"{mode}: of one run; a folder of runs is drawn a row per run")
        options = (args.seed, args.label, psi, category, device)
        path = save_runs_grid(runs, args.out, args.n, *options)
        names = ", ".join(run.name for run in runs)
        what = f"{len(runs)} runs x {args.n} samples (a row each: {names})"
    elif args.class_grid:
        if category is not None:
            raise ConfigError("--category: not with --class-grid (it draws every category)")
        gan = load(args.source, device=device)
        grid = gan.class_grid(args.n, args.seed, truncation=psi)
        path = save_image_rows(grid, args.n, args.out)
        kind = "classes" if gan.num_classes else "categories"
        what = f"{gan.num_classes or gan.categories} {kind} x {args.n} samples"
    elif args.walk is not None:
        walk = load(args.source, device=device).interpolate(
            args.seed, args.walk, args.n, args.label, psi, category
        )
        path = save_image_rows(walk, args.n, args.out)
        what = f"{_a(args.n)}-step walk from seed {args.seed} to seed {args.walk}"
    else:
        gan = load(args.source, device=device)
        path = gan.save_samples(args.out, args.n, args.seed, args.label, psi, category)
        what = f"{args.n} samples"
    if category is not None:
        what += f" of category {category_text(category)}"
    truncated = f" (truncation {psi:g})" if psi != 1 else ""
    print(f"wrote {what}{truncated} to {path}")
    return 0


def _project(args) -> int:
    from .sampling import project_file

    found = project_file(
        args.source,
        args.image,
        args.out,
        fit=args.fit,
        device=_device(args.device),
        label=args.label,
        restarts=args.restarts,
        steps=args.steps,
        seed=args.seed,
        time_limit=args.time_limit,
        walk_to=args.walk_to,
    )
    p = found.projection
    label = "" if found.label is None else f"as {_a(found.label)}, "
    early = " (stopped by --time-limit)" if p.stopped_early else ""
    print(
        f"found {args.image} {label}at distance {float(p.distance[0]):.4f} (root mean squared "
        f"pixel difference, 0-1) after {p.steps} steps{early} in {p.seconds:.1f} s"
    )
    if found.nearest is None:
        print(f"note: {found.nearest_note}")
    else:
        near = ", ".join(
            f"#{int(i)} ({_a(int(y))}, {float(d):.4f})"
            for d, i, y in zip(
                found.nearest_distance, found.nearest_index, found.nearest_label, strict=True
            )
        )
        print(f"nearest training digits to the model's digit: {near}")
    print(f"wrote {', '.join(map(str, found.files))}")
    return 0


def _plot(args) -> int:
    from .store.checkpoint import runs_in
    from .viz import plot_metrics, progress_gif

    runs = runs_in(args.run)  # a folder of runs (train --seeds's): their curves together
    for path in [plot_metrics(runs)] if runs else [plot_metrics(args.run), progress_gif(args.run)]:
        print(f"wrote {path}")
    return 0


def _serve(args) -> int:
    from .serve import serve

    serve(args.source, host=args.host, port=args.port, device=_device(args.device))
    return 0


def _evaluate(args) -> int:
    from .eval.evaluate import evaluate, evaluate_real, save_evaluation
    from .eval.runs import evaluate_runs
    from .store.checkpoint import runs_in

    if args.real == (args.source is not None):
        raise ConfigError(
            "evaluate: give either RUN_OR_CHECKPOINT_OR_FILE.npy or --real (the training split)"
        )
    if args.real and args.labels:
        raise ConfigError("--labels: not with --real (the real digits carry their own labels)")
    truncated = args.truncation is not None
    if truncated:
        from .sampling import check_truncation

        check_truncation(args.truncation)
        if args.real:
            raise ConfigError("--truncation: not with --real (the real digits are not drawn)")
        if args.save:
            raise ConfigError(
                "--truncation: not with --save (eval.json holds the model's plain sampling)"
            )
    cas = _cas_recipe(args)
    common = {"n": args.n, "classifier": args.classifier, "seed": args.seed}
    common |= {"data_dir": args.data_dir, "channels": args.channels}
    several = not args.real and bool(runs_in(args.source))  # each run, and their spread
    if args.real:
        dataset = {"dataset": args.dataset} if args.dataset else {}
        report = evaluate_real(**dataset, **common)
    else:
        report = (evaluate_runs if several else evaluate)(
            args.source,
            dataset=args.dataset,
            device=_device(args.device),
            labels=args.labels,
            **({"truncation": args.truncation} if truncated else {}),
            cas=cas,
            log=lambda line: print(line, file=sys.stderr, flush=True),
            **common,
        )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.table())
    if args.save:
        if args.real or Path(args.source).suffix == ".npy":
            raise ConfigError("--save: only a run or checkpoint's evaluation is saved")
        reports = list(report.reports.values()) if several else [report]
        # a stacked dataset's report holds its floor, made with the run's own options
        first = reports[0]
        floor = None if first.floor is not None else evaluate_real(first.dataset, **common)
        for one in reports:
            print(f"wrote {save_evaluation(one.source, one, floor)}")
    return 0


CAS_FLAGS = {"cas_n": "n", "cas_epochs": "epochs", "cas_batch_size": "batch_size", "cas_lr": "lr"}
"""evaluate's --cas-* options and the CasRecipe fields they set."""


def _cas_recipe(args):
    """The CasRecipe that evaluate's --cas and --cas-* options ask for (None without --cas)."""
    given = {field: getattr(args, flag) for flag, field in CAS_FLAGS.items()}
    given = {field: value for field, value in given.items() if value is not None}
    if not args.cas:
        if given:
            raise ConfigError(f"--cas-{next(iter(given)).replace('_', '-')}: only with --cas")
        return None
    if args.real:
        raise ConfigError(
            "--cas: not with --real (evaluate RUN --cas scores real training digits beside the "
            "model's)"
        )
    from .eval.evaluate import CasRecipe

    return CasRecipe(**given)


def _export(args) -> int:
    from .export import export

    result = export(args.source, args.out, force=args.force, onnx=args.onnx, web=args.web)
    for note in result.notes:
        print(f"note: {note}")
    if result.onnx_max_diff is not None:
        print(
            f"ONNX (opset {result.onnx_opset}) checked with ONNX Runtime on fresh noise: max abs "
            f"difference from PyTorch {result.onnx_max_diff:.2e}"
        )
    print(
        f"exported {', '.join(result.files)} to {result.path} in {result.seconds:.1f} s "
        f"(load it with digitgan.load or any digitgan command)"
    )
    if result.web is not None:
        print(
            f"wrote the web page to {result.web}: serve the folder from any static file host, "
            f"e.g. python -m http.server --directory {shlex.quote(str(result.web))}"
        )
    return 0


def _classifier(args) -> int:
    from .eval.classifier import train_classifier

    epochs = {"epochs": args.epochs} if args.epochs is not None else {}
    report = train_classifier(
        args.dataset, args.out, seed=args.seed, data_dir=args.data_dir, **epochs
    )
    test = "n/a" if report.test_accuracy is None else f"{report.test_accuracy:.4f}"
    print(
        f"wrote {report.path} (sha256 {report.sha256}) in {report.seconds:.0f} s; validation "
        f"accuracy {report.val_accuracy:.4f}, test accuracy {test}"
    )
    return 0


def _device(name: str):
    from .config import resolve_device

    return resolve_device(name)


def _data(args) -> int:
    from . import data

    if args.data_cmd == "list":
        rows = [(e.name, e.description) for e in data.list_datasets()]
        width = max(len(r[0]) for r in rows)
        for name, desc in rows:
            print(f"{name:<{width}}  {desc}")
        print(f"{'idx:DIR':<{width}}  a folder with the four MNIST-style IDX files (.gz or not)")
        print(f"{'npz:FILE':<{width}}  a Keras-style mnist.npz (x_train, y_train, x_test, y_test)")
        return 0
    if args.data_cmd == "info":
        info = data.dataset_info(args.name, args.data_dir)
        if args.json:
            print(json.dumps(info, indent=2, default=str))
            return 0
        for key, value in info.items():
            if isinstance(value, dict):  # label counts per split
                value = "; ".join(f"{k} {v}" for k, v in value.items())
            elif isinstance(value, (list, tuple)):
                value = " ".join(map(str, value))
            print(f"{key:<13} {value}")
        return 0
    checks = data.verify_dataset(args.name, args.data_dir)
    for c in checks:
        print(f"{c.status:<8}  {c.path}")
    bad = [c for c in checks if c.status != "ok"]
    if bad:
        print(f"{len(bad)} of {len(checks)} files missing or not matching their checksums")
        return 1
    print(f"all {len(checks)} files match their checksums")
    return 0


def _presets(args) -> int:
    from .config import PRESETS

    width = max(map(len, PRESETS))
    for name, (doc, _) in PRESETS.items():
        print(f"{name:<{width}}  {doc}")
    return 0


def _config(args) -> int:
    from .config import build_config, describe

    cfg = build_config(args.preset, args.config, args.set or ())
    if args.explain:
        for key, tname, default, help_text in describe():
            print(f"{key:<20} {tname:<9} default {default!r}\n    {help_text}")
        return 0
    print(cfg.to_toml(), end="")
    return 0


def _int(lo: int, hi: int):
    """An argparse type: an integer in lo..hi (a parse error of one line otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is not in {lo}..{hi}")
        return value

    return parse


SEED = _int(0, 2**63 - 1)
"""A noise seed: any integer torch's generators take."""


def _category(text: str) -> int | list[int | None]:
    """An argparse type: a learnt category, ``7``, or part by part, ``3,any,7`` (the model
    checks the range)."""
    one = _int(0, 2**31 - 1)
    if "," not in text:
        return one(text)
    return [None if v.strip() == "any" else one(v.strip()) for v in text.split(",")]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other digitgan error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="digitgan",
        description="Train, sample and inspect generative adversarial networks on small images.",
    )
    p.add_argument("--version", action="version", version=f"digitgan {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.add_argument(
        "--plugin",
        action="append",
        metavar="MODULE",
        help="import MODULE first (repeatable): its registered architectures, objectives, "
        "penalties and datasets become choosable (see the extending docs)",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser(
        "train",
        help="train a GAN (default: the seed preset on mnist20k)",
        description="Train a GAN. With no options: the seed preset on mnist20k.",
    )
    t.add_argument("--preset", help="named configuration (see `digitgan presets`; default seed)")
    t.add_argument("--config", metavar="FILE", help="TOML file with config sections")
    t.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="set any config field (repeatable), e.g. --set optim.lr_g=2e-4",
    )
    t.add_argument("--iters", type=int, help="total iterations (train.iters)")
    t.add_argument("--batch-size", type=int, help="batch size (data.batch_size)")
    t.add_argument("--seed", type=int, help="random seed (train.seed)")
    t.add_argument(
        "--seeds",
        type=_seed_list,
        metavar="LIST",
        help="train one run per seed into --out/seed-N each (e.g. 0-7 or 1,4,9): at once, "
        "their models stacked, or one after another (train.seeds_mode); under torchrun the "
        "seeds are divided among the processes",
    )
    t.add_argument("--dataset", help="dataset spec (data.dataset): name, idx:DIR or npz:FILE")
    t.add_argument("--data-dir", help="download cache (data.data_dir; env DIGITGAN_DATA)")
    t.add_argument("--device", help="auto, cpu, cuda or cuda:N (train.device)")
    t.add_argument("--out", metavar="DIR", help="run directory (default runs/<preset>-<time>)")
    t.add_argument("--force", action="store_true", help="replace an existing run directory")
    t.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run in DIR from its latest checkpoint (--iters, --device and --set "
        "may change settings; not the model, dataset or seed); DIR may be the folder of a "
        "--seeds training, whose runs continue at once",
    )
    t.add_argument(
        "--dry-run",
        action="store_true",
        help="smoke test: 2 iterations (unless --iters), every output written",
    )
    t.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: when the terminal is interactive)",
    )
    t.set_defaults(func=_train)

    s = sub.add_parser("sample", help="draw samples from a trained run or checkpoint")
    s.add_argument(
        "source",
        metavar="RUN_OR_CHECKPOINT",
        help="a folder of runs (train --seeds's) draws a PNG row of --n samples per run, every "
        "row from the same noise",
    )
    s.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    s.add_argument(
        "--out",
        required=True,
        metavar="FILE",
        help=".png for a grid, .npy for a uint8 array (N, H, W) of grey images or "
        "(N, C, H, W) of colour ones",
    )
    s.add_argument("--seed", type=SEED, default=0, help="noise seed (default 0)")
    s.add_argument(
        "--label",
        type=_int(0, 2**31 - 1),
        help="conditional models: draw this class (default: all classes in turn)",
    )
    s.add_argument(
        "--category",
        type=_category,
        help="models with learnt categories (model.categories): draw this category; of a code "
        "in parts (model.code_parts), one value per part, 'any' for a part left to the noise, "
        "e.g. 3,any,7",
    )
    mode = s.add_mutually_exclusive_group()
    mode.add_argument(
        "--class-grid",
        action="store_true",
        help="conditional models: one row per class, --n samples each (.png); models with "
        "learnt categories: one row per category",
    )
    mode.add_argument(
        "--walk",
        type=SEED,
        metavar="SEED_B",
        help="latent walk from --seed to SEED_B in --n steps (.png)",
    )
    s.add_argument(
        "--truncation",
        type=float,
        default=1.0,
        metavar="PSI",
        help="the truncation trick: pull the noise toward its mean by PSI, from 0 (every "
        "sample at the mean) to 1 (default: plain sampling); smaller is more typical, "
        "less varied",
    )
    s.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    s.set_defaults(func=_sample)

    v = sub.add_parser(
        "serve",
        help="a web page (and JSON/PNG API) for drawing digits with a trained model",
        description="Serve a page for drawing samples, class grids and latent walks with a "
        "trained model, and the HTTP API behind it (see README). Stop it with Ctrl-C.",
    )
    v.add_argument("source", metavar="RUN_OR_CHECKPOINT")
    v.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0 for all, "
        "which also answers to any Host name)",
    )
    v.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free)")
    v.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    v.set_defaults(func=_serve)

    j = sub.add_parser(
        "project",
        help="find a drawn digit in a trained model: its closest digit, the nearest training "
        "digits and a walk",
        description="Find IMAGE (a drawing, PNG or another image file) in a trained model: "
        "the noise (and for a conditional model the class) whose digit is closest to it, the "
        "training digits nearest to that digit, and a latent walk from it. Writes "
        "projection.png, walk.png and projection.json into --out.",
    )
    j.add_argument("source", metavar="RUN_OR_CHECKPOINT")
    j.add_argument("image", metavar="IMAGE", help="the drawing: PNG, JPEG, GIF, BMP, WebP, PGM")
    j.add_argument("--out", required=True, metavar="DIR", help="folder for the results")
    j.add_argument(
        "--label",
        type=_int(0, 2**31 - 1),
        help="conditional models: search this class only (default: every class)",
    )
    j.add_argument(
        "--restarts",
        type=_int(1, 64),
        default=4,
        help="noise vectors searched from, per class (default 4)",
    )
    j.add_argument(
        "--steps", type=_int(0, 10_000), default=300, help="optimiser steps (default 300)"
    )
    j.add_argument("--seed", type=SEED, default=0, help="seed of the restarts' noise (default 0)")
    j.add_argument(
        "--time-limit",
        type=float,
        metavar="SECONDS",
        help="stop the search after this long, keeping the best found (default: none)",
    )
    j.add_argument(
        "--walk-to",
        type=SEED,
        default=1,
        metavar="SEED",
        help="the walk runs from the found digit toward this seed's noise (default 1)",
    )
    j.add_argument(
        "--fit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="scale the ink into a 20x20 box centred by mass, as MNIST (default); "
        "--no-fit resizes the whole image",
    )
    j.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    j.set_defaults(func=_project)

    d = sub.add_parser("data", help="list, describe and verify datasets")
    dsub = d.add_subparsers(dest="data_cmd", required=True, metavar="ACTION")
    dsub.add_parser("list", help="the known datasets")
    for name, helptext in (
        ("info", "sizes, shape, location of a dataset"),
        ("verify", "check a dataset's files against their checksums"),
    ):
        x = dsub.add_parser(name, help=helptext)
        x.add_argument("name", nargs="?", default="mnist20k", help="dataset (default mnist20k)")
        x.add_argument("--data-dir", help="download cache (env DIGITGAN_DATA)")
        if name == "info":
            x.add_argument("--json", action="store_true", help="print JSON")
    d.set_defaults(func=_data)

    pl = sub.add_parser(
        "plot",
        help="draw a run's curves (PNG) and a GIF of its sample grids; of a folder of runs "
        "(train --seeds's), their curves together",
    )
    pl.add_argument("run", metavar="RUN_DIR")
    pl.set_defaults(func=_plot)

    e = sub.add_parser(
        "evaluate",
        help="score generated digits against the test split (FID, KID, precision/recall, ...)",
        description="Every metric of a model's samples (or a .npy of uint8 images, or with "
        "--real the real training split: the floor no model beats) against the dataset's test "
        "split, on the bundled classifier's features; of a folder of runs, each run's and "
        "their median and range.",
    )
    e.add_argument(
        "source",
        nargs="?",
        metavar="RUN_OR_CHECKPOINT_OR_FILE.npy",
        help="a folder of runs (train --seeds's) scores each run alike and gives every metric's "
        "median and range over them",
    )
    e.add_argument("--real", action="store_true", help="score the real training split instead")
    e.add_argument(
        "--n",
        type=int,
        help="samples to draw (default 10000, a stacked dataset 26000; a .npy file: all its "
        "images)",
    )
    e.add_argument(
        "--channels",
        action="store_true",
        help="a stacked dataset: also the usual metrics of each channel, against the dataset "
        "stacked (red/fid, ...)",
    )
    e.add_argument(
        "--labels",
        metavar="LABELS.npy",
        help="a .npy input's intended classes (integers, one per image): adds label accuracy "
        "(a conditional model's are its requested classes)",
    )
    e.add_argument("--dataset", help="dataset to compare with (default: the run's, or mnist20k)")
    e.add_argument("--data-dir", help="download cache (env DIGITGAN_DATA)")
    e.add_argument(
        "--classifier", metavar="FILE", help="classifier weights (default: the shipped one)"
    )
    e.add_argument("--seed", type=SEED, default=0, help="noise or subset seed (default 0)")
    e.add_argument(
        "--truncation",
        type=float,
        metavar="PSI",
        help="a model draws with the truncation trick at PSI, 0 to 1 (default 1: plain "
        "sampling; see `digitgan sample --help`)",
    )
    e.add_argument("--device", default="cpu", help="where the generator runs (default cpu)")
    e.add_argument(
        "--cas",
        action="store_true",
        help="conditional models: also the classification accuracy score, the test accuracy "
        "of a classifier trained on --cas-n samples alone, beside one trained on as many real "
        "training digits (about 4 minutes on 2 CPU cores with the defaults)",
    )
    e.add_argument(
        "--cas-n", type=int, metavar="N", help="--cas: samples to train on (default 10000)"
    )
    e.add_argument(
        "--cas-epochs", type=int, metavar="E", help="--cas: training epochs (default 20)"
    )
    e.add_argument(
        "--cas-batch-size", type=int, metavar="B", help="--cas: batch size (default 128)"
    )
    e.add_argument(
        "--cas-lr", type=float, metavar="LR", help="--cas: peak learning rate (default 0.002)"
    )
    e.add_argument("--json", action="store_true", help="print JSON")
    e.add_argument(
        "--save",
        action="store_true",
        help="also score the real-data floor and write both to RUN/eval.json "
        "(shown by `digitgan serve`)",
    )
    e.set_defaults(func=_evaluate)

    x = sub.add_parser(
        "export",
        help="write a self-contained model folder: generator, config, model card, samples",
        description="Export a run's generator (its EMA where it has one) as a folder of "
        "model.safetensors, config.json, a model card README.md and samples.png (with --onnx "
        "also generator.onnx, checked with ONNX Runtime); digitgan.load and every digitgan "
        "command read the folder back. With --web, also a folder with a static web page that "
        "draws with the model in the browser.",
    )
    x.add_argument("source", metavar="RUN_OR_CHECKPOINT")
    x.add_argument("--out", required=True, metavar="DIR", help="the model folder to write")
    x.add_argument(
        "--force",
        action="store_true",
        help="replace an existing model folder (and --web folder) that digitgan exported "
        "(never another folder)",
    )
    x.add_argument(
        "--onnx",
        action="store_true",
        help="also write generator.onnx (images in [0, 1]; needs the [export] extra)",
    )
    x.add_argument(
        "--web",
        metavar="DIR",
        help="also write a static web page that draws with the model in the browser (ONNX "
        "Runtime Web, downloaded once from the npm registry; implies --onnx)",
    )
    x.set_defaults(func=_export)

    cl = sub.add_parser("classifier", help="train the digit classifier behind the metrics")
    clsub = cl.add_subparsers(dest="classifier_cmd", required=True, metavar="ACTION")
    ct = clsub.add_parser(
        "train",
        help="train a classifier on a dataset's training split",
        description="Train the LeNet-like classifier whose features the metrics use; "
        "reproducible from this command and --seed.",
    )
    ct.add_argument("--dataset", required=True, help="dataset spec: name, idx:DIR or npz:FILE")
    ct.add_argument("--out", required=True, metavar="FILE", help="weights file (.safetensors)")
    ct.add_argument("--seed", type=_int(0, 2**31 - 1), default=0, help="random seed (default 0)")
    ct.add_argument("--epochs", type=_int(1, 10_000), help="training epochs (default 20)")
    ct.add_argument("--data-dir", help="download cache (env DIGITGAN_DATA)")
    cl.set_defaults(func=_classifier)

    pr = sub.add_parser("presets", help="list the named configurations")
    pr.set_defaults(func=_presets)

    c = sub.add_parser("config", help="print a resolved configuration as TOML")
    c.add_argument("--preset")
    c.add_argument("--config", metavar="FILE")
    c.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    c.add_argument("--explain", action="store_true", help="list every field with its help")
    c.set_defaults(func=_config)
    return p


def _one_line(text: str) -> str:
    """``text`` with every character that is not printable (a newline, a control character
    in a file name) written as its escape, so that an error stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def env_rank() -> int:
    """This process's rank as torchrun set it in the environment (0 without torchrun)."""
    rank = os.environ.get("RANK", "0")
    return int(rank) if rank.isdigit() else 0


def _import_plugins(names: list[str]) -> None:
    for name in names:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError(f"--plugin {name!r}: not a module name (such as mypackage.gans)")
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"--plugin {name}: cannot import it ({e})") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _import_plugins(args.plugin or [])
        return args.func(args)
    except DigitganError as e:
        if args.debug:
            raise
        if getattr(e, "origin_rank", None) is None:  # not a copy of another rank's error
            rank = env_rank()
            where = f"(rank {rank}) " if rank else ""
            print(f"digitgan: error: {where}{_one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # the system refused a file operation the library did not foresee
        if args.debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"digitgan: error: {_one_line(where + str(e.strerror or e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("digitgan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
