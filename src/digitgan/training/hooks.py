"""Periodic work around the training steps, one hook each.

A :class:`Hook` has four moments, all optional: ``start`` (before the first step of this
call, also after a resume), ``after_step`` (after every step), ``end`` (after the last
step, when the run finished or was stopped; not after an error) and ``close`` (always,
last). Each receives the :class:`~.loop.Loop`, which holds the trainer, the run directory,
the target iteration and the last :class:`~.step.StepResult`, reads the losses
(:meth:`~.loop.Loop.stats`) and takes stop requests (:meth:`~.loop.Loop.request_stop`).

:func:`default_hooks` makes the ones ``digitgan train`` runs. Across processes every rank
runs the loop; the hooks that only write files or print (grids, TensorBoard, console) are
made for rank 0 alone, and those that take part in a collective (reading the losses,
checkpoints, evaluation, stop requests) run on every rank and write through rank 0.
Your own hooks go to :func:`~.loop.train` or :func:`~.loop.resume` as ``hooks=[...]``;
they run on every rank, after these.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, ClassVar

import torch
from tqdm import tqdm

from ..config import Config
from ..data import Dataset
from ..errors import CheckpointError, DivergenceError
from ..eval.evaluate import SampleScorer
from ..sampling import Sampler
from ..store.checkpoint import LATEST, SUFFIX, read_metadata, save_checkpoint
from ..store.rundir import RunDir
from ..viz import make_grid, save_png, to_uint8
from .trainer import DIVERGED, Trainer, fixed_noise_stream

if TYPE_CHECKING:
    from .loop import Loop
    from .step import StepResult


class Hook:
    """Work done around the steps; every method does nothing unless overridden."""

    def start(self, loop: Loop) -> None:
        """Before the first step of this call (``loop.trainer.step_count`` steps are done)."""

    def after_step(self, loop: Loop, result: StepResult) -> None:
        """After each step; ``loop.iteration`` is the 0-based number of the step just done."""

    def end(self, loop: Loop) -> None:
        """After the last step, when training finished or was stopped (not after an error)."""

    def close(self, loop: Loop) -> None:
        """Always, last: release what the hook holds."""


def _every(n: int, i: int) -> bool:
    return bool(n) and i % n == 0


class DivergenceCheck(Hook):
    """Reads the losses at every logging step (``log.tb_every``, ``log.print_every``) on
    every rank (the read is a collective) and stops with DivergenceError, saying how to go
    on, when one is NaN, infinite or beyond :data:`~.trainer.DIVERGED` in magnitude; before
    histograms are written, the weights too (:meth:`~.trainer.Trainer.check_weights`)."""

    def __init__(self, cfg: Config):
        self.log = cfg.log

    def after_step(self, loop, result):
        i, log = loop.iteration, self.log
        if _every(log.tb_every, i) or _every(log.print_every, i):
            stats = loop.stats()
            bad = [
                f"{k.replace('_', ' ')} {v}"
                for k, v in stats.items()
                if k.endswith("_loss") and not abs(v) <= DIVERGED  # (NaN compares false)
            ]
            if bad:
                raise diverged(
                    loop, DivergenceError(f"training diverged at iteration {i}: {', '.join(bad)}")
                )
            if _every(log.tb_every, i) and log.histograms:
                check_weights(loop)


def check_weights(loop: Loop) -> None:
    """Raise DivergenceError (with advice) if a weight has diverged."""
    try:
        loop.trainer.check_weights()
    except DivergenceError as e:
        raise diverged(loop, e) from None


def diverged(loop: Loop, error: DivergenceError) -> DivergenceError:
    """``error`` with where the run can continue from and with which learning rates."""
    if loop.run is None:
        return error
    o = loop.trainer.cfg.optim
    lrs = f" --set optim.lr_d={o.lr_d / 2:g} --set optim.lr_g={o.lr_g / 2:g}"
    return DivergenceError(
        f"{error}; {where_to_continue(loop.run, 'to try lower learning rates', lrs)}"
    )


def where_to_continue(run: RunDir, then: str, options: str = "") -> str:
    """Which checkpoint the run can continue from, and the command that does it."""
    path = run.checkpoints / f"{LATEST}{SUFFIX}"
    try:
        step = read_metadata(path)["step"]
    except CheckpointError:
        return f"no checkpoint was saved yet; {then}, start again with --force{options}"
    return (
        f"the last good checkpoint ({path}, iteration {step}) is kept; {then}, continue with "
        f"`digitgan train --resume {run.root}{options}`"
    )


class TensorBoard(Hook):
    """The model graph at a fresh start; every ``log.tb_every`` iterations the scalars of
    :meth:`~.step.StepResult.scalars` and ``it_per_s`` (TensorBoard and metrics.jsonl) and
    the weight histograms (``log.histograms``). Rank 0 only."""

    def __init__(self, cfg: Config):
        self.every, self.histograms = cfg.log.tb_every, cfg.log.histograms

    def start(self, loop):
        if loop.fresh:
            loop.logger.graph(loop.trainer)

    def after_step(self, loop, result):
        i = loop.iteration
        if _every(self.every, i):
            loop.logger.scalars(i, loop.stats(), loop.rate())
            if self.histograms:
                loop.logger.histograms(i, loop.trainer.G, loop.trainer.D)


class Console(Hook):
    """The seed's loss line every ``log.print_every`` iterations, a progress bar (tqdm) when
    asked, and what to do after an interruption. Rank 0 only."""

    def __init__(self, cfg: Config, progress: bool, label: str = ""):
        self.every = cfg.log.print_every
        self.progress = progress
        self.label = label
        """Put before every line: which run it is about, when several train at once."""
        self.bar = None

    def write(self, text: str) -> None:
        text = self.label + text
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def start(self, loop):
        tr = loop.trainer
        if self.progress:
            self.bar = tqdm(
                total=loop.iters,
                initial=tr.step_count,
                unit="it",
                dynamic_ncols=True,
                file=sys.stderr,
            )
        if tr.step_count >= loop.iters and not loop.fresh:
            self.write(
                f"Note: the run is at iteration {tr.step_count}, at or past the {loop.iters} "
                "asked for: nothing to train"
            )
        if n := tr.reseeded_from:
            self.write(
                f"Note: continuing a run of {n} process{'es' if n > 1 else ''} with "
                f"{tr.dist.world}: the data order continues exactly, the noise streams are reseeded"
            )

    def after_step(self, loop, result):
        i = loop.iteration
        if _every(self.every, i):
            s = loop.stats()
            self.write(f"Iter: {i}  D loss: {s['D_loss']:.4}  G loss: {s['G_loss']:.4}")
        if self.bar is not None:
            if loop.has_stats():
                s = loop.stats()
                self.bar.set_postfix(D=f"{s['D_loss']:.3f}", G=f"{s['G_loss']:.3f}", refresh=False)
            self.bar.update(1)

    def end(self, loop):
        if loop.interrupted:
            self.write(
                f"Interrupted: checkpoint saved at iteration {loop.trainer.step_count}; continue "
                f"with `digitgan train --resume {loop.root}`"
            )

    def close(self, loop):
        if self.bar is not None:
            self.bar.close()


class SampleGrids(Hook):
    """The grid of the sample generator on fixed noise (conditional models: row r draws
    class r mod K) at the start and every ``log.sample_every`` iterations, as
    samples/NNN.png and a TensorBoard image, and samples/final.png when training ends (not
    when it is interrupted). Rank 0 only."""

    def __init__(self, trainer: Trainer):
        cfg = trainer.cfg
        self.every, self.rows = cfg.log.sample_every, cfg.log.grid_rows
        n = self.rows * self.rows
        self.z = trainer.noise(n, fixed_noise_stream(cfg.train.seed))
        self.labels = (
            (torch.arange(n, device=trainer.device) // self.rows) % trainer.G.num_classes
            if trainer.conditional
            else None
        )

    @torch.no_grad()
    def grid(self, loop: Loop, final: bool = False) -> None:
        G = loop.trainer.sample_generator
        was_training = G.training
        G.eval()
        images = G(self.z, self.labels)
        G.train(was_training)
        image = make_grid(to_uint8(images, G.out_range), nrow=self.rows)
        step = loop.trainer.step_count
        save_png(
            loop.run.samples / "final.png" if final else loop.run.grid_path(step // self.every),
            image,
        )
        loop.logger.image(step, image)

    def start(self, loop):
        if _every(self.every, loop.trainer.step_count):
            self.grid(loop)

    def after_step(self, loop, result):
        if _every(self.every, loop.trainer.step_count):
            self.grid(loop)

    def end(self, loop):
        if loop.finished:
            self.grid(loop, final=True)


class Checkpoints(Hook):
    """Every ``log.ckpt_every`` iterations a numbered checkpoint and latest.safetensors, and
    at the end latest.safetensors (numbered too when training finished), unless that
    iteration's is saved already. Weights are checked first: a diverged run keeps its last
    good checkpoint. Every rank (the noise states are gathered); rank 0 writes."""

    def __init__(self, cfg: Config):
        self.every = cfg.log.ckpt_every

    def save(self, loop: Loop, numbered: bool) -> None:
        check_weights(loop)
        tr = loop.trainer
        tr.gather_noise_states()

        def write() -> None:
            tensors, meta = tr.state()
            run = loop.run
            try:  # latest first: a failed write then leaves no numbered file newer than it
                save_checkpoint(run.checkpoints / f"{LATEST}{SUFFIX}", tensors, meta)
                if numbered:
                    path = run.checkpoints / f"step-{tr.step_count:07d}{SUFFIX}"
                    save_checkpoint(path, tensors, meta)
            except CheckpointError as e:
                raise CheckpointError(f"{e}; {where_to_continue(run, 'once that is fixed')}") from e

        tr.dist.on_main(write)

    def after_step(self, loop, result):
        if _every(self.every, loop.trainer.step_count):
            self.save(loop, numbered=True)

    def end(self, loop):
        done = loop.trainer.step_count
        if not (_every(self.every, done) and done > loop.step0):
            self.save(loop, numbered=loop.finished)


class Evaluation(Hook):
    """Every ``log.eval_every`` iterations: the sample generator's FID and class balance
    (:class:`~digitgan.eval.evaluate.SampleScorer`, the same generator that
    :func:`digitgan.load` gives), logged as ``eval/<metric>``; when FID improves the state
    is kept as checkpoints/best.safetensors with the scores in its metadata, and the scores are
    ``loop.scores`` for the hooks after it. Every rank (the noise states are gathered); rank 0
    measures and writes."""

    def __init__(self, cfg: Config, scorer: SampleScorer | None):
        self.every = cfg.log.eval_every
        self.scorer = scorer
        self.best: float | None = None

    def after_step(self, loop, result):
        tr = loop.trainer
        if _every(self.every, tr.step_count):
            tr.gather_noise_states()  # for a best checkpoint
            tr.dist.on_main(lambda: self.measure(loop))

    def measure(self, loop: Loop) -> dict[str, float]:
        tr, run = loop.trainer, loop.run
        meta = {"image_shape": list(tr.image_shape), "step": tr.step_count}
        G = tr.sample_generator
        was_training = G.training
        t0 = time.perf_counter()
        values = self.scorer(Sampler(G, tr.cfg, meta, run.root))
        G.train(was_training)
        step = tr.step_count
        loop.scores = values
        loop.logger.eval_scalars(
            step, {f"eval/{k}": v for k, v in values.items()}, time.perf_counter() - t0
        )
        best_file = run.checkpoints / f"best{SUFFIX}"
        if self.best is None and best_file.is_file():  # a resumed run: the best so far
            saved = read_metadata(best_file).get("eval", {})
            self.best = saved.get("fid", saved.get("FID"))  # (FID: files of 0.1.0)
        if self.best is None or values["fid"] < self.best:
            self.best = values["fid"]
            tensors, meta = tr.state()
            save_checkpoint(best_file, tensors, {**meta, "eval": {"step": step, **values}})
        return values


class TimeBudget(Hook):
    """Stops training once ``train.max_minutes`` of wall-clock time are spent in this call's
    loop, as if ``train.iters`` were reached there."""

    def __init__(self, cfg: Config):
        self.seconds = cfg.train.max_minutes * 60

    def after_step(self, loop, result):
        if loop.elapsed() >= self.seconds:
            loop.request_stop("out_of_time")


class CtrlC(Hook):
    """The first Ctrl-C (SIGINT) asks the loop to stop after the current iteration, saving a
    checkpoint; a second one aborts at once. In the main thread only. Runs trained at once
    (``seeds``) share one handler: the first Ctrl-C stops them all."""

    _loops: ClassVar[list[Loop]] = []
    """The loops the handler stops; the handler is installed while this is not empty."""
    _previous = None
    _asked = False

    def start(self, loop):
        if threading.current_thread() is not threading.main_thread():
            return
        if not CtrlC._loops:
            CtrlC._asked = False
            CtrlC._previous = signal.signal(signal.SIGINT, CtrlC._handler)
        CtrlC._loops.append(loop)

    @staticmethod
    def _handler(signum, frame):
        if CtrlC._asked:
            raise KeyboardInterrupt
        CtrlC._asked = True
        for loop in CtrlC._loops:
            loop.request_stop("interrupted")

    def close(self, loop):
        if loop in CtrlC._loops:
            CtrlC._loops.remove(loop)
            if not CtrlC._loops:
                signal.signal(signal.SIGINT, CtrlC._previous)


def default_hooks(
    trainer: Trainer, writes: bool, progress: bool, scorer: SampleScorer | None, label: str = ""
) -> list[Hook]:
    """The hooks of ``digitgan train``, in the order they run after a step; ``writes``:
    this process writes the run's files (rank 0); ``label`` starts the run's console lines."""
    cfg = trainer.cfg
    hooks: list[Hook] = [CtrlC(), DivergenceCheck(cfg)]
    if writes:
        hooks += [TensorBoard(cfg), SampleGrids(trainer)]
    if cfg.log.eval_every:
        hooks.append(Evaluation(cfg, scorer))
    hooks.append(Checkpoints(cfg))
    if cfg.train.max_minutes:
        hooks.append(TimeBudget(cfg))
    if writes:  # last, so that what it reports at the end has happened
        hooks.append(Console(cfg, progress, label))
    return hooks


def make_scorer(cfg: Config, dataset: Dataset) -> SampleScorer | None:
    """The scorer of ``log.eval_every`` (its classifier and test split checked now), or None."""
    if not cfg.log.eval_every:
        return None
    log = cfg.log
    return SampleScorer(dataset, log.eval_classifier or None, log.eval_samples, cfg.train.seed)
