"""Generators and discriminators, built by name from the ``model`` config section.

An architecture is one entry in :data:`ARCHITECTURES`: a function
``build(cfg, image_shape, num_classes, wrap) -> (generator, discriminator)`` that returns
a :class:`~.base.Generator` and a :class:`~.base.Discriminator` (see base.py for the
calling convention and class conditioning), registered with the dataclass of its own
options, which become the config table ``model.<name>`` (``cfg.options`` in the builder).
``cfg`` is the ``model`` section (``z_dim``, ``embed_dim``, ``cond_d``, ...); ``wrap`` is
applied to every weight layer of the discriminator (spectral normalisation, when enabled).
Image shape is a property of the dataset, passed in.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm, spectral_norm

from ..options import Registry
from .base import Discriminator, Generator
from .dcgan import DCGANOptions, build_dcgan
from .mlp import MLPOptions, build_mlp

Builder = Callable[..., tuple[Generator, Discriminator]]

ARCHITECTURES: Registry[Builder] = Registry("architecture", "model.arch")
ARCHITECTURES.register(
    "mlp", build_mlp, options=MLPOptions, doc="the seed's dense networks with ReLU"
)
ARCHITECTURES.register(
    "dcgan", build_dcgan, options=DCGANOptions, doc="DCGAN's convolutional networks"
)


def build_models(cfg, image_shape: tuple[int, int, int], num_classes: int = 0):
    """Build (generator, discriminator) for ``cfg`` (a ModelConfig) and an image shape.

    ``num_classes`` > 0 makes both class-conditional when ``cfg.conditional`` is set;
    ``cfg.categories`` gives them the categorical code (see base.py), whatever the
    architecture, in ``cfg.code_parts`` parts; with ``cfg.clusters`` D has no code head and
    takes each image's category as its label instead (of a conditional model: its class's
    category, label class * K + category). Weights are initialised by ``cfg.init`` from the
    global torch RNG.
    """
    wrap = _float32_spectral_norm if cfg.spectral_norm else (lambda m: m)
    classes = num_classes if cfg.conditional else 0
    g, d = ARCHITECTURES[cfg.arch](cfg, tuple(image_shape), classes, wrap)
    if cfg.categories:
        g.categories, g.code_parts = cfg.categories, cfg.code_parts
        if cfg.clusters:  # a label per category, per category of each class if conditional
            d.project_labels(cfg.categories * max(classes, 1), wrap, cfg.code_parts)
        else:
            d.add_code_head(cfg.categories, cfg.self_condition, wrap)
    for module in (g, d):
        INITS[cfg.init](module)
    return g, d


class _Float32SpectralNorm(_SpectralNorm):
    """PyTorch's spectral norm, its power iteration and sigma computed in float32 under
    autocast (train.precision = bf16): CUDA autocast would run its matrix-vector products in
    bfloat16, whose result torch.vdot refuses to combine with the float32 vector u.

    Its power iteration writes u and v with ``copy_`` rather than PyTorch's ``out=``
    arguments (the same values), so that it also runs under ``torch.vmap`` (several runs'
    models stacked: :mod:`digitgan.training.seeds`)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.device.type == "meta":  # footprint's pass: no autocast there
            return super().forward(weight)
        with torch.autocast(weight.device.type, enabled=False):
            return super().forward(weight)

    @torch.no_grad()
    def _power_method(self, weight_mat: torch.Tensor, n_power_iterations: int) -> None:
        for _ in range(n_power_iterations):
            self._u.copy_(F.normalize(torch.mv(weight_mat, self._v), dim=0, eps=self.eps))
            self._v.copy_(F.normalize(torch.mv(weight_mat.H, self._u), dim=0, eps=self.eps))


def _float32_spectral_norm(module: nn.Module) -> nn.Module:
    """``spectral_norm(module)`` with :class:`_Float32SpectralNorm` (the same state_dict)."""
    spectral_norm(module)
    module.parametrizations.weight[0].__class__ = _Float32SpectralNorm
    return module


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def footprint(cfg, image_shape, num_classes: int, batch: int) -> tuple[int, int | None]:
    """(parameters of G and D, floats that G's and D's layers output for one batch), counted
    on the meta device, so nothing is allocated; the second is None when a forward pass on
    the meta device is not possible (an architecture using an operation it lacks)."""
    with torch.device("meta"), torch.random.fork_rng(devices=[]):
        G, D = build_models(cfg, image_shape, num_classes)
        params = sum(p.numel() for p in (*G.parameters(), *D.parameters()))
        outputs = [0]

        def count(module, inputs, output):
            if torch.is_tensor(output):
                outputs[0] += output.numel()

        leaves = [m for m in (*G.modules(), *D.modules()) if not any(m.children())]
        handles = [m.register_forward_hook(count) for m in leaves]
        labels = [torch.zeros(batch, dtype=torch.long) if m.num_classes else None for m in (G, D)]
        try:
            D(G(torch.empty(batch, cfg.z_dim), labels[0]), labels[1])
        except (RuntimeError, NotImplementedError, TypeError, ValueError):
            return params, None
        finally:
            for h in handles:
                h.remove()
    return params, outputs[0]


