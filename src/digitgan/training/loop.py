"""The training loop: steps until done, periodic work as hooks; ``train`` and ``resume``.

:func:`fit` runs :class:`~.step.Step` until ``iters`` iterations are done or a hook asks
to stop, calling every :class:`~.hooks.Hook` around the steps. :func:`train` and
:func:`resume` build the trainer, the step and the run directory, and call it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config, apply_sets, resolve_device
from ..data import Dataset, load_dataset
from ..errors import CheckpointError, ConfigError, DivergenceError, RunDirError
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
from .graph import GraphStep, graphable
from .hooks import Hook, default_hooks, make_scorer
from .logger import RunLogger
from .seeds import StackedTrainer
from .step import Step, StepResult, features, read_scalars
from .trainer import Trainer, check_memory

KERNELS: list[type[Step]] = [DenseStep]
"""Specialised steps, tried in order before the generic one (see :func:`make_step`)."""


def make_step(trainer: Trainer) -> Step | GraphStep:
    """The generic step, or (with ``train.fast_step``) the first kernel that handles this
    run: it declares every one of the run's :func:`~.step.features`, and its models fit;
    replayed as a CUDA graph where that applies (:func:`~.graph.graphable`)."""
    step = Step
    if trainer.cfg.train.fast_step:
        fitting = (k for k in KERNELS if features(trainer) <= k.FEATURES and k.fits(trainer))
        step = next(fitting, Step)
    return GraphStep(step(trainer)) if graphable(trainer) else step(trainer)


@dataclass
class TrainResult:
    """What :func:`train` and :func:`resume` return. ``out_of_time``: training stopped
    before ``train.iters`` because its ``train.max_minutes`` were spent."""

    run_dir: Path
    step: int
    interrupted: bool
    stats: dict[str, float] = field(default_factory=dict)
    """The last iteration's losses and D outputs (:meth:`~.step.StepResult.scalars`), e.g.
    ``D_loss``; empty when the call ran none."""
    seconds: float = 0.0
    out_of_time: bool = False
    error: DivergenceError | None = None
    """Of several runs trained at once (``seeds``): the error that stopped this one alone."""


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
        self.scores: dict[str, float] = {}
        """The latest evaluation's metrics (``log.eval_every``; on rank 0), e.g. ``fid``."""

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
    (result,) = fit_runs(step, [(loop, hooks)])
    return result


def fit_runs(step: Step, runs: Sequence[tuple[Loop, Sequence[Hook]]]) -> list[TrainResult]:
    """:func:`fit` for one run or for the stacked runs of a
    :class:`~.seeds.StackedTrainer`, each with its own loop and hooks (run ``i``'s see
    :meth:`StepResult.run` ``(i)`` of each step). A run that asks to stop ends alone; of
    several runs, one whose hooks raise DivergenceError stops alone, its result holding
    the error, and the others go on."""
    trainer = step.trainer
    dist, single = trainer.dist, len(runs) == 1
    live = list(range(len(runs)))
    errors: dict[int, DivergenceError] = {}
    open_runs = set()
    ended: dict[int, tuple[int, float]] = {}  # run -> (iterations, seconds) when it left

    def leave(i: int) -> None:
        live.remove(i)
        ended[i] = (trainer.step_count, runs[i][0].elapsed())

    # each run's hook methods by moment, bound once; those a hook leaves as Hook's (no work)
    # are not called
    calls = [
        {
            moment: [
                getattr(hook, moment)
                for hook in hooks
                if getattr(type(hook), moment) is not getattr(Hook, moment)
            ]
            for moment in ("start", "after_step", "end")
        }
        for _, hooks in runs
    ]

    def guarded(i: int, moment: str, *args) -> None:
        """Hook moment ``moment`` of run ``i``; a diverged run of several stops alone."""
        loop = runs[i][0]
        try:
            for call in calls[i][moment]:
                call(loop, *args)
        except DivergenceError as e:
            if single:
                raise
            errors[i] = e
            leave(i)
            close(i)

    def close(i: int, done: bool = False) -> None:
        loop, hooks = runs[i]
        open_runs.discard(i)
        try:
            for hook in reversed(hooks):
                hook.close(loop)
        finally:
            if loop.logger:
                try:
                    loop.logger.close()
                except RunDirError:
                    if done:  # (else the error already on its way is the one to report)
                        raise

    done = False
    try:
        for i in live[:]:
            open_runs.add(i)
            guarded(i, "start")
        while live and trainer.step_count < runs[0][0].iters:
            for i in live[:]:
                loop = runs[i][0]
                if dist.stop_now(bool(loop.stopping), trainer.step_count):
                    loop.stopped = loop.stopping or {"interrupted"}  # (another rank's request)
                    leave(i)
                    guarded(i, "end")
            if not live:
                break
            result = step()
            for i in live[:]:
                loop = runs[i][0]
                loop.result = result if single else result.run(i, len(runs))
                guarded(i, "after_step", loop.result)
        for i in live[:]:
            guarded(i, "end")
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
        for i in sorted(open_runs, reverse=True):
            close(i, done)
    results = []
    for i, (loop, _) in enumerate(runs):
        steps, seconds = ended.get(i, (trainer.step_count, loop.elapsed()))
        stopped = "out_of_time" in loop.stopped
        # the last step's numbers (a diverged run's: those that showed it)
        stats = loop.last_stats if loop.result is None or i in errors else loop.stats()
        results.append(
            TrainResult(loop.root, steps, loop.interrupted, stats, seconds, stopped, errors.get(i))
        )
    return results


