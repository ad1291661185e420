"""One training iteration: ``d_steps`` discriminator steps, then one generator step.

:class:`Step` computes an iteration for every model, objective, penalty, ``d_steps``,
EMA, conditioning, precision and process count, and returns a :class:`StepResult`.
Its order of work and randomness:

1. the generator inputs of the whole iteration (fake labels, then noise, batch by batch:
   one batch per discriminator step, then the generator step's) are drawn first;
2. each discriminator step takes a real batch and its fake images, augments both in one
   call (``augment.mode``), perturbs both (instance noise), scores them, adds every penalty
   that is on (each a phase of its own, drawing its own randomness, with D seeing its
   inputs augmented; every ``loss.lazy_every``-th D step, scaled by it and by the
   ``loss.penalty_end`` schedule), and takes an optimiser step (its learning rate on the
   ``optim.lr_end`` schedule);
3. the generator step scores fresh fakes, augmented, through the updated D (a relativistic
   objective also scores a fresh real batch, without gradients, to pair them with) and
   steps G;
4. the EMA of G moves towards G, and the strength of augmentation adapts (``ada``).

Where it is the same math, the step does less work:

- G's weights do not change during the D steps, so a generator without forward state
  (no BatchNorm: :func:`~digitgan.models.has_forward_state`) makes the fakes of all D
  steps in one pass;
- a discriminator without forward state (no BatchNorm, no spectral norm's power iteration)
  scores the real and the fake batch as one batch.

A specialised kernel (:mod:`.dense`) is a subclass that computes :meth:`Step.iterate`
another way. It declares the :func:`features` it handles (``FEATURES``) and the structure of
models it computes (``fits``); :func:`~.loop.make_step` uses it only for a run that both
describe.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim.adam import adam

from ..augment import augment
from ..errors import ConfigError
from ..losses import (
    OBJECTIVES,
    PENALTIES,
    PenaltyBatch,
    cluster_loss,
    half_cosine,
    paired_cluster_loss,
)
from ..models import has_forward_state
from ..models.base import code_of
from .trainer import Trainer


@dataclass
class StepResult:
    """What one iteration returns. The tensors stay on the device: reading one is a host
    sync, which the loop does only when something is logged.

    The step of several stacked runs (:class:`~.seeds.StackedTrainer`) returns one result
    whose losses and extras hold one value per run and whose logits hold every run's rows;
    :meth:`run` is one run's own result."""

    d_loss: Tensor
    """The last discriminator step's loss (penalties included)."""
    g_loss: Tensor
    real_logits: Tensor
    """D's logits on the last discriminator step's real batch."""
    fake_logits: Tensor
    """D's logits on the last discriminator step's fake batch."""
    extras: dict[str, Tensor] = field(default_factory=dict)
    """Further scalars of the iteration, by name (each penalty's value, ``<name>_penalty``)."""

    def run(self, i: int, runs: int) -> StepResult:
        """Run ``i``'s result of a step of ``runs`` stacked runs."""
        return StepResult(
            self.d_loss[i],
            self.g_loss[i],
            self.real_logits.unflatten(0, (runs, -1))[i],
            self.fake_logits.unflatten(0, (runs, -1))[i],
            {k: v[i] for k, v in self.extras.items()},
        )

    def scalars(self) -> dict[str, Tensor]:
        """Every logged scalar by name: ``D_loss``, ``G_loss``, ``D_real`` (mean D(x)),
        ``D_fake`` (mean D(G(z))) and the extras. What is logged, printed and plotted
        follows from this one dictionary."""
        return {
            "D_loss": self.d_loss,
            "G_loss": self.g_loss,
            "D_real": torch.sigmoid(self.real_logits).mean(),
            "D_fake": torch.sigmoid(self.fake_logits).mean(),
            **self.extras,
        }


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware: AMX tiles (Intel Xeon of the
    4th generation and later) or AVX-512 BF16 dot products (AMD EPYC from Zen 4, Intel Cooper
    Lake), as PyTorch reports them."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def uses_bf16(precision: str, device: torch.device, runs: int = 1) -> bool:
    """Whether G's and D's forward passes run under bfloat16 autocast: ``train.precision`` is
    bf16, or auto for one run on a CPU with bf16 matrix units (measured there,
    benchmarks/RESULTS.md: on an Intel Xeon with AMX the convolutional presets' step 1.45-1.6
    times as fast; on an AMD EPYC with AVX-512 BF16 the presets that set auto trained 1.2-1.9
    times as fast to the quality they reach in fp32; on a GPU, bf16 was slower for models
    this small). Several ``runs`` at once train in float32: autocast does not reach into
    ``torch.vmap``'s batched convolutions and BatchNorm (:class:`~.seeds.StackedTrainer`
    refuses bf16)."""
    if precision == "auto":
        return runs == 1 and device.type == "cpu" and cpu_has_bf16_units()
    return precision == "bf16"