def structure_of(module: nn.Module) -> nn.Module:
    """The module whose layers ``module`` computes with: itself, or the ``structure`` it
    stacks (several runs' models as one: :class:`digitgan.training.seeds.Stacked`)."""
    structure = getattr(module, "structure", None)
    return structure if isinstance(structure, nn.Module) else module


def has_batch_stats(module: nn.Module) -> bool:
    """Whether ``module`` normalises by statistics of the batch (BatchNorm in training mode),
    so that one sample's output depends on the others in its batch."""
    return any(isinstance(m, _BATCH_NORMS) for m in structure_of(module).modules())


def has_forward_state(module: nn.Module) -> bool:
    """Whether a forward pass in training mode changes ``module``'s state: BatchNorm's running
    statistics, spectral norm's power-iteration vectors. Two passes over two halves of a
    batch then differ from one pass over the whole."""
    layers = structure_of(module).modules()
    return has_batch_stats(module) or any(parametrize.is_parametrized(m) for m in layers)


def _weight(m: nn.Module) -> torch.Tensor:
    """The trainable weight tensor of a layer (the original one under spectral norm)."""
    if parametrize.is_parametrized(m, "weight"):
        return m.parametrizations.weight.original
    return m.weight


@torch.no_grad()
def seed_init_(module: nn.Module) -> None:
    """The seed's init: weights ~ Normal(0, 1/sqrt(fan_in/2)), biases 0, for every Linear.

    The article calls this ``xavier_init``, but its std sqrt(2/fan_in) is He et al.'s.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear):
            _weight(m).normal_(0.0, (m.in_features / 2.0) ** -0.5)
            if m.bias is not None:
                m.bias.zero_()


@torch.no_grad()
def dcgan_init_(module: nn.Module) -> None:
    """Radford et al. 2016: conv/linear weights ~ Normal(0, 0.02), norm scales ~ Normal(1,
    0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)):
            _weight(m).normal_(0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm)):
            m.weight.normal_(1.0, 0.02)
            m.bias.zero_()


INITS: dict[str, Callable[[nn.Module], None]] = {
    "seed": seed_init_,
    "dcgan": dcgan_init_,
    "torch": lambda module: None,  # keep PyTorch's layer defaults
}


def sample_noise(
    n: int,
    z_dim: int,
    kind: str,
    generator: torch.Generator | None = None,
    device=None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Noise vectors: ``uniform`` on [-1, 1) (the seed's: ``torch.rand`` times 2 less 1, drawn
    as one ``uniform_``, the same numbers) or standard ``normal``; written into ``out`` (an
    (n, z_dim) tensor on the generator's device) when given."""
    if kind == "uniform":
        z = torch.empty(n, z_dim, device=device) if out is None else out
        return z.uniform_(-1.0, 1.0, generator=generator)
    if kind == "normal":
        where = {"device": device} if out is None else {"out": out}
        return torch.randn(n, z_dim, generator=generator, **where)
    raise ValueError(f"unknown noise kind {kind!r}")


NOISE_MEAN = {"uniform": 0.0, "normal": 0.0}
"""The mean of each noise distribution: the point the truncation trick pulls noise toward."""


def truncate_noise(z: torch.Tensor, psi: float, kind: str) -> torch.Tensor:
    """The truncation trick: noise ``z`` pulled toward its distribution's mean,
    ``mean + psi * (z - mean)``, for ``psi`` in [0, 1].

    This is the interpolation form StyleGAN applies in its latent space (Karras et al. 2019,
    "A style-based generator architecture for generative adversarial networks", eq. 3; after
    Brock et al. 2019, "Large scale GAN training for high fidelity natural image synthesis",
    whose BigGAN redraws the normal components beyond a threshold instead). It serves every
    noise distribution alike: it keeps uniform noise inside its cube and normal noise
    centred. ``psi`` = 1 returns ``z`` itself (plain sampling); ``psi`` = 0 gives the mean
    for every vector. Trading variety for typicality, smaller ``psi`` draws samples nearer
    the generator's most typical output.
    """
    if kind not in NOISE_MEAN:
        raise ValueError(f"unknown noise kind {kind!r}")
    if psi == 1:
        return z
    mean = NOISE_MEAN[kind]
    if psi == 0:
        return torch.full_like(z, mean)
    return (z - mean).mul_(psi).add_(mean)


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
