"""DCGAN-style convolutional networks (Radford et al. 2016), sized for small images.

For an image of C x H x W (H and W divisible by 4; 1 x 28 x 28 for MNIST):

    G: input -> Linear -> BN -> ReLU -> (2g, H/4, W/4) -> ConvT 4x4/2 -> BN -> ReLU
       -> (g, H/2, W/2) -> ConvT 4x4/2 -> tanh -> (C, H, W)
    D: (C, H, W) -> Conv 4x4/2 -> LeakyReLU(0.2) -> (d, H/2, W/2) -> Conv 4x4/2 -> norm
       -> LeakyReLU(0.2) -> (2d, H/4, W/4) -> flatten = features -> Linear -> logit

g = ``model.dcgan.g_channels``, d = ``model.dcgan.d_channels``; the discriminator's norm
is ``model.dcgan.d_norm`` (``none`` for WGAN-GP, whose penalty is per sample).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from ..options import opt
from .base import Discriminator, Generator


@dataclass
class DCGANOptions:
    """The ``model.dcgan`` table."""

    g_channels: int = opt(64, "generator base channels (2g, then g)", min=1)
    d_channels: int = opt(64, "discriminator base channels (d, then 2d)", min=1)
    d_norm: str = opt(
        "none",
        "discriminator normalisation (none for WGAN-GP and R1, whose penalties are per sample)",
        choices=("none", "batch", "layer"),
    )


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # one group: normalises each sample over (C, H, W)
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def build_dcgan(cfg, image_shape, num_classes=0, wrap=lambda m: m):
    o: DCGANOptions = cfg.options
    c, h, w = image_shape
    if h % 4 or w % 4:
        raise ConfigError(f"model.arch dcgan needs image sides divisible by 4, got {h}x{w}")
    g, d = o.g_channels, o.d_channels
    g_in = Generator.input_dim(cfg.z_dim, num_classes, cfg.embed_dim)
    body = nn.Sequential(
        nn.Linear(g_in, 2 * g * (h // 4) * (w // 4), bias=False),
        nn.BatchNorm1d(2 * g * (h // 4) * (w // 4)),
        nn.ReLU(),
        nn.Unflatten(1, (2 * g, h // 4, w // 4)),
        nn.ConvTranspose2d(2 * g, g, 4, 2, 1, bias=False),
        nn.BatchNorm2d(g),
        nn.ReLU(),
        nn.ConvTranspose2d(g, c, 4, 2, 1),
        nn.Tanh(),
    )
    G = Generator(body, cfg.z_dim, image_shape, (-1.0, 1.0), num_classes, cfg.embed_dim)
    feature_dim = 2 * d * (h // 4) * (w // 4)
    features = nn.Sequential(
        wrap(nn.Conv2d(Discriminator.in_channels(c, num_classes, cfg.cond_d), d, 4, 2, 1)),
        nn.LeakyReLU(0.2),
        wrap(nn.Conv2d(d, 2 * d, 4, 2, 1)),
        _norm(o.d_norm, 2 * d),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
    )
    D = Discriminator(
        features, feature_dim, wrap(nn.Linear(feature_dim, 1)), num_classes, cfg.cond_d, wrap
    )
    return G, D