def optimizer_step(opt: torch.optim.Optimizer) -> None:
    """``opt.step()`` for a fused Adam with one parameter group, through the function Adam's
    step calls (``torch.optim.adam.adam``) without the per-call wrapper work of
    ``Optimizer.step`` (hooks, profiler records, grad-mode switches: about 30 us a call on a
    CPU, a tenth of a millisecond per iteration): the same kernel on the same state, so the
    same numbers (tested). Any other optimiser, the first call (which creates the state) and
    a step where a parameter got no gradient go through ``opt.step()``."""
    group = opt.param_groups[0]
    params = group["params"]
    simple = (
        type(opt) is torch.optim.Adam
        and len(opt.param_groups) == 1
        and group["fused"]
        and not (group["amsgrad"] or group["decoupled_weight_decay"])
    )
    if not (simple and opt.state and all(p.grad is not None for p in params)):
        opt.step()
        return
    states = [opt.state[p] for p in params]
    beta1, beta2 = group["betas"]
    adam(
        params,
        [p.grad for p in params],
        [s["exp_avg"] for s in states],
        [s["exp_avg_sq"] for s in states],
        [],
        [s["step"] for s in states],
        fused=True,
        amsgrad=False,
        beta1=beta1,
        beta2=beta2,
        lr=group["lr"],
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=group["maximize"],
        capturable=group["capturable"],
    )


def objective_value(loss, *logits: Tensor) -> Tensor:
    """An objective's ``loss`` of D's ``logits``: (N,) of one run give its value, (runs, N) of
    stacked runs one value per run, as objectives reduce over the last dimension only
    (:mod:`digitgan.losses`); ConfigError for an objective that reduces otherwise."""
    value = loss(*logits)
    if value.shape != logits[0].shape[:-1]:
        raise ConfigError(
            f"loss.objective: its loss must reduce the logits over their last dimension only "
            f"(one loss per run of stacked runs); for logits of shape {tuple(logits[0].shape)} "
            f"it gave shape {tuple(value.shape)}"
        )
    return value


def read_scalars(result: StepResult, dist) -> dict[str, float]:
    """``result``'s scalars as floats (one host sync); across processes, their means over the
    ranks: a collective, which every rank calls at the same step."""
    scalars = result.scalars()
    values = dist.mean(torch.stack(list(scalars.values()))).tolist()
    return dict(zip(scalars, values, strict=True))


def features(trainer: Trainer) -> frozenset[str]:
    """What this run's iteration involves beyond the plain step (an unconditional, eager,
    float32, one-process step with one D step and the bare objective): a kernel runs only a
    run whose features it declares it handles."""
    cfg = trainer.cfg
    on = {
        "conditional": trainer.conditional,
        "categories": cfg.model.categories > 0,
        "several_d_steps": cfg.train.d_steps > 1,
        "label_smoothing": cfg.loss.label_smoothing > 0,
        "penalties": bool(cfg.loss.penalties()),
        "pairs_real": OBJECTIVES[cfg.loss.objective].pairs_real,
        "instance_noise": cfg.loss.instance_noise > 0,
        "augment": trainer.augment is not None,
        "bf16": uses_bf16(cfg.train.precision, trainer.device, trainer.runs),
        "compile": cfg.train.compile,
        "distributed": trainer.dist.world > 1,
        "stacked_runs": trainer.runs > 1,
    }
    return frozenset(name for name, used in on.items() if used)


