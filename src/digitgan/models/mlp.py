"""The seed's multilayer perceptrons: dense layers with ReLU, widths configurable."""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn


def _mlp(sizes: list[int], final: nn.Module | None) -> nn.Sequential:
    """Dense layers fc1..fcK between ``sizes``, ReLU between them, ``final`` after the last."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
        layers[f"fc{i}"] = nn.Linear(a, b)
        if i < len(sizes) - 1:
            layers[f"relu{i}"] = nn.ReLU()
    if final is not None:
        layers["out"] = final
    return nn.Sequential(layers)


class MLPGenerator(nn.Module):
    """z (N, z_dim) -> hidden ReLU layers -> sigmoid image (N, C, H, W) in (0, 1)."""

    out_range = (0.0, 1.0)

    def __init__(self, z_dim: int, hidden: list[int], image_shape: tuple[int, int, int]):
        super().__init__()
        self.z_dim = z_dim
        self.image_shape = tuple(image_shape)
        self.net = _mlp([z_dim, *hidden, math.prod(image_shape)], nn.Sigmoid())

    def forward(self, z):
        return self.net(z).view(z.shape[0], *self.image_shape)


class MLPDiscriminator(nn.Module):
    """image (N, C, H, W) -> flattened -> hidden ReLU layers -> one logit per image (N,)."""

    def __init__(self, hidden: list[int], image_shape: tuple[int, int, int]):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.net = _mlp([math.prod(image_shape), *hidden, 1], None)

    def forward(self, x):
        return self.net(x.flatten(1)).squeeze(1)


def build_mlp(cfg, image_shape, num_classes=0):
    """The seed architecture (with ``g_hidden``/``d_hidden`` = [128] by default)."""
    return (
        MLPGenerator(cfg.z_dim, list(cfg.g_hidden), image_shape),
        MLPDiscriminator(list(cfg.d_hidden), image_shape),
    )