def train(
    cfg: Config,
    out: str | Path | None = None,
    *,
    force: bool = False,
    progress: bool | None = None,
    dataset: Dataset | None = None,
    hooks: Sequence[Hook] = (),
    seeds: Sequence[int] | None = None,
) -> TrainResult | list[TrainResult]:
    """Train ``cfg`` from scratch into run directory ``out`` (default ``runs/<preset>-<time>``).

    ``progress`` shows a progress bar (default: when stderr is a terminal). ``dataset``
    may be given already loaded; otherwise ``cfg.data.dataset`` is loaded. ``hooks`` run
    after the built-in ones (see :mod:`.hooks`).

    Under torchrun every process calls this (as ``digitgan train`` does) and they train as
    one run (see the distributed training docs). Only rank 0 creates and writes ``out``.

    ``seeds`` (``train.seed`` values) trains one run of ``cfg`` per seed, at once with their
    models stacked (:mod:`.seeds`) or one after another (:func:`stacks_seeds`), into
    ``out/seed-<seed>`` each, ordinary run directories;
    it returns their results, in order (``hooks`` are called for each run). A run that
    diverges stops alone (its result's ``error``). Under torchrun the seeds are divided among
    the processes, each training its share with no communication.
    """
    if seeds is not None:
        return _train_seeds(cfg, out, seeds, force, progress, dataset, hooks)
    with session() as dist:
        device = dist.place(resolve_device(cfg.train.device))
        dataset = dataset or _load_dataset(cfg, dist)
        # these before the run dir: a bad config or model leaves no run directory
        scorer = dist.on_main(lambda: make_scorer(cfg, dataset))
        trainer = Trainer(cfg, dataset, device, dist)
        step = make_step(trainer)
        path = out or RunDir.default_path(cfg.preset)
        with dist.on_main(lambda: _create_run(path, cfg, force)) or nullcontext() as run:
            built_in = default_hooks(trainer, run is not None, _want_progress(progress), scorer)
            loop = Loop(trainer, run, cfg.train.iters, fresh=True)
            return fit(loop, step, [*built_in, *hooks])


def _create_run(path: str | Path, cfg: Config, force: bool) -> RunDir:
    """A new run directory holding ``cfg``."""
    run = RunDir.create(path, force=force)
    try:
        run.write_config(cfg.to_toml())
    except BaseException:
        run.close()
        raise
    return run


def seed_configs(cfg: Config, seeds: Sequence[int]) -> list[Config]:
    """``cfg`` with each of ``seeds`` as ``train.seed``; refused when there are none, one is
    repeated or out of ``train.seed``'s range."""
    seeds = list(seeds)
    if not seeds:
        raise ConfigError("seeds: give at least one seed")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"seeds: {', '.join(map(str, repeated))} given more than once")
    return [cfg.replace(train__seed=s) for s in seeds]


