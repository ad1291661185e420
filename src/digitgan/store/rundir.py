"""The run directory: where one training run keeps everything it writes.

DIR/config.toml        the complete resolved configuration
DIR/metrics.jsonl      one JSON object per logged step
DIR/samples/NNN.png    sample grids from a fixed noise batch, NNN = step / log.sample_every
DIR/samples/final.png  the grid at the end of training
DIR/tb/                TensorBoard event files
DIR/checkpoints/       step-NNNNNNN.safetensors (+ .json) and latest.safetensors (+ .json);
                       best.safetensors (+ .json), the lowest FID so far, with log.eval_every
DIR/plots/              curves and the sample GIF (``digitgan plot``)
DIR/eval.json          scores of ``digitgan evaluate --save``
DIR/.lock              held by the process that trains in DIR (see :class:`RunLock`)
DIR/.digitgan-run      the marker that says DIR is a run digitgan made (see :meth:`RunDir.foreign`)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import RunDirError
from ..fileio import (
    MAX_METRICS_BYTES,
    atomic_write_text,
    is_partial_file,
    read_jsonl,
    remove_partial_files,
)

try:
    import fcntl
except ImportError:  # Windows: no flock(2); runs are not locked there
    fcntl = None

LOCK_NAME = ".lock"
MARKER_NAME = ".digitgan-run"
KNOWN = {
    "config.toml": "file",
    "metrics.jsonl": "file",
    "eval.json": "file",
    LOCK_NAME: "file",
    MARKER_NAME: "file",
    "samples": "dir",
    "tb": "dir",
    "checkpoints": "dir",
    "plots": "dir",
}
"""What digitgan puts in a run directory: every name, and whether it is a file or a folder."""


class RunLock:
    """An exclusive lock on a run directory, so that two processes never train into it.

    The lock is ``flock(2)`` on ``DIR/.lock``. The kernel releases it when the holding
    process ends, however it ends (SIGKILL and power cuts included), so a crashed trainer can
    never leave its run locked, and no guess about whether an old PID is still alive is
    needed. The file holds the holder's PID, host and start time, for the message a second
    process shows. It is never deleted: a process could otherwise lock a file that another
    has just unlinked, and both would believe they own the run.
    """

    def __init__(self, root: Path):
        self.path = root / LOCK_NAME
        self._file = None

    def acquire(self) -> None:
        """Take the lock, or raise RunDirError naming the process that holds it."""
        if fcntl is None:
            return
        f = self.path.open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read(500).strip() or "another process"  # (what acquire() writes)
            f.close()
            raise RunDirError(
                f"run directory {self.path.parent} is in use by {holder}; wait for that "
                "training to finish or stop it, or choose another --out"
            ) from None
        except BaseException:
            f.close()
            raise
        f.seek(0)
        f.truncate()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        f.write(f"digitgan PID {os.getpid()} on host {socket.gethostname()} since {stamp}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the last descriptor releases the flock
            self._file = None


class RunDir:
    """The paths of a run directory. :meth:`create` and :meth:`open` return one that holds the
    run's lock; use it as a context manager (or call :meth:`close`) to release it."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.lock = RunLock(self.root)
        self.samples = self.root / "samples"
        self.tb = self.root / "tb"
        self.checkpoints = self.root / "checkpoints"
        self.config = self.root / "config.toml"
        self.metrics = self.root / "metrics.jsonl"

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Release the run's lock."""
        self.lock.release()

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

    def foreign(self) -> list[str]:
        """What in this folder digitgan did not make, so that ``--force`` must not delete it:
        every entry but the known files and folders of a run (and the half-written files of an
        interrupted atomic write), or, without the run marker (digitgan 0.1.0's runs have
        none), the whole folder unless it has config.toml and a run's sub-folders."""
        entries = sorted(self.root.iterdir())
        odd = [
            p.name + ("/" if p.is_dir() else "")
            for p in entries
            if not is_partial_file(p)
            and KNOWN.get(p.name) != ("dir" if p.is_dir() and not p.is_symlink() else "file")
        ]
        if odd:
            return odd
        marked = (self.root / MARKER_NAME).is_file()
        legacy = self.is_run() and any((self.root / d).is_dir() for d in ("checkpoints", "tb"))
        return [] if marked or legacy else [p.name for p in entries if p.name != LOCK_NAME]

    @classmethod
    def create(cls, root: str | Path, force: bool = False) -> RunDir:
        """A new, empty, locked run directory. An existing one is replaced only with ``force``.

        ``force`` deletes only a run directory digitgan made (its marker file and nothing but
        the files a run holds: :meth:`foreign`) or an empty folder, never another folder, and
        never a run that another process is training.
        """
        run = cls(root)
        if run.root.exists() and not run.root.is_dir():
            raise RunDirError(f"--out {run.root}: exists and is not a directory")
        old = [p for p in run.root.iterdir() if p.name != LOCK_NAME] if run.root.is_dir() else []
        if old:
            if not force:
                raise RunDirError(
                    f"run directory {run.root} already exists; use --resume {run.root} to "
                    "continue it, --force to replace it, or another --out"
                )
            if odd := run.foreign():
                shown = ", ".join(odd[:5]) + (f" and {len(odd) - 5} more" if len(odd) > 5 else "")
                raise RunDirError(
                    f"--out {run.root}: not a digitgan run directory (it holds {shown}, which "
                    "digitgan did not write); refusing to delete it, even with --force"
                )
        run._lock_and_prepare("--out", old)
        try:
            atomic_write_text(run.root / MARKER_NAME, "a run directory of digitgan\n")
        except OSError as e:
            run.close()
            raise RunDirError(f"--out {run.root}: cannot write in it: {e.strerror or e}") from e
        return run

    @classmethod
    def open(cls, root: str | Path) -> RunDir:
        """An existing run directory, locked, for resuming."""
        run = cls(root)
        if not run.root.is_dir():
            raise RunDirError(f"--resume {run.root}: no such run directory")
        if not run.is_run():
            raise RunDirError(f"--resume {run.root}: not a digitgan run (no config.toml)")
        run._lock_and_prepare("--resume")
        return run

    def _lock_and_prepare(self, flag: str, replace: Sequence[Path] = ()) -> None:
        """Make the folder, lock it, delete ``replace`` (an old run's files) and whatever a
        killed process left half-written, and make the sub-folders."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
            try:
                for p in replace:
                    if p.is_dir() and not p.is_symlink():
                        shutil.rmtree(p)
                    else:
                        p.unlink()
                for d in (self.samples, self.tb, self.checkpoints):
                    d.mkdir(exist_ok=True)
                for d in (self.root, self.samples, self.checkpoints):
                    remove_partial_files(d)
            except BaseException:
                self.close()
                raise
        except OSError as e:
            raise RunDirError(f"{flag} {self.root}: cannot use it: {e.strerror or e}") from e

    def write_config(self, toml_text: str) -> None:
        atomic_write_text(self.config, toml_text)

    def append_metrics(self, record: dict) -> None:
        with self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        """The records of metrics.jsonl (none if it is missing), at most MAX_METRICS_BYTES of
        them; damaged lines (cut short by a crash, not JSON, not UTF-8) are skipped."""
        return read_jsonl(self.metrics, MAX_METRICS_BYTES, "metrics file", RunDirError)

    def truncate_metrics(self, step: int) -> None:
        """Drop the records of iterations ``step`` and later: a resume from a checkpoint taken
        after ``step`` iterations redoes them (a crash may have come after their record).
        Damaged lines are dropped too."""
        if not self.metrics.exists():
            return
        kept = [r for r in self.read_metrics() if _is_step(r.get("step")) and r["step"] < step]
        atomic_write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))

    def grid_path(self, index: int) -> Path:
        return self.samples / f"{index:03d}.png"


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint belongs to (RUN/checkpoints/x -> RUN), else its folder."""
    checkpoint = Path(checkpoint)
    parent = checkpoint.parent
    return parent.parent if parent.name == "checkpoints" else parent


def _is_step(value) -> bool:
    """Whether a record's ``step`` is a number of iterations (an int, not a bool)."""
    return type(value) is int
