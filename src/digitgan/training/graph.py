"""The training iteration as a CUDA graph: recorded once, then replayed each iteration.

At the size of digitgan's models an iteration on a GPU is a few hundred small kernels, and
the GPU waits for Python to launch them. :class:`GraphStep` records the whole iteration of a
step (:class:`~.step.Step` or a kernel of it) as one CUDA graph (``torch.cuda.CUDAGraph``):
the discriminator steps and the generator step with their Adam updates, spectral norm's power
iteration and BatchNorm's statistics, the EMA of G, and the noise, labels and random numbers,
drawn on the device. What the host still does per iteration:

- the schedule: the learning rates (``optim.lr_end``) and the EMA's decay are written into
  device scalars that the graph reads, when they change (one fill kernel each);
- the data order: the indices of the iteration's batches are taken from each run's epoch
  stream as the eager step takes them (a new epoch's permutation included) and written into a
  device buffer that the graph gathers the batches from (one copy kernel);
- one replay. The losses stay on the device: the result's tensors are the graph's outputs,
  read when something is logged (so a :class:`~.step.StepResult` holds its values until the
  next iteration).

The pitfalls of capturing a training step, and what this does about them:

- warm-up: the first :data:`WARMUP` iterations run eagerly, on a side stream as PyTorch's
  whole-network capture does, so that the optimisers' state and the libraries' workspaces
  exist before capture. They are the run's own iterations, not extra ones: no update is
  thrown away or made twice, and a resumed run warms up from its checkpoint the same way;
- fixed addresses: what the graph reads and writes is updated in place (parameters, Adam's
  moments and step counts, spectral norm's vectors, BatchNorm's statistics, the EMA); the
  gradients are allocated in the capture and kept by the graph; during the capture the
  optimisers' learning rates are the device scalars (Adam with ``capturable=True``), and
  floats again after it, so checkpoints are unchanged;
- random numbers: each run's noise generator is registered with the graph, so a replay draws
  the numbers that the eager step would draw at that point of the stream, and a checkpoint
  holds the stream's state as before.

It applies (:func:`graphable`) to a run on a CUDA device in one process without
``train.compile``, bf16, augmentation (ADA's strength), instance noise (its annealed
strength), ``loss.cluster_views``, or penalties that are lazy or on a schedule: those decide
on the host what an iteration computes. ``train.cuda_graph = false`` turns it off.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from ..errors import ConfigError
from .batches import EpochBatches
from .step import Step, StepResult, features
from .trainer import Trainer

WARMUP = 3
"""Eager iterations before the capture."""

_HOST_DECIDED = frozenset({"augment", "instance_noise", "bf16", "compile", "distributed"})
"""Features whose iterations the host shapes step by step (or that were never captured)."""


def graphable(trainer: Trainer) -> bool:
    """Whether the iteration of ``trainer``'s run is captured as a CUDA graph."""
    cfg = trainer.cfg
    loss = cfg.loss
    scheduled = bool(loss.penalties()) and (loss.lazy_every > 1 or loss.penalty_end != 1.0)
    return (
        cfg.train.cuda_graph
        and trainer.device.type == "cuda"
        and not features(trainer) & _HOST_DECIDED
        and not scheduled
        and not loss.cluster_views
    )