def _train_seeds(cfg, out, seeds, force, progress, dataset, hooks) -> list[TrainResult]:
    every = seed_configs(cfg, seeds)
    with session() as dist:
        configs = every[dist.rank :: dist.world]
        device = dist.place(resolve_device(cfg.train.device))
        dataset = dataset or _load_dataset(cfg, dist)
        chosen = dist.on_main(lambda: str(out or RunDir.default_path(cfg.preset)).encode())
        root = Path(dist.broadcast_bytes(chosen).decode())
        # these before the run dirs: a bad config or model leaves no run directory
        shape, classes = dataset.image_shape, dataset.num_classes
        check_memory(cfg, shape, classes, cfg.data.batch_size, device, runs=len(configs))
        scorers = [make_scorer(c, dataset) for c in configs]
        trainers = [Trainer(c, dataset, device) for c in configs]
        if not trainers:
            return []
        step = _sweep_step(trainers)  # (its refusals before the run directories)
        with ExitStack() as stack:
            dirs = [
                stack.enter_context(_create_run(root / f"seed-{c.train.seed}", c, force))
                for c in configs
            ]
            return _fit_seeds(step, trainers, dirs, scorers, progress, dist, hooks, fresh=True)


def seeds_step(trainers: list[Trainer]) -> Step | GraphStep:
    """The step of several seeds' trainers: of their :class:`StackedTrainer` (of one alone)."""
    return make_step(StackedTrainer(trainers) if len(trainers) > 1 else trainers[0])


def _sweep_step(trainers: list[Trainer]) -> Step | GraphStep | None:
    """The step that trains a sweep's trainers at once (:func:`seeds_step`), or None when they
    train one after another (:func:`stacks_seeds`)."""
    return seeds_step(trainers) if len(trainers) == 1 or stacks_seeds(trainers[0]) else None


def stacks_seeds(trainer: Trainer) -> bool:
    """Whether several seeds of ``trainer``'s configuration train stacked (``train.seeds_mode``):
    auto stacks them on a GPU and for the mlp architecture; convolutional models on a CPU
    train one after another, where stacked they were measured slower (dcgan 0.90x, cdcgan
    0.80x of the same runs one after another; benchmarks/RESULTS.md)."""
    mode = trainer.cfg.train.seeds_mode
    if mode == "auto":
        return trainer.device.type == "cuda" or trainer.cfg.model.arch == "mlp"
    return mode == "stacked"


def _fit_seeds(step, trainers, dirs, scorers, progress, dist, hooks, fresh) -> list[TrainResult]:
    """:func:`fit_runs` of several seeds' trainers, each with its run directory, its scorer
    and the built-in hooks, its console lines led by its seed: with their ``step`` (the
    progress bar: the first's), or one after another when it is None (:func:`_sweep_step`),
    each with its own step, bar and clock."""
    stacked = step is not None
    bar = _want_progress(progress) and dist.rank == 0

    def run(i: int) -> tuple[Loop, list[Hook]]:  # (a Loop starts its clock when made)
        trainer, label = trainers[i], f"seed {trainers[i].cfg.train.seed}: "
        built_in = default_hooks(trainer, True, bar and (i == 0 or not stacked), scorers[i], label)
        return Loop(trainer, dirs[i], trainer.cfg.train.iters, fresh), [*built_in, *hooks]

    if stacked:
        return fit_runs(step, [run(i) for i in range(len(trainers))])
    results: list[TrainResult] = []
    for i, trainer in enumerate(trainers):
        loop, run_hooks = run(i)
        if any(r.interrupted for r in results):  # Ctrl-C stops the rest too, each saved
            loop.request_stop("interrupted")
        try:
            results += fit_runs(make_step(trainer), [(loop, run_hooks)])
        except DivergenceError as e:  # this seed stops alone; the others go on
            at, seconds = trainer.step_count, loop.elapsed()
            results.append(TrainResult(loop.root, at, False, loop.last_stats, seconds, error=e))
    return results


