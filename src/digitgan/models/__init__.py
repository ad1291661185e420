"""Generators and discriminators, built by name from the ``model`` config section.

An architecture is one entry in :data:`MODELS`: a function
``build(cfg: ModelConfig, image_shape, num_classes) -> (generator, discriminator)``.
Every generator maps noise ``z`` of shape (N, z_dim) to images (N, C, H, W) in
the range ``generator.out_range``; every discriminator maps such images to
logits of shape (N,). Image shape is a property of the dataset, passed in.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .mlp import build_mlp

Builder = Callable[..., tuple[nn.Module, nn.Module]]

MODELS: dict[str, Builder] = {
    "mlp": build_mlp,
}


def build_models(cfg, image_shape: tuple[int, int, int], num_classes: int = 0):
    """Build (generator, discriminator) for ``cfg`` (a ModelConfig) and an image shape."""
    g, d = MODELS[cfg.arch](cfg, tuple(image_shape), num_classes)
    if cfg.init == "seed":
        for module in (g, d):
            seed_init_(module)
    return g, d


@torch.no_grad()
def seed_init_(module: nn.Module) -> None:
    """The seed's init: weights ~ Normal(0, 1/sqrt(fan_in/2)), biases 0, for every Linear.

    The article calls this ``xavier_init``, but its std sqrt(2/fan_in) is He et al.'s.
    Uses the global torch RNG (seeded by the trainer before building).
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            m.weight.normal_(0.0, (m.in_features / 2.0) ** -0.5)
            if m.bias is not None:
                m.bias.zero_()


def sample_noise(
    n: int, z_dim: int, kind: str, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Noise vectors: ``uniform`` on [-1, 1) (the seed's) or standard ``normal``."""
    if kind == "uniform":
        z = torch.rand(n, z_dim, generator=generator, device=device)
        return z.mul_(2.0).sub_(1.0)
    if kind == "normal":
        return torch.randn(n, z_dim, generator=generator, device=device)
    raise ValueError(f"unknown noise kind {kind!r}")


def interpolate_noise(z0: torch.Tensor, z1: torch.Tensor, steps: int, kind: str) -> torch.Tensor:
    """``steps`` noise vectors (steps, z_dim) on the way from ``z0`` to ``z1``, both included.

    Uniform noise is walked in a straight line, which stays inside its cube [-1, 1]^d.
    Normal noise is walked by spherical interpolation (slerp, White 2016 "Sampling
    generative networks"): a straight line between two normal vectors passes through
    vectors much shorter than any the generator saw in training, where samples fade.
    Where the two vectors are (anti)parallel slerp is undefined and the straight line is used.
    """
    t = torch.linspace(0.0, 1.0, steps, dtype=z0.dtype).unsqueeze(1)
    if kind == "normal":
        cos = torch.nn.functional.cosine_similarity(z0, z1, dim=0).clamp(-1.0, 1.0)
        omega = torch.arccos(cos)
        if torch.sin(omega) > 1e-6:
            return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)
    elif kind != "uniform":
        raise ValueError(f"unknown noise kind {kind!r}")
    return (1 - t) * z0 + t * z1
