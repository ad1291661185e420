"""The seed's multilayer perceptrons: dense layers with ReLU, widths configurable."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from .base import Discriminator, Generator


def _mlp(sizes: list[int], final: nn.Module | None, wrap=lambda m: m, flatten=False):
    """Dense layers fc1..fcK between ``sizes``, ReLU between them, ``final`` after the last."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if flatten:
        layers["flatten"] = nn.Flatten()
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
        layers[f"fc{i}"] = wrap(nn.Linear(a, b))
        if i < len(sizes) - 1:
            layers[f"relu{i}"] = nn.ReLU()
    if final is not None:
        layers["out"] = final
    return nn.Sequential(layers)


def build_mlp(cfg, image_shape, num_classes=0, wrap=lambda m: m):
    """The seed architecture: z -> [g_hidden] ReLU -> sigmoid image; image -> [d_hidden] ReLU
    -> logit. The discriminator's last hidden layer is its feature vector."""
    c, h, w = image_shape
    g_in = Generator.input_dim(cfg.z_dim, num_classes, cfg.embed_dim)
    G = Generator(
        _mlp([g_in, *cfg.g_hidden, c * h * w], nn.Sigmoid()),
        cfg.z_dim,
        image_shape,
        (0.0, 1.0),
        num_classes,
        cfg.embed_dim,
    )
    d_in = Discriminator.in_channels(c, num_classes, cfg.cond_d) * h * w
    features = _mlp([d_in, *cfg.d_hidden], nn.ReLU(), wrap, flatten=True)
    D = Discriminator(
        features,
        cfg.d_hidden[-1],
        wrap(nn.Linear(cfg.d_hidden[-1], 1)),
        num_classes,
        cfg.cond_d,
        wrap,
    )
    return G, D
