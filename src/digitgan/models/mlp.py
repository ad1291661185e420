"""The seed's multilayer perceptrons: dense layers with ReLU, widths configurable."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import nn
from torch.nn.utils import parametrize

from ..options import opt
from .base import Discriminator, Generator


@dataclass
class MLPOptions:
    """The ``model.mlp`` table."""

    g_hidden: list[int] = opt([128], "widths of the generator's hidden dense layers", min=1)
    d_hidden: list[int] = opt([128], "widths of the discriminator's hidden dense layers", min=1)


class DenseReLU(nn.Sequential):
    """Dense layers fc1..fcK with ReLU between them and an activation ``out`` after the last
    (after an optional ``flatten``): the structure that the dense kernel
    (digitgan/training/dense.py) computes by hand. A subclass is not such a chain."""

    def linear_layers(self) -> list[nn.Linear]:
        return [m for m in self if isinstance(m, nn.Linear)]

    @property
    def final(self) -> nn.Module:
        """The activation after the last dense layer."""
        return self[-1]

    def parametrized(self) -> bool:
        """Whether a layer's weight is computed (spectral norm), not a plain tensor."""
        return any(parametrize.is_parametrized(m) for m in self.linear_layers())


def _mlp(sizes: list[int], final: nn.Module, wrap=lambda m: m, flatten=False) -> DenseReLU:
    """Dense layers fc1..fcK between ``sizes``, ReLU between them, ``final`` after the last."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if flatten:
        layers["flatten"] = nn.Flatten()
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
        layers[f"fc{i}"] = wrap(nn.Linear(a, b))
        if i < len(sizes) - 1:
            layers[f"relu{i}"] = nn.ReLU()
    layers["out"] = final
    return DenseReLU(layers)


def build_mlp(cfg, image_shape, num_classes=0, wrap=lambda m: m):
    """The seed architecture: z -> [g_hidden] ReLU -> sigmoid image; image -> [d_hidden] ReLU
    -> logit. The discriminator's last hidden layer is its feature vector."""
    o: MLPOptions = cfg.options
    c, h, w = image_shape
    g_in = Generator.input_dim(cfg.z_dim, num_classes, cfg.embed_dim)
    G = Generator(
        _mlp([g_in, *o.g_hidden, c * h * w], nn.Sigmoid()),
        cfg.z_dim,
        image_shape,
        (0.0, 1.0),
        num_classes,
        cfg.embed_dim,
    )
    d_in = Discriminator.in_channels(c, num_classes, cfg.cond_d) * h * w
    features = _mlp([d_in, *o.d_hidden], nn.ReLU(), wrap, flatten=True)
    D = Discriminator(
        features,
        o.d_hidden[-1],
        wrap(nn.Linear(o.d_hidden[-1], 1)),
        num_classes,
        cfg.cond_d,
        wrap,
    )
    return G, D
