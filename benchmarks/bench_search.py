"""A recorded search over training recipes: FID against training time for named variants.

``--variants FILE`` is a TOML file whose every table is one variant: ``preset`` names the
starting preset, ``note`` says what the variant tries, and the other keys are config values
(``[name.train] iters = 20000`` or ``"train.iters" = 20000``). Each variant (``--only`` picks
some) is trained once, one at a time, with ``log.eval_every`` and ``log.eval_samples`` (FID
against the test split with the shipped classifier, as during any training run), and its run
folder is kept under ``--out`` for a full ``digitgan evaluate`` afterwards; a finished run of
the same configuration found there is read instead of trained again, so the table of a search
run piecemeal (``--only``, one process per core) is recorded with one last call.

Printed (and with ``--record`` appended to RESULTS.md): per variant, what it changes, its
iterations and training seconds (evaluations excluded), FID as a multiple of the real-data
floor at each evaluation, and the best point with its KL to uniform class shares and mean
classifier confidence. Search runs are single seeds: a screen, not a quality claim (that is
bench_quality.py's median over 3 seeds).

Usage: python benchmarks/bench_search.py --variants benchmarks/search/unconditional.toml
    [--only a,b] [--seed 0] [--n 10000] [--eval-every N] [--threads T] [--out DIR] [--record]
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import torch
from bench_time_to_quality import curve
from common import markdown_table, record

import digitgan
from digitgan.config import apply_dict, preset, validate
from digitgan.eval.evaluate import evaluate_real


def variant_config(name: str, table: dict) -> tuple[digitgan.Config, str]:
    table = dict(table)
    base, note = table.pop("preset", "seed"), table.pop("note", "")
    cfg = preset(base)
    apply_dict(cfg, table, f"variant {name}")
    validate(cfg)
    changes = ", ".join(f"{k}={v}" for k, v in _flat(table).items())
    return cfg, f"{base}{' + ' + changes if changes else ''}" + (f" ({note})" if note else "")


def finished(run: Path, cfg: digitgan.Config) -> bool:
    """Whether ``run`` is a finished run of ``cfg`` (kept from an earlier call: not trained
    again)."""
    try:
        saved = digitgan.build_config(None, run / "config.toml")
        last = curve(run)[-1][1]
    except (OSError, IndexError, digitgan.DigitganError):
        return False
    return saved == cfg and last == cfg.train.iters


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", required=True, help="TOML file of variants")
    ap.add_argument("--only", help="comma-separated variant names (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n", type=int, default=10_000, help="samples per evaluation")
    ap.add_argument("--eval-every", type=int, help="default: a tenth of the iterations")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", default="search-runs", help="folder for the run folders")
    ap.add_argument("--record", action="store_true", help="append the table to RESULTS.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = tomllib.loads(Path(args.variants).read_text())
    names = args.only.split(",") if args.only else list(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        raise SystemExit(f"{args.variants}: no variant named {', '.join(unknown)}")
    floors: dict[str, float] = {}
    rows = []
    for name in names:
        cfg, what = variant_config(name, variants[name])
        dataset = cfg.data.dataset
        if dataset not in floors:
            floors[dataset] = evaluate_real(dataset, n=args.n).metrics["fid"]
        every = args.eval_every or max(1, cfg.train.iters // 10)
        cfg = cfg.replace(
            train__seed=args.seed,
            train__device="cpu",
            log__eval_every=every,
            log__eval_samples=args.n,
        )
        out = Path(args.out) / name
        if not finished(out, cfg):
            digitgan.train(cfg, out, progress=False, force=True)
        points = curve(out)
        floor = floors[dataset]
        best = min(points, key=lambda p: p[2]["fid"])
        rows.append(
            [
                name,
                what,
                points[-1][1],
                f"{points[-1][0]:.0f}",
                " ".join(f"{p[2]['fid'] / floor:.1f}" for p in points),
                f"{best[2]['fid'] / floor:.2f}x at {best[1]} ({best[0]:.0f} s)",
                f"{best[2].get('kl_uniform', float('nan')):.4f}",
                f"{best[2].get('mean_confidence', float('nan')):.3f}",
            ]
        )
        print(markdown_table(HEAD, rows[-1:]), flush=True)
    table = markdown_table(HEAD, rows)
    print(table)
    if args.record:
        floor_text = ", ".join(f"{d} {f:.3f}" for d, f in floors.items())
        note = (
            f"Variants of `{args.variants}`, seed {args.seed}, trained on the CPU with "
            f"{args.threads} torch thread(s) (training seconds compare only runs trained under "
            f"the same load); FID of {args.n:,} samples (EMA generator where the "
            f"run has one) against the test split every {args.eval_every or 'tenth of the'} "
            f"iterations, as a multiple of the real-data floor ({floor_text}). One seed each: a "
            f"screen, not a quality claim. A finished run kept in `--out` is read, not trained "
            f"again."
        )
        record(f"Recipe search: {Path(args.variants).stem}", f"{note}\n\n{table}")


HEAD = [
    "variant",
    "what it changes",
    "iterations",
    "training s",
    "FID / floor at each evaluation",
    "best",
    "KL to uniform then",
    "mean confidence then",
]


if __name__ == "__main__":
    main()
