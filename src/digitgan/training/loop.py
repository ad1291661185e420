"""The training loop: steps until done, periodic work as hooks; ``train`` and ``resume``.

:func:`fit` runs :class:`~.step.Step` until ``iters`` iterations are done or a hook asks
to stop, calling every :class:`~.hooks.Hook` around the steps. :func:`train` and
:func:`resume` build the trainer, the step and the run directory, and call it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, apply_sets, resolve_device
from ..data import Dataset, load_dataset
from ..errors import CheckpointError, ConfigError, RunDirError
from ..store.checkpoint import (
    LATEST,
    SUFFIX,
    check_models,
    checkpoint_config,
    parse_checkpoint,
    read_checkpoint_bytes,
)
from ..store.rundir import RunDir
from .dense import DenseStep
from .distributed import SINGLE, Dist, session
from .hooks import Hook, default_hooks, make_scorer
from .logger import RunLogger
from .step import Step, StepResult, features, read_scalars
from .trainer import Trainer

KERNELS: list[type[Step]] = [DenseStep]
"""Specialised steps, tried in order before the generic one (see :func:`make_step`)."""


def make_step(trainer: Trainer) -> Step:
    """The generic step, or (with ``train.fast_step``) the first kernel that handles this
    run: it declares every one of the run's :func:`~.step.features`, and its models fit."""
    if trainer.cfg.train.fast_step:
        for kernel in KERNELS:
            if features(trainer) <= kernel.FEATURES and kernel.fits(trainer):
                return kernel(trainer)
    return Step(trainer)


@dataclass
class TrainResult:
    """What :func:`train` and :func:`resume` return. ``out_of_time``: training stopped
    before ``train.iters`` because its ``train.max_minutes`` were spent."""

    run_dir: Path
    step: int
    interrupted: bool
    stats: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    out_of_time: bool = False


class Loop:
    """What the hooks see of a running loop."""

    def __init__(self, trainer: Trainer, run: RunDir | None, iters: int, fresh: bool):
        self.trainer, self.run, self.iters, self.fresh = trainer, run, iters, fresh
        dist = trainer.dist
        self.root = Path(dist.broadcast_bytes(str(run.root).encode() if run else None).decode())
        """The run directory's path (on every rank)."""
        self.logger = RunLogger(run, None if fresh else trainer.step_count) if run else None
        """TensorBoard and metrics.jsonl (None on ranks other than 0)."""
        self.step0 = trainer.step_count
        self.t0 = time.perf_counter()
        self.result: StepResult | None = None
        self.stopping: set[str] = set()
        self.stopped: set[str] = set()
        self._stats: tuple[int, dict[str, float]] | None = None
        self.last_stats: dict[str, float] = {}

    @property
    def iteration(self) -> int:
        """The 0-based number of the last step done (the seed's iteration number)."""
        return self.trainer.step_count - 1

    def stats(self) -> dict[str, float]:
        """The last step's :meth:`~.step.StepResult.scalars` as floats, read once per step (one
        host sync); across processes their means over the ranks, so a collective: every rank
        reads them at the same steps (the divergence check does, at the logging steps)."""
        step = self.trainer.step_count
        if self._stats is None or self._stats[0] != step:
            self._stats = (step, read_scalars(self.result, self.trainer.dist))
            self.last_stats = self._stats[1]
        return self._stats[1]

    def has_stats(self) -> bool:
        """Whether this step's stats have been read already (reading them again is free)."""
        return self._stats is not None and self._stats[0] == self.trainer.step_count

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def rate(self) -> float:
        """Iterations per second in this call so far."""
        return (self.trainer.step_count - self.step0) / max(self.elapsed(), 1e-9)

    def request_stop(self, reason: str) -> None:
        """Stop before the next step (``interrupted``, ``out_of_time`` or a hook's own
        reason); across processes, agreed so that every rank stops at the same step."""
        self.stopping.add(reason)

    @property
    def interrupted(self) -> bool:
        return "interrupted" in self.stopped

    @property
    def finished(self) -> bool:
        """Whether training is over (all iterations done, or the time budget spent), as
        opposed to interrupted (it can go on with ``--resume``)."""
        return self.trainer.step_count >= self.iters or "out_of_time" in self.stopped


def fit(loop: Loop, step: Step, hooks: Sequence[Hook]) -> TrainResult:
    """Run ``step`` until ``loop.iters`` iterations are done or a hook asks to stop, with the
    hooks around it."""
    trainer, dist = loop.trainer, loop.trainer.dist
    done = False
    try:
        for hook in hooks:
            hook.start(loop)
        while trainer.step_count < loop.iters:
            if dist.stop_now(bool(loop.stopping), trainer.step_count):
                loop.stopped = loop.stopping or {"interrupted"}  # (another rank's request)
                break
            loop.result = step()
            for hook in hooks:
                hook.after_step(loop, loop.result)
        for hook in hooks:
            hook.end(loop)
        done = True
    except Exception as e:
        if trainer.cfg.train.compile and type(e).__module__.startswith("torch._"):
            cause = getattr(e, "inner_exception", None) or e
            first = (str(cause).strip().splitlines() or [""])[0]
            raise ConfigError(
                f"train.compile: torch.compile failed on this machine ({type(cause).__name__}: "
                f"{first}); set train.compile=false"
            ) from e
        raise
    finally:
        for hook in reversed(hooks):
            hook.close(loop)
        if loop.logger:
            try:
                loop.logger.close()
            except RunDirError:
                if done:  # (else the error already on its way is the one to report)
                    raise
    return TrainResult(
        loop.root,
        trainer.step_count,
        loop.interrupted,
        loop.last_stats,
        loop.elapsed(),
        "out_of_time" in loop.stopped,
    )