def resume(
    run_dir: str | Path,
    iters: int | None = None,
    *,
    sets: Sequence[str] = (),
    progress: bool | None = None,
    device: str | None = None,
    dataset: Dataset | None = None,
    hooks: Sequence[Hook] = (),
) -> TrainResult | list[TrainResult]:
    """Continue a run from its latest checkpoint, to ``iters`` (default: its configured total).

    Model, optimiser, step, random states and data order are restored, so the result is the
    same as an uninterrupted run (bit for bit on the CPU). ``sets`` changes settings from
    here on, as ``section.key=value`` strings (e.g. ``["optim.lr_d=5e-4"]``); the fields in
    :data:`FIXED_ON_RESUME` cannot change. Under torchrun every process calls this; a run
    may continue with another number of processes (the noise streams are then reseeded).

    ``run_dir`` may also be the folder of a ``seeds`` training (its ``seed-N`` runs): they
    continue as they trained, stacked again or one after another, and their results are
    returned as a list.
    """
    sweep = seed_runs(run_dir)
    if sweep:
        return _resume_seeds(sweep, iters, sets, progress, device, dataset, hooks)
    with session() as dist, dist.on_main(lambda: _open_run(run_dir)) or nullcontext() as run:
        trainer, dataset = restore_trainer(_latest(run_dir), iters, sets, device, dataset, dist)
        scorer = dist.on_main(lambda: make_scorer(trainer.cfg, dataset))
        step = make_step(trainer)
        dist.on_main(lambda: _continue_run(run, trainer))
        built_in = default_hooks(trainer, run is not None, _want_progress(progress), scorer)
        loop = Loop(trainer, run, trainer.cfg.train.iters, fresh=False)
        return fit(loop, step, [*built_in, *hooks])


def seed_runs(folder: str | Path) -> list[Path]:
    """The ``seed-N`` run directories of a folder written by ``train(..., seeds=...)``, in
    seed order; empty when ``folder`` is a run directory itself (or holds none)."""
    folder = Path(folder)
    if (folder / "config.toml").exists() or not folder.is_dir():
        return []
    runs = [p.parent for p in folder.glob("seed-*/config.toml")]
    return sorted(runs, key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else -1)


def _latest(run_dir: str | Path) -> Path:
    return RunDir(run_dir).checkpoints / f"{LATEST}{SUFFIX}"


def _open_run(run_dir: str | Path) -> RunDir:
    """The run directory to continue (locked), refused when it holds no checkpoint yet."""
    run = RunDir.open(run_dir)
    if not _latest(run_dir).exists():
        run.close()
        raise CheckpointError(
            f"--resume {run.root}: the run has no checkpoint yet (it stopped before its "
            f"first one); start it again with `digitgan train --out {run.root} --force`"
        )
    return run


def _continue_run(run: RunDir, trainer: Trainer) -> None:
    run.write_config(trainer.cfg.to_toml())
    run.truncate_metrics(trainer.step_count)


def _resume_seeds(sweep, iters, sets, progress, device, dataset, hooks) -> list[TrainResult]:
    with session() as dist, ExitStack() as stack:
        mine = sweep[dist.rank :: dist.world]
        opened = [stack.enter_context(_open_run(path)) for path in mine]
        trainers = []
        for path in mine:
            trainer, dataset = restore_trainer(_latest(path), iters, sets, device, dataset)
            trainers.append(trainer)
        if not trainers:
            return []
        steps = {t.step_count for t in trainers}
        if len(steps) > 1 and stacks_seeds(trainers[0]):
            at = ", ".join(
                f"{p.name} at {t.step_count}" for p, t in zip(mine, trainers, strict=True)
            )
            raise CheckpointError(
                f"--resume {Path(sweep[0]).parent}: its runs are at different iterations ({at}); "
                "continue them one by one, or all with --set train.seeds_mode=sequential"
            )
        step = _sweep_step(trainers)
        scorers = [make_scorer(t.cfg, dataset) for t in trainers]
        for run, trainer in zip(opened, trainers, strict=True):
            _continue_run(run, trainer)
        return _fit_seeds(step, trainers, opened, scorers, progress, dist, hooks, fresh=False)


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
    # the checkpoint's clusters (model.clusters) at once, so they are not found again
    trainer = Trainer(cfg, dataset, device, dist, clusters=tensors.get("data.clusters"))
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
