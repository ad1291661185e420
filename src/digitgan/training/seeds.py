"""Several runs of one configuration, differing only in their seeds, trained as one.

:class:`StackedTrainer` holds the :class:`~.trainer.Trainer` of each run and is itself the
trainer that :class:`~.step.Step` computes iterations for:

- its models are the runs' models :class:`Stacked`: every parameter and buffer gains a first
  dimension, one row per run, and a forward pass is the runs' own module vmapped over those
  rows (``torch.func.functional_call`` under ``torch.vmap``: the runs' matrix products become
  batched ones, their convolutions grouped ones), on inputs that hold the runs' samples run
  after run;
- its optimisers are Adam over the stacked parameters. Adam works element by element, so a
  run's rows get the update that its own optimiser would give them; the step backpropagates
  the sum of the runs' losses, whose gradient with respect to a run's rows is that run's own;
- its batches, noise, labels and random numbers are each run's own, drawn from the run's own
  streams in the order a one-run step draws them, and concatenated.

Each run's modules, optimiser state and EMA hold views of the stacked tensors, so the runs'
trainers, and everything that reads them (checkpoints, sample grids, evaluation), see the
current weights without a copy. A run's iterations therefore equal those of a one-run training
with its seed, up to the float rounding of batched products.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..errors import ConfigError
from .distributed import SINGLE
from .ema import EMA
from .trainer import Trainer


def _stack(tensors: Sequence[Tensor]) -> Tensor:
    """The tensors stacked along a new first dimension; each tensor becomes a view of its
    row (its ``.data`` is replaced, so modules, optimisers and EMAs holding it follow)."""
    stacked = torch.stack([t.detach() for t in tensors])
    for i, t in enumerate(tensors):
        t.data = stacked[i]
    return stacked


class Stacked(nn.Module):
    """Modules of one structure as one module: their parameters and buffers stacked along a
    new first dimension (the modules' own tensors become views of their rows), its forward
    the structure vmapped over them. Inputs and outputs hold the modules' samples one module
    after another: ``n`` samples each, ``runs * n`` rows in all."""

    def __init__(self, modules: Sequence[nn.Module]):
        super().__init__()
        first = modules[0]
        self.runs = len(modules)
        # the structure alone, on the meta device: functional_call supplies every tensor
        # (kept out of the module tree, so that its tensors are not counted as this module's)
        self.__dict__["structure"] = copy.deepcopy(first).to("meta")
        self._param_names = [name for name, _ in first.named_parameters()]
        self._buffer_names = [name for name, _ in first.named_buffers()]
        self.params = nn.ParameterList(
            nn.Parameter(_stack([m.get_parameter(name) for m in modules]))
            for name in self._param_names
        )
        for i, name in enumerate(self._buffer_names):
            self.register_buffer(f"buffer{i}", _stack([m.get_buffer(name) for m in modules]))
        shared = ("z_dim", "image_shape", "out_range", "num_classes", "categories", "code_parts")
        for attr in shared:
            if hasattr(first, attr):
                setattr(self, attr, getattr(first, attr))

    def stacked(self, name: str) -> nn.Parameter:
        """The stacked tensor of the structure's parameter ``name`` (one row per module)."""
        return self.params[self._param_names.index(name)]

    def _one(self, params: dict, buffers: dict, *inputs, options: dict):
        return functional_call(self.structure, (params, buffers), inputs, options)

    def forward(self, *inputs: Tensor | None, **options) -> Tensor | tuple[Tensor, ...]:
        """The structure's output (or each of its outputs) for every module's samples;
        keyword ``options`` (not tensors) are passed to every module alike."""
        params = dict(zip(self._param_names, self.params, strict=True))
        buffers = {name: getattr(self, f"buffer{i}") for i, name in enumerate(self._buffer_names)}
        dims = tuple(None if x is None else 0 for x in inputs)
        rows = tuple(None if x is None else x.unflatten(0, (self.runs, -1)) for x in inputs)
        one = functools.partial(self._one, options=options)
        out = torch.vmap(one, in_dims=(0, 0, *dims))(params, buffers, *rows)
        if isinstance(out, tuple):
            return tuple(o.flatten(0, 1) for o in out)
        return out.flatten(0, 1)

    def train(self, mode: bool = True) -> Stacked:
        self.structure.train(mode)
        return super().train(mode)


def _stack_adam(opt: torch.optim.Adam, runs: Sequence[torch.optim.Adam]) -> None:
    """The state of ``opt`` (an Adam over stacked parameters) from the runs' optimisers (over
    their rows, in the same order): their moments stacked, or zeros where none has stepped
    yet; each run's state then holds views of its rows and the shared step count."""
    group = opt.param_groups[0]
    for j, p in enumerate(group["params"]):
        rows = [run.param_groups[0]["params"][j] for run in runs]
        states = [run.state.get(q) for run, q in zip(runs, rows, strict=True)]
        if all(states):
            steps = {float(s["step"]) for s in states}
            if len(steps) > 1:
                raise ConfigError("stacked runs must be at the same step: their optimisers differ")
            step = states[0]["step"]
            moments = {k: _stack([s[k] for s in states]) for k in ("exp_avg", "exp_avg_sq")}
        else:  # as Adam's own first step creates it (fused: a float32 step on the device)
            where = p.device if group["fused"] or group["capturable"] else "cpu"
            step = torch.zeros((), dtype=torch.float32, device=where)
            moments = {k: torch.zeros_like(p) for k in ("exp_avg", "exp_avg_sq")}
        opt.state[p] = {"step": step, **moments}
        for i, (run, q) in enumerate(zip(runs, rows, strict=True)):
            run.state[q] = {"step": step, **{k: v[i] for k, v in moments.items()}}


class _Batches:
    """Each run's next batch, run after run (written into ``out[i]`` for run i): each run
    draws its indices from its own stream, and the images of all runs are taken and
    converted in one operation (the runs train on one dataset)."""

    def __init__(self, trainers: Sequence[Trainer]):
        self.batches = [t.batches for t in trainers]

    def next(self, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
        idx = [b.next_indices()[b.part] for b in self.batches]
        pairs = zip(self.batches, idx, strict=True)
        labels = torch.cat([b.labels.index_select(0, i) for b, i in pairs])
        return self.batches[0].images_at(torch.cat(idx), out), labels


class StackedTrainer:
    """The trainers of runs that differ only in ``train.seed``, trained by one step."""

    dist = SINGLE
    augment = None

    def __init__(self, trainers: Sequence[Trainer]):
        first = trainers[0]
        if first.augment is not None:
            raise ConfigError(
                f"augment.mode: {first.cfg.augment.mode} is not available for several seeds at "
                "once; train the seeds one by one"
            )
        if first.cfg.train.precision == "bf16":  # (auto takes fp32 for them: step.uses_bf16)
            raise ConfigError(
                "train.precision: bf16 is not available for several seeds at once (bfloat16 "
                "autocast does not reach into their batched convolutions and BatchNorm); use "
                "fp32, or auto, which trains them in fp32"
            )
        if first.cfg.loss.cluster_views:  # its views draw from one run's noise stream
            raise ConfigError(
                "loss.cluster_views: not available for several seeds at once; train the seeds "
                "one by one"
            )
        config = {k: v for k, v in first.cfg.flat().items() if k != "train.seed"}
        for t in trainers[1:]:
            if {k: v for k, v in t.cfg.flat().items() if k != "train.seed"} != config:
                raise ConfigError("stacked runs must share every setting but train.seed")
            if t.step_count != first.step_count:
                raise ConfigError("stacked runs must be at the same iteration")
        if any(t.dist.world > 1 for t in trainers):
            raise ConfigError("each stacked run trains in its process alone")
        self.trainers = list(trainers)
        self.runs = len(trainers)
        self.cfg = first.cfg
        self.device = first.device
        self.batch_size = first.batch_size
        self.image_shape = first.image_shape
        self.conditional = first.conditional
        self.G = self.G_train = Stacked([t.G for t in trainers])
        self.D = self.D_train = Stacked([t.D for t in trainers])
        self.opt_g = self._adam(self.G, [t.opt_g for t in trainers])
        self.opt_d = self._adam(self.D, [t.opt_d for t in trainers])
        self.ema = (
            EMA(self.G, first.ema.decay, average=Stacked([t.ema.model for t in trainers]))
            if first.ema
            else None
        )
        self.batches = _Batches(self.trainers)

    @staticmethod
    def _adam(model: Stacked, runs: Sequence[torch.optim.Adam]) -> torch.optim.Adam:
        defaults = {k: runs[0].defaults[k] for k in ("lr", "betas", "eps", "fused", "capturable")}
        opt = torch.optim.Adam(model.parameters(), **defaults)
        _stack_adam(opt, runs)
        return opt

    @property
    def step_count(self) -> int:
        return self.trainers[0].step_count

    @step_count.setter
    def step_count(self, value: int) -> None:
        for t in self.trainers:
            t.step_count = value

    def noise(self, n: int, generator=None, out: Tensor | None = None) -> Tensor:
        """``n`` noise vectors of each run, from its own stream, run after run; written into
        ``out[i]`` for run i when ``out`` (runs, n, z_dim) is given."""
        if out is not None:
            for i, t in enumerate(self.trainers):
                t.noise(n, out=out[i])
            return out
        return torch.cat([t.noise(n) for t in self.trainers])

    def fake_labels(self, n: int) -> Tensor | None:
        if not self.conditional:
            return None
        return torch.cat([t.fake_labels(n) for t in self.trainers])

    def rand(self, shape: tuple[int, ...], normal: bool = False) -> Tensor:
        """Random numbers of ``shape``, whose first dimension holds every run's samples: each
        run's rows from its own stream."""
        rows = (shape[0] // self.runs, *shape[1:])
        return torch.cat([t.rand(rows, normal) for t in self.trainers])
