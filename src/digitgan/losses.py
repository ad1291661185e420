"""Adversarial objectives: small pure functions of the discriminator's logits.

Each objective is one :class:`Objective` registered once in :data:`OBJECTIVES`;
the training loop looks it up by name (``loss.objective``) and never branches on
it. ``d_loss(real_logits, fake_logits)`` is minimised by the discriminator and
``g_loss(fake_logits)`` by the generator; both return scalar tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


@dataclass(frozen=True)
class Objective:
    name: str
    d_loss: Callable[[Tensor, Tensor], Tensor]
    g_loss: Callable[[Tensor], Tensor]
    doc: str


def bce_d_loss(real: Tensor, fake: Tensor) -> Tensor:
    """Sigmoid cross-entropy with real labelled 1 and fake labelled 0, the two means added.

    This is the seed's ``D_loss_real + D_loss_fake``: -mean log D(x) - mean log(1 - D(G(z))),
    computed stably from logits (softplus(-l) = -log sigmoid(l)).
    """
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def ns_g_loss(fake: Tensor) -> Tensor:
    """Non-saturating generator loss: -mean log D(G(z)) (cross-entropy against label 1)."""
    return F.softplus(-fake).mean()


def minimax_g_loss(fake: Tensor) -> Tensor:
    """The original minimax generator loss: mean log(1 - D(G(z))) (saturates early on)."""
    return -F.softplus(fake).mean()


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective(
            "ns", bce_d_loss, ns_g_loss, "non-saturating (the seed's): G maximises log D(G(z))"
        ),
        Objective(
            "minimax",
            bce_d_loss,
            minimax_g_loss,
            "minimax (Goodfellow et al. 2014): G minimises log(1 - D(G(z)))",
        ),
    )
}
