"""Adversarial objectives and discriminator penalties: small pure functions.

Each objective is one :class:`Objective` registered once in :data:`OBJECTIVES`;
the training step looks it up by name (``loss.objective``) and never branches on
it. ``d_loss(real_logits, fake_logits)`` is minimised by the discriminator and
``g_loss(fake_logits)`` by the generator. Both reduce over the last dimension only: logits
of one run (N,) give a scalar, those of stacked runs (runs, N) one loss per run (see
:mod:`digitgan.training.seeds`). Objectives with ``real_target`` take one-sided label
smoothing (``d_loss(..., real_target=0.9)``).

Objectives with ``pairs_real`` are relativistic: their ``g_loss(fake, real)`` also takes
D's logits on a real batch (the step draws one for the generator step), and both losses
compare each fake with the real of its pair.

Penalties (:data:`PENALTIES`) regularise the discriminator; each is a :class:`Penalty`
around ``fn(D, batch) -> per-sample values`` (``batch``: the discriminator step's
:class:`PenaltyBatch`; the step takes their mean over each run's samples), registered with
its options table (``[loss.gp]``, ``[loss.r1]``, ``[loss.r2]``), whose ``weight`` turns it
on (above 0) and scales it in the D loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .options import Registry, opt

Tensor = torch.Tensor


@dataclass(frozen=True)
class Objective:
    name: str
    d_loss: Callable[..., Tensor]
    g_loss: Callable[[Tensor], Tensor]
    doc: str
    real_target: bool = False  # whether d_loss takes real_target (label smoothing)
    pairs_real: bool = False  # whether g_loss takes the real logits too: g_loss(fake, real)
    signed: bool = False  # whether a positive logit means "real" (the sign is D's decision)


def bce_d_loss(real: Tensor, fake: Tensor, real_target: float = 1.0) -> Tensor:
    """Sigmoid cross-entropy with real labelled ``real_target`` (1) and fake 0, means added.

    With target 1 this is the seed's ``D_loss_real + D_loss_fake``:
    -mean log D(x) - mean log(1 - D(G(z))), computed stably from logits
    (softplus(-l) = -log sigmoid(l)).
    """
    real_term = F.softplus(-real)
    if real_target != 1.0:  # target t: t (-log D(x)) + (1 - t) (-log(1 - D(x)))
        real_term = real_target * real_term + (1.0 - real_target) * F.softplus(real)
    return real_term.mean(-1) + F.softplus(fake).mean(-1)


def ns_g_loss(fake: Tensor) -> Tensor:
    """Non-saturating generator loss: -mean log D(G(z)) (cross-entropy against label 1)."""
    return F.softplus(-fake).mean(-1)


def minimax_g_loss(fake: Tensor) -> Tensor:
    """The original minimax generator loss: mean log(1 - D(G(z))) (saturates early on)."""
    return -F.softplus(fake).mean(-1)


def lsgan_d_loss(real: Tensor, fake: Tensor, real_target: float = 1.0) -> Tensor:
    """Least squares (Mao et al. 2017): 1/2 mean (D(x) - 1)^2 + 1/2 mean D(G(z))^2."""
    return 0.5 * (real - real_target).square().mean(-1) + 0.5 * fake.square().mean(-1)


def lsgan_g_loss(fake: Tensor) -> Tensor:
    """Least squares generator loss: 1/2 mean (D(G(z)) - 1)^2."""
    return 0.5 * (fake - 1.0).square().mean(-1)


def wgan_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Wasserstein critic loss (Arjovsky et al. 2017): mean D(G(z)) - mean D(x)."""
    return fake.mean(-1) - real.mean(-1)


def wgan_g_loss(fake: Tensor) -> Tensor:
    """Wasserstein (and hinge) generator loss: -mean D(G(z))."""
    return -fake.mean(-1)


def hinge_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018): mean relu(1 - D(x)) + mean relu(1 +
    D(G(z)))."""
    return F.relu(1.0 - real).mean(-1) + F.relu(1.0 + fake).mean(-1)


def rpgan_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Relativistic pairing loss (Jolicoeur-Martineau 2019; RpGAN as in Huang et al. 2024,
    R3GAN): mean softplus(D(G(z_i)) - D(x_i)), each fake against the real of its pair."""
    return F.softplus(fake - real).mean(-1)


def rpgan_g_loss(fake: Tensor, real: Tensor) -> Tensor:
    """The generator's side of RpGAN: mean softplus(D(x_i) - D(G(z_i)))."""
    return F.softplus(real - fake).mean(-1)


OBJECTIVES: Registry[Objective] = Registry("objective", "loss.objective")
for _o in (
    Objective(
        "ns",
        bce_d_loss,
        ns_g_loss,
        "non-saturating (the seed's): G maximises log D(G(z))",
        real_target=True,
        signed=True,
    ),
    Objective(
        "minimax",
        bce_d_loss,
        minimax_g_loss,
        "minimax (Goodfellow et al. 2014): G minimises log(1 - D(G(z)))",
        real_target=True,
        signed=True,
    ),
    Objective(
        "lsgan", lsgan_d_loss, lsgan_g_loss, "least squares (Mao et al. 2017)", real_target=True
    ),
    Objective(
        "wgan",
        wgan_d_loss,
        wgan_g_loss,
        "Wasserstein critic (Arjovsky et al. 2017); pair with loss.gp.weight",
    ),
    Objective(
        "hinge",
        hinge_d_loss,
        wgan_g_loss,
        "hinge (Lim & Ye 2017), as in SN-GAN and BigGAN",
        signed=True,
    ),
    Objective(
        "rpgan",
        rpgan_d_loss,
        rpgan_g_loss,
        "relativistic pairing (RpGAN, as in R3GAN, Huang et al. 2024); pair with loss.r1 "
        "and loss.r2",
        pairs_real=True,
    ),
):
    OBJECTIVES.register(_o.name, _o, doc=_o.doc)


def _input_grad(D, x: Tensor, labels: Tensor | None) -> Tensor:
    """d sum(D(x)) / dx, kept in the graph so the penalty can be minimised."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x, labels).sum(), x, create_graph=True)
    return grad.flatten(1)


@dataclass(frozen=True)
class PenaltyBatch:
    """What a penalty sees of one discriminator step: the real batch and its labels, the
    fake batch and the labels it was drawn for (None for unconditional models)."""

    real: Tensor
    real_labels: Tensor | None
    fake: Tensor
    fake_labels: Tensor | None
    rand: Callable[..., Tensor] = torch.rand
    """``rand(shape)``: uniform numbers in [0, 1) on the batch's device, the first dimension
    one per sample, from the run's own random stream (the trainer's :meth:`rand`): a
    penalty draws its randomness through it, so that runs stay reproducible."""


def gradient_penalty(D, batch: PenaltyBatch) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): (||grad D(x_hat)|| - 1)^2 per sample.

    x_hat = alpha x + (1 - alpha) G(z) with one alpha ~ Uniform[0, 1) per sample (not per
    pixel, not per batch), scored with the real labels. The norm is sqrt(sum g^2 + 1e-12), so
    its gradient stays finite when the input gradient is exactly zero.
    """
    real, fake = batch.real, batch.fake
    alpha = batch.rand((real.shape[0], *([1] * (real.dim() - 1))))
    x_hat = alpha * real.detach() + (1.0 - alpha) * fake.detach()
    grad = _input_grad(D, x_hat, batch.real_labels)
    norm = (grad.square().sum(dim=1) + 1e-12).sqrt()
    return (norm - 1.0).square()


def r1_penalty(D, batch: PenaltyBatch) -> Tensor:
    """R1 (Mescheder et al. 2018): 1/2 ||grad D(x)||^2 per real sample.

    ``loss.r1.gamma`` is the gamma of the paper, so the D loss gains gamma/2 ||grad||^2.
    """
    return 0.5 * _input_grad(D, batch.real, batch.real_labels).square().sum(dim=1)


def r2_penalty(D, batch: PenaltyBatch) -> Tensor:
    """R2 (Mescheder et al. 2018; with R1 in R3GAN, Huang et al. 2024): 1/2 ||grad D(G(z))||^2
    per fake sample, with the labels it was drawn for."""
    return 0.5 * _input_grad(D, batch.fake, batch.fake_labels).square().sum(dim=1)


@dataclass(frozen=True)
class Penalty:
    """A discriminator penalty: ``fn(D, batch) -> values`` of shape (N,), one per sample
    (see :class:`PenaltyBatch`; draw any randomness with ``batch.rand``); the step adds
    their mean over each run's samples, times the weight, to the D loss. Call ``D`` as
    ``D(x, labels)``: when augmentation is on, it augments ``x`` before scoring it.

    ``per_sample``: each value depends on its own sample alone (a gradient with respect to
    each input), which a discriminator with batch statistics would mix up.
    """

    fn: Callable[..., Tensor]
    per_sample: bool = True


@dataclass
class GPOptions:
    """The ``loss.gp`` table."""

    weight: float = opt(0.0, "WGAN-GP gradient penalty weight (10 in the paper; 0 = off)", min=0.0)


class _GammaWeight:
    """A penalty table whose weight in the D loss is its gamma (the penalty holds the 1/2)."""

    gamma: float

    @property
    def weight(self) -> float:
        return self.gamma


@dataclass
class R1Options(_GammaWeight):
    """The ``loss.r1`` table."""

    gamma: float = opt(0.0, "R1 penalty gamma on real data (0 = off)", min=0.0)


@dataclass
class R2Options(_GammaWeight):
    """The ``loss.r2`` table."""

    gamma: float = opt(0.0, "R2 penalty gamma on generated data (0 = off)", min=0.0)


PENALTIES: Registry[Penalty] = Registry("penalty", "loss")
PENALTIES.register(
    "gp", Penalty(gradient_penalty), options=GPOptions, doc="WGAN-GP (Gulrajani et al. 2017)"
)
PENALTIES.register(
    "r1", Penalty(r1_penalty), options=R1Options, doc="R1 on real data (Mescheder et al. 2018)"
)
PENALTIES.register(
    "r2", Penalty(r2_penalty), options=R2Options, doc="R2 on generated data (Mescheder et al. 2018)"
)


def half_cosine(step: int, total: int, end: float) -> float:
    """The schedule of every penalty's weight (``loss.penalty_end``) and of the learning rates
    (``optim.lr_end``): 1 at the start, ``end`` after ``total`` iterations, along a half cosine
    (as R3GAN decays its gamma and learning rate); constant when ``end`` is 1."""
    if end == 1.0 or total <= 0:
        return 1.0
    t = min(step, total) / total
    return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * t))


def cluster_loss(logits: Tensor) -> Tensor:
    """Information maximisation over a batch's category logits (N, K) (Krause et al. 2010,
    "Discriminative clustering by regularized information maximization"; Hu et al. 2017): the
    mean entropy of each image's prediction less the entropy of their mean, so minimising it
    makes every prediction confident and the categories equally used. It lies in [-log K, log K]:
    -log K when the batch is split evenly and each image is certain."""
    p = logits.softmax(1)
    mean_entropy = -(p * logits.log_softmax(1)).sum(1).mean()
    q = p.mean(0)
    return mean_entropy + (q * q.clamp_min(1e-12).log()).sum()


def paired_cluster_loss(logits: Tensor, view_logits: Tensor) -> Tensor:
    """Invariant information clustering (Ji et al. 2019, "Invariant information clustering for
    unsupervised image classification and segmentation"): minus the mutual information of the
    categories guessed for a batch of images (logits (N, K)) and for another view of the same
    images (``view_logits``), from their joint distribution over the batch, made symmetric.
    Minimising it makes the two views' guesses agree, confidently and with the categories
    equally used. It lies in [-log K, 0]: 0 when the guesses are independent of each other
    (all alike, say), -log K when every image and its view are certain of one category and
    the batch is split evenly."""
    joint = logits.softmax(1).T @ view_logits.softmax(1) / logits.shape[0]
    joint = ((joint + joint.T) / 2).clamp_min(1e-12)
    rows, cols = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    return -(joint * (joint.log() - rows.log() - cols.log())).sum()