class Step:
    """The generic iteration, through autograd. Call it for one iteration."""

    FEATURES: frozenset[str] | None = None
    """The features a specialised subclass handles (None: all, the generic step)."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        cfg = trainer.cfg
        self.objective = OBJECTIVES[cfg.loss.objective]
        smoothing = cfg.loss.label_smoothing
        self.d_loss = functools.partial(
            self.objective.d_loss, **({"real_target": 1.0 - smoothing} if smoothing else {})
        )
        self.penalties = [(n, w, PENALTIES[n]) for n, w in cfg.loss.penalties()]
        self.autocast = (
            functools.partial(torch.autocast, trainer.device.type, torch.bfloat16)
            if uses_bf16(cfg.train.precision, trainer.device, trainer.runs)
            else nullcontext
        )
        """The context of G's and D's forward passes: bfloat16 autocast for train.precision =
        bf16 (weights, gradients, optimiser state and losses stay float32)."""
        self.one_g_pass = not has_forward_state(trainer.G)
        self.one_d_pass = not has_forward_state(trainer.D)
        self.runs = trainer.runs
        self.policy = cfg.augment.policy
        self.categories, self.code_parts = cfg.model.categories, cfg.model.code_parts
        self.clusters = cfg.model.clusters
        self.coded = self.categories > 0 and not self.clusters
        """Whether D has a code head (learnt categories, InfoGAN's term), so returns codes."""
        self.labelled = trainer.D.num_classes > 0
        """Whether D takes labels: the dataset's classes, or (model.clusters) categories."""

    def by_run(self, x: Tensor) -> Tensor:
        """``x`` as it is for one run; for stacked runs (runs, N, ...), a row per run."""
        return x if self.runs == 1 else x.unflatten(0, (self.runs, -1))

    def objective_loss(self, loss, *logits: Tensor) -> Tensor:
        """The objective's ``loss`` of each run: its value for one run, a vector of one per
        run for stacked runs (:func:`objective_value`, without a vmap)."""
        return objective_value(loss, *(self.by_run(x) for x in logits))

    def per_run(self, loss, *tensors: Tensor) -> Tensor:
        """``loss(*tensors)`` of each run: its value for one run, a vector of one per run
        (the same function vmapped over the runs' rows) for stacked runs."""
        if self.runs == 1:
            return loss(*tensors)
        return torch.vmap(loss)(*(self.by_run(t) for t in tensors))

    def mean(self, values: Tensor) -> Tensor:
        """The mean of per-sample ``values`` over each run's samples."""
        return values.mean() if self.runs == 1 else values.unflatten(0, (self.runs, -1)).mean(1)

    def join(self, batches: list[Tensor]) -> Tensor:
        """Batches as one, each run's rows together (for stacked runs: run after run)."""
        if self.runs == 1:
            return torch.cat(batches)
        return torch.cat([b.unflatten(0, (self.runs, -1)) for b in batches], 1).flatten(0, 1)

    def parts(self, joined: Tensor, k: int) -> list[Tensor]:
        """The ``k`` equal batches that :meth:`join` joined."""
        if self.runs == 1:
            return list(joined.chunk(k))
        return [b.flatten(0, 1) for b in joined.unflatten(0, (self.runs, -1)).chunk(k, 1)]

    def backward(self, loss: Tensor) -> None:
        """Gradients of every run's ``loss``: of their sum for stacked runs, whose parameters
        are disjoint, so each run's gradient is its own loss's."""
        (loss if self.runs == 1 else loss.sum()).backward()

    @property
    def batches_taken(self) -> int:
        """How many real batches an iteration takes: one per D step, and one more for a
        relativistic objective's G step."""
        return self.trainer.cfg.train.d_steps + self.objective.pairs_real

    def schedule(self) -> None:
        """Set this iteration's learning rates on the optimisers (``optim.lr_end``), as
        float32 numbers: the value that Adam's kernel reads from a float32 device scalar
        too (:mod:`.graph`), so eager and replayed iterations take the same steps."""
        tr = self.trainer
        o = tr.cfg.optim
        scale = half_cosine(tr.step_count, tr.cfg.train.iters, o.lr_end)
        tr.opt_g.param_groups[0]["lr"] = float(np.float32(o.lr_g * scale))
        tr.opt_d.param_groups[0]["lr"] = float(np.float32(o.lr_d * scale))

    @contextmanager
    def kernels(self) -> Iterator[None]:
        """The library settings an iteration runs under, restored after it: TF32 matrix
        products for ``train.precision = tf32`` (``torch.set_float32_matmul_precision``), and
        cuDNN's autotuning for ``train.cudnn_benchmark``."""
        train = self.trainer.cfg.train
        if not (train.precision == "tf32" or train.cudnn_benchmark):
            yield
            return
        saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark
        if train.precision == "tf32":
            torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = saved[1] or train.cudnn_benchmark
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(saved[0])
            torch.backends.cudnn.benchmark = saved[1]

    def __call__(self) -> StepResult:
        tr = self.trainer
        self.schedule()
        with self.kernels():
            result = self.iterate()
        if tr.ema:
            tr.ema.update(tr.G, tr.step_count)
        tr.step_count += 1
        if tr.augment:
            tr.augment.adapt(tr.step_count, tr.dist.mean)
            result.extras |= tr.augment.scalars()
        return result

    def draw_inputs(self, out: Tensor | None = None) -> list[tuple[Tensor | None, Tensor]]:
        """(fake labels, noise) of every batch of the iteration: the D steps', then G's. The
        noise is written into the rows of ``out``, batch after batch, when it is given
        ((rows, z_dim), or (runs, rows, z_dim) for stacked runs)."""
        tr = self.trainer
        bs = tr.batch_size
        rows = [
            None if out is None else out[..., i * bs : (i + 1) * bs, :]
            for i in range(tr.cfg.train.d_steps + 1)
        ]
        return [(tr.fake_labels(bs), tr.noise(bs, out=z)) for z in rows]

    def perturb(self, x: Tensor) -> Tensor:
        """Instance noise (Sonderby et al. 2016): Gaussian noise on D's inputs, its std
        annealed linearly from ``loss.instance_noise`` to 0 over the run."""
        tr = self.trainer
        sigma = tr.cfg.loss.instance_noise * max(
            0.0, 1.0 - tr.step_count / max(1, tr.cfg.train.iters)
        )
        if sigma == 0.0:
            return x
        return x + sigma * tr.rand(x.shape, normal=True).to(x.dtype)

    def augmented(self, *batches: Tensor) -> tuple[Tensor, ...]:
        """The batches as ``augment.mode`` shows them to D: augmented in one call over all of
        them (one policy and strength; each image's parameters drawn from the noise stream),
        differentiable; as they are when augmentation is off."""
        tr = self.trainer
        if tr.augment is None:
            return batches
        x = self.join(list(batches)) if len(batches) > 1 else batches[0]
        x = augment(x, self.policy, tr.augment.p, tr.noise_gen, tr.G.out_range)
        return tuple(self.parts(x, len(batches)))

    def penalty_d(self):
        """D as the penalties call it, ``D(x, labels)``: through the augmentation when it is on
        (as the papers regularise D), so their input gradients are the unaugmented images'."""
        D = self.trainer.D_train
        if self.trainer.augment is None:
            return D
        return lambda x, labels: D(self.augmented(x)[0], labels)

    def iterate(self) -> StepResult:
        """The D steps and the G step (G and D under :attr:`autocast`, their outputs cast to
        float32, so perturbations, objectives and penalty norms are computed in float32)."""
        tr, amp = self.trainer, self.autocast
        G, D, k = tr.G_train, tr.D_train, tr.cfg.train.d_steps
        inputs = self.draw_inputs()
        fakes = self._fakes(inputs[:k])
        extras: dict[str, Tensor] = {}
        for i, ((fake_y, z), fake) in enumerate(zip(inputs[:k], fakes, strict=True)):
            x, labels = tr.batches.next()
            y = labels if self.labelled else None
            fake_y = self.judged(fake_y, z)
            real, seen_fake = self.augmented(x, fake)
            real_logits, fake_logits, guesses = self._discriminate(
                self.perturb(real), y, self.perturb(seen_fake), fake_y
            )
            if tr.augment:
                tr.augment.observe(real_logits)
            d_loss = self.objective_loss(self.d_loss, real_logits, fake_logits)
            if self.coded:
                d_loss = d_loss + self.code_terms(guesses, z, x, extras)
            lazy = tr.cfg.loss.lazy_every
            if self.penalties and (tr.step_count * k + i) % lazy == 0:
                batch = PenaltyBatch(x, y, fake, fake_y, tr.rand)
                scale = lazy * half_cosine(
                    tr.step_count, tr.cfg.train.iters, tr.cfg.loss.penalty_end
                )
                for name, weight, penalty in self.penalties:
                    with amp():  # D's input gradient is float32: its inputs are
                        value = self.mean(penalty.fn(self.penalty_d(), batch))
                    extras[f"{name}_penalty"] = value.detach()
                    d_loss = d_loss + scale * weight * value
            tr.opt_d.zero_grad(set_to_none=True)
            self.backward(d_loss)
            optimizer_step(tr.opt_d)
        D.requires_grad_(False)
        fake_y, z = inputs[k]
        with amp():
            fake = G(z, fake_y).float()
        (fake,) = self.augmented(fake)
        with amp():
            out = D(self.perturb(fake), self.judged(fake_y, z), codes=self.coded)
        g_logits = (out[0] if self.coded else out).float()
        if self.objective.pairs_real:  # a relativistic G loss pairs each fake with a real
            x, labels = tr.batches.next()
            with torch.no_grad():
                (x,) = self.augmented(x)
                with amp():
                    paired = D(self.perturb(x), labels if self.labelled else None).float()
            g_loss = self.objective_loss(self.objective.g_loss, g_logits, paired)
        else:
            g_loss = self.objective_loss(self.objective.g_loss, g_logits)
        if self.coded:
            g_loss = g_loss + tr.cfg.loss.code_weight * self.code_loss(out[1].float(), z)
        tr.opt_g.zero_grad(set_to_none=True)
        self.backward(g_loss)
        optimizer_step(tr.opt_g)
        D.requires_grad_(True)
        return StepResult(
            d_loss.detach(), g_loss.detach(), real_logits.detach(), fake_logits.detach(), extras
        )

    def judged(self, y: Tensor | None, z: Tensor) -> Tensor | None:
        """The labels D judges generated images by: those they were drawn for, or with
        model.clusters the categories their noise ``z`` picks (G reads them from ``z``),
        within their class ``y`` for a conditional model (label y * K + category)."""
        if not self.clusters:
            return y
        code = code_of(z, self.categories, self.code_parts)
        return code if y is None else y * self.categories + code

    @torch.no_grad()
    def _fakes(self, inputs: list[tuple[Tensor | None, Tensor]]) -> list[Tensor]:
        """The fake images of the D steps (float32, no graph): one pass of G when it holds."""
        G, amp = self.trainer.G_train, self.autocast
        with amp():
            if not self.one_g_pass or len(inputs) == 1:
                return [G(z, y).float() for y, z in inputs]
            labels = [y for y, _ in inputs]
            y = None if labels[0] is None else self.join(labels)
            return self.parts(G(self.join([z for _, z in inputs]), y).float(), len(inputs))

    def _discriminate(
        self, real: Tensor, y: Tensor | None, fake: Tensor, fake_y: Tensor | None
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
        """D's float32 logits on the real and the fake batch, and its code head's on both
        (None without a code head): one pass when it holds."""
        D, amp, codes = self.trainer.D_train, self.autocast, self.coded
        with amp():
            if self.one_d_pass:
                both_y = None if y is None else self.join([y, fake_y])
                out = D(self.join([real, fake]), both_y, codes=codes)
                pairs = [self.parts(o, 2) for o in out] if codes else [self.parts(out, 2)]
            else:
                r, f = D(real, y, codes=codes), D(fake, fake_y, codes=codes)
                pairs = list(zip(r, f, strict=True)) if codes else [(r, f)]
        (real_logits, fake_logits), *heads = [(a.float(), b.float()) for a, b in pairs]
        return real_logits, fake_logits, heads[0] if heads else None

    def code_terms(
        self, guesses: tuple[Tensor, Tensor], z: Tensor, real: Tensor, extras: dict
    ) -> Tensor:
        """The categorical code's part of D's loss, from the code head's logits on the real
        and the fake batch (``guesses``), the fakes' noise ``z`` and the real images ``real``:
        the weighted :meth:`code_loss`, and with ``loss.cluster_weight`` the clustering of the
        real images (:func:`~digitgan.losses.cluster_loss`, or with ``loss.cluster_views``
        :func:`~digitgan.losses.paired_cluster_loss` against the guesses on a view of them);
        each logged in ``extras``."""
        tr, weights = self.trainer, self.trainer.cfg.loss
        code = self.code_loss(guesses[1], z)
        extras["code_loss"] = code.detach()
        total = weights.code_weight * code
        if weights.cluster_weight:
            if weights.cluster_views:
                view = augment(real, weights.cluster_views, 1.0, tr.noise_gen, tr.G.out_range)
                with self.autocast():
                    view_guesses = tr.D_train(view, None, codes=True)[1].float()
                clusters = self.per_run(paired_cluster_loss, guesses[0], view_guesses)
            else:
                clusters = self.per_run(cluster_loss, guesses[0])
            extras["cluster_loss"] = clusters.detach()
            total = total + weights.cluster_weight * clusters
        return total

    def code_loss(self, code_logits: Tensor, z: Tensor) -> Tensor:
        """The cross-entropy of the code head's logits against the categories that noise ``z``
        chose, per run: InfoGAN's bound on the mutual information of code and image, less the
        code's constant entropy (log K), which D and G both minimise, weighted by
        ``loss.code_weight``."""
        return self.per_run(F.cross_entropy, code_logits, code_of(z, self.categories))