def train(
    cfg: Config,
    out: str | Path | None = None,
    *,
    force: bool = False,
    progress: bool | None = None,
    dataset: Dataset | None = None,
    hooks: Sequence[Hook] = (),
) -> TrainResult:
    """Train ``cfg`` from scratch into run directory ``out`` (default ``runs/<preset>-<time>``).

    ``progress`` shows a progress bar (default: when stderr is a terminal). ``dataset``
    may be given already loaded; otherwise ``cfg.data.dataset`` is loaded. ``hooks`` run
    after the built-in ones (see :mod:`.hooks`).

    Under torchrun every process calls this (as ``digitgan train`` does) and they train as
    one run (see the distributed training docs). Only rank 0 creates and writes ``out``.
    """
    with session() as dist:
        device = dist.place(resolve_device(cfg.train.device))
        dataset = dataset or _load_dataset(cfg, dist)
        # these before the run dir: a bad config or model leaves no run directory
        scorer = dist.on_main(lambda: make_scorer(cfg, dataset))
        trainer = Trainer(cfg, dataset, device, dist)
        step = make_step(trainer)

        def create() -> RunDir:
            run = RunDir.create(out or RunDir.default_path(cfg.preset), force=force)
            try:
                run.write_config(cfg.to_toml())
            except BaseException:
                run.close()
                raise
            return run

        with dist.on_main(create) or nullcontext() as run:
            built_in = default_hooks(trainer, run is not None, _want_progress(progress), scorer)
            loop = Loop(trainer, run, cfg.train.iters, fresh=True)
            return fit(loop, step, [*built_in, *hooks])


def resume(
    run_dir: str | Path,
    iters: int | None = None,
    *,
    sets: Sequence[str] = (),
    progress: bool | None = None,
    device: str | None = None,
    dataset: Dataset | None = None,
    hooks: Sequence[Hook] = (),
) -> TrainResult:
    """Continue a run from its latest checkpoint, to ``iters`` (default: its configured total).

    Model, optimiser, step, random states and data order are restored, so the result is the
    same as an uninterrupted run (bit for bit on the CPU). ``sets`` changes settings from
    here on, as ``section.key=value`` strings (e.g. ``["optim.lr_d=5e-4"]``); the fields in
    :data:`FIXED_ON_RESUME` cannot change. Under torchrun every process calls this; a run
    may continue with another number of processes (the noise streams are then reseeded).
    """
    latest = RunDir(run_dir).checkpoints / f"{LATEST}{SUFFIX}"

    def open_run() -> RunDir:
        run = RunDir.open(run_dir)
        if not latest.exists():
            run.close()
            raise CheckpointError(
                f"--resume {run.root}: the run has no checkpoint yet (it stopped before its "
                f"first one); start it again with `digitgan train --out {run.root} --force`"
            )
        return run

    with session() as dist, dist.on_main(open_run) or nullcontext() as run:
        trainer, dataset = restore_trainer(latest, iters, sets, device, dataset, dist)
        scorer = dist.on_main(lambda: make_scorer(trainer.cfg, dataset))
        step = make_step(trainer)

        def continue_run() -> None:
            run.write_config(trainer.cfg.to_toml())
            run.truncate_metrics(trainer.step_count)

        dist.on_main(continue_run)
        built_in = default_hooks(trainer, run is not None, _want_progress(progress), scorer)
        loop = Loop(trainer, run, trainer.cfg.train.iters, fresh=False)
        return fit(loop, step, [*built_in, *hooks])


FIXED_ON_RESUME = ("model", "data.dataset", "train.seed", "train.ema_decay")
"""What a resume cannot change: the models, the data (and its options, the table
``data.<dataset>``), the seed of the fixed noise, the EMA."""


def restore_trainer(
    path: Path,
    iters: int | None = None,
    sets: Sequence[str] = (),
    device: str | None = None,
    dataset: Dataset | None = None,
    dist: Dist = SINGLE,
) -> tuple[Trainer, Dataset]:
    """(trainer, dataset): a trainer in the state saved in checkpoint ``path``, with ``sets``
    applied to its config, and the dataset it trains on.

    Everything in the file is checked before it is used: a damaged, tampered or mismatched
    checkpoint raises CheckpointError (or ConfigError for its config), never a PyTorch error.
    Across processes, rank 0 reads the file and sends its bytes to the others.
    """
    data = dist.broadcast_bytes(dist.on_main(lambda: read_checkpoint_bytes(path)))
    tensors, meta = parse_checkpoint(data, path)
    saved = checkpoint_config(meta, path)
    check_models(saved.model, meta, tensors, "GD", path)
    cfg = saved.replace()
    apply_sets(cfg, sets)
    before = saved.flat()
    fixed_keys = (*FIXED_ON_RESUME, f"data.{saved.data.dataset}")
    for key, value in cfg.flat().items():
        fixed = any(key == f or key.startswith(f"{f}.") for f in fixed_keys)
        if fixed and value != before.get(key):
            raise ConfigError(
                f"--set {key}: cannot change when resuming a run (it is fixed by the "
                "checkpoint); start a new run for that"
            )
    overrides = {"train__iters": iters, "train__device": device}
    cfg = cfg.replace(**{k: v for k, v in overrides.items() if v is not None})
    device = dist.place(resolve_device(cfg.train.device))
    dataset = dataset or _load_dataset(cfg, dist)
    trainer = Trainer(cfg, dataset, device, dist)
    trainer.load_state(tensors, meta, path)
    return trainer, dataset


def _load_dataset(cfg: Config, dist: Dist) -> Dataset:
    """``cfg``'s dataset, loaded on rank 0 first (so that a download happens once)."""
    data = cfg.data
    return dist.main_first(
        lambda: load_dataset(data.dataset, data.data_dir or None, options=data.options)
    )


def _want_progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress
