"""A full 10,000-iteration run of the seed preset on the CPU, compared with the article.

Trains `digitgan train` (the seed preset, all outputs) into a temporary directory,
prints the seed-style losses every 1,000 iterations beside the ones the article
printed, the wall time, and copies the last sample grid (upscaled 3x) to
benchmarks/assets/seed-final.png.

Usage: python benchmarks/bench_seed_run.py [--seed 0] [--record]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import markdown_table, record
from PIL import Image

import digitgan

# What the article's TF 1.3 run printed (iteration: D loss, G loss).
ARTICLE = {
    0: (2.182, 1.512),
    1000: (0.03771, 9.551),
    2000: (0.009744, 6.254),
    3000: (0.05684, 7.012),
    4000: (0.147, 5.546),
    5000: (0.1608, 6.116),
    6000: (0.1224, 6.683),
    7000: (0.2813, 4.842),
    8000: (0.3479, 4.619),
    9000: (0.5232, 3.558),
}
ASSET = Path(__file__).parent / "assets" / "seed-final.png"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    cfg = digitgan.preset("seed").replace(train__seed=args.seed, train__device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = digitgan.train(cfg, Path(tmp) / "run", progress=False)
        wall = time.perf_counter() - t0
        logged = {}
        for line in (result.run_dir / "metrics.jsonl").read_text().splitlines():
            r = json.loads(line)
            logged[r["step"]] = (r["D_loss"], r["G_loss"])
        with Image.open(result.run_dir / "samples" / "final.png") as im:
            ASSET.parent.mkdir(exist_ok=True)
            im.resize((im.width * 3, im.height * 3), Image.NEAREST).save(ASSET)
    rows = [
        [it, f"{logged[it][0]:.4}", f"{logged[it][1]:.4}", f"{d:.4}", f"{g:.4}"]
        for it, (d, g) in ARTICLE.items()
    ]
    table = markdown_table(
        [
            "iteration",
            "D loss (digitgan)",
            "G loss (digitgan)",
            "D loss (article)",
            "G loss (article)",
        ],
        rows,
    )
    summary = (
        f"Wall time for 10,000 iterations with every output: {wall:.1f} s "
        f"({10_000 / wall:.0f} it/s). Last sample grid: `benchmarks/assets/"
        f"seed-final.png`."
    )
    print(table + "\n\n" + summary)
    if args.record:
        record(
            f"Seed preset, full 10,000-iteration CPU run (seed {args.seed})",
            table + "\n\n" + summary,
        )


if __name__ == "__main__":
    main()