class ReplayBatches:
    """The batches of one iteration as the graph takes them, for each run of the step.

    :meth:`fill` (on the host, before a replay) takes the indices of the iteration's batches
    from every run's epoch stream, in the order the eager step takes them, and writes them into
    one device buffer; :meth:`next`, called by the step as it is recorded, gathers a batch's
    images and labels at the buffer's next row (the same result as ``EpochBatches.next``).
    """

    def __init__(self, sources: list[EpochBatches], count: int):
        self.sources = sources
        self.runs = len(sources)
        self.labels = torch.stack([s.labels for s in sources])
        """Every run's labels, (runs, N): with ``model.clusters`` each run has its own."""
        part = sources[0].part
        rows = self.runs * (part.stop - part.start)
        self.indices = torch.empty(count, rows, dtype=torch.long, device=self.labels.device)
        """The indices of an iteration's ``count`` batches: a row per batch, the runs' parts
        in turn."""
        self.taken = 0

    def next(self, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(images, labels) of the iteration's next batch, all runs' rows, run after run."""
        idx = self.indices[self.taken]
        self.taken += 1
        images = self.sources[0].images_at(idx, out)  # (the runs train on one dataset)
        return images, self.labels.gather(1, idx.view(self.runs, -1)).flatten()

    def fill(self) -> None:
        """Take the next iteration's batches from the runs' epoch streams (on the host)."""
        parts = [s.next_indices()[s.part] for _ in range(len(self.indices)) for s in self.sources]
        torch.cat(parts, out=self.indices.view(-1))


class GraphStep:
    """A step's iterations replayed from a CUDA graph; call it for one iteration, as a step.

    With ``capture=False`` the recorded part runs eagerly each iteration instead (on any
    device): the same tensors and order of work without the graph, which is how the tests
    check this class's bookkeeping on a CPU."""

    def __init__(self, step: Step, capture: bool = True):
        self.step = step
        self.trainer = tr = step.trainer
        self.capture = capture
        runs = tr.trainers if tr.runs > 1 else [tr]
        self.generators = [t.noise_gen for t in runs]
        self.batches = ReplayBatches([t.batches for t in runs], step.batches_taken)
        self.scalars = {
            "lr_d": torch.zeros((), device=tr.device),
            "lr_g": torch.zeros((), device=tr.device),
            "ema_weight": torch.zeros((), device=tr.device),
        }
        """The device scalars the recorded iteration reads, and (``written``) their values."""
        self.written: dict[str, float] = {}
        self.warmed_up = 0
        self.stream = torch.cuda.Stream(tr.device) if capture else None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: StepResult | None = None

    def __call__(self) -> StepResult:
        tr = self.trainer
        if self.warmed_up < WARMUP:
            self.warmed_up += 1
            return self._warm_up()
        if self.outputs is None and self.capture:
            self._capture()
        self.step.schedule()
        self._write_scalars()
        self.batches.fill()
        if self.graph is not None:
            self.graph.replay()
        else:
            self.outputs = self._recorded()
        tr.step_count += 1
        return self.outputs

    def _capture(self) -> None:
        """Record :meth:`_recorded` as the graph (nothing runs: the first replay does it)."""
        self.graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            self.graph.register_generator_state(generator)
        try:
            with torch.cuda.graph(self.graph):
                self.outputs = self._recorded()
        except RuntimeError as e:
            first = (str(e).strip().splitlines() or [""])[0]
            raise ConfigError(
                f"train.cuda_graph: recording the training iteration as a CUDA graph failed "
                f"({first}); set train.cuda_graph=false"
            ) from e

    def _warm_up(self) -> StepResult:
        """An eager iteration (on the side stream when capturing)."""
        if self.stream is None:
            return self.step()
        current = torch.cuda.current_stream(self.trainer.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            result = self.step()
        current.wait_stream(self.stream)
        return result

    def _recorded(self) -> StepResult:
        """The part of the iteration the graph holds: the step's D and G steps on the replay
        batches at the device learning rates, then the EMA update at the device weight."""
        tr = self.trainer
        with self._on_device_scalars(), self.step.kernels():
            result = self.step.iterate()
            if tr.ema:
                tr.ema.blend(tr.G, self.scalars["ema_weight"])
        taken, self.batches.taken = self.batches.taken, 0
        if taken != len(self.batches.indices):
            raise RuntimeError(
                f"the step took {taken} batches in an iteration, not its batches_taken "
                f"({len(self.batches.indices)})"
            )
        return result

    @contextmanager
    def _on_device_scalars(self) -> Iterator[None]:
        """The trainer reading its batches from :attr:`batches` and its optimisers their
        learning rates from the device scalars (as it is recorded)."""
        tr = self.trainer
        groups = {"lr_d": tr.opt_d.param_groups[0], "lr_g": tr.opt_g.param_groups[0]}
        saved = tr.batches, {name: g["lr"] for name, g in groups.items()}
        tr.batches = self.batches
        for name, group in groups.items():
            group["lr"] = self.scalars[name]
        try:
            yield
        finally:
            tr.batches = saved[0]
            for name, group in groups.items():
                group["lr"] = saved[1][name]

    def _write_scalars(self) -> None:
        """This iteration's learning rates and EMA weight into the device scalars, where
        they changed."""
        tr = self.trainer
        values = {
            "lr_d": tr.opt_d.param_groups[0]["lr"],
            "lr_g": tr.opt_g.param_groups[0]["lr"],
            "ema_weight": tr.ema.weight_at(tr.step_count) if tr.ema else 0.0,
        }
        for name, value in values.items():
            if self.written.get(name) != value:
                self.scalars[name].fill_(value)
                self.written[name] = value
