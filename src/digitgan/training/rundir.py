"""The run directory: where one training run keeps everything it writes.

DIR/config.toml        the complete resolved configuration
DIR/metrics.jsonl      one JSON object per logged step
DIR/samples/NNN.png    sample grids from a fixed noise batch, NNN = step / log.sample_every
DIR/samples/final.png  the grid at the end of training
DIR/tb/                TensorBoard event files
DIR/checkpoints/       step-NNNNNNN.safetensors (+ .json) and latest.safetensors (+ .json);
                       best.safetensors (+ .json), the lowest FID so far, with log.eval_every
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from ..errors import RunDirError
from ..fileio import atomic_write_text


class RunDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.samples = self.root / "samples"
        self.tb = self.root / "tb"
        self.checkpoints = self.root / "checkpoints"
        self.config = self.root / "config.toml"
        self.metrics = self.root / "metrics.jsonl"

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    @staticmethod
    def default_path(preset: str, base: str | Path = "runs") -> Path:
        """``runs/<preset>-<YYYYmmdd-HHMMSS>``, with a suffix if that exists already."""
        stem = Path(base) / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = stem, 1
        while path.exists():
            n += 1
            path = stem.with_name(f"{stem.name}-{n}")
        return path

    def is_run(self) -> bool:
        return self.config.is_file()

    @classmethod
    def create(cls, root: str | Path, force: bool = False) -> RunDir:
        """A new, empty run directory. An existing one is replaced only with ``force``.

        ``force`` deletes only a digitgan run directory (one with config.toml) or an empty
        folder, never an unrelated folder.
        """
        run = cls(root)
        if run.root.exists() and not run.root.is_dir():
            raise RunDirError(f"--out {run.root}: exists and is not a directory")
        if run.root.is_dir() and any(run.root.iterdir()):
            if not force:
                raise RunDirError(
                    f"run directory {run.root} already exists; use --resume {run.root} to "
                    "continue it, --force to replace it, or another --out"
                )
            if not run.is_run():
                raise RunDirError(
                    f"--out {run.root}: not empty and not a digitgan run (no config.toml); "
                    "refusing to delete it, even with --force"
                )
            shutil.rmtree(run.root)
        for d in (run.root, run.samples, run.tb, run.checkpoints):
            d.mkdir(parents=True, exist_ok=True)
        return run

    @classmethod
    def open(cls, root: str | Path) -> RunDir:
        """An existing run directory, for resuming."""
        run = cls(root)
        if not run.root.is_dir():
            raise RunDirError(f"--resume {run.root}: no such run directory")
        if not run.is_run():
            raise RunDirError(f"--resume {run.root}: not a digitgan run (no config.toml)")
        for d in (run.samples, run.tb, run.checkpoints):
            d.mkdir(exist_ok=True)
        return run

    def write_config(self, toml_text: str) -> None:
        atomic_write_text(self.config, toml_text)

    def append_metrics(self, record: dict) -> None:
        with self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def truncate_metrics(self, step: int) -> None:
        """Drop records logged after ``step`` (they belong to work a resume will redo)."""
        if not self.metrics.exists():
            return
        kept = []
        for line in self.metrics.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a crash
        atomic_write_text(self.metrics, "".join(k + "\n" for k in kept))

    def grid_path(self, index: int) -> Path:
        return self.samples / f"{index:03d}.png"
