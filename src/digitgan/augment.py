"""Differentiable augmentation of the images the discriminator sees: DiffAugment and ADA.

A GAN's discriminator overfits a small training set: it memorises the real images, its
feedback to the generator stops being useful, and training degrades. Augmenting every image D
sees, real and generated alike, with transforms that are differentiable (so G's gradient flows
back through them) shows D more varied data while G is still trained to match the real
images, not their augmentations (Zhao et al. 2020, DiffAugment; Karras et al. 2020, ADA).

Transforms (:data:`TRANSFORMS`, listed by ``augment.policy``) are functions
``fn(x, generator, out_range) -> x`` on images ``(N, C, H, W)`` whose values lie in
``out_range``; each draws its parameters per image from ``generator``. They are those of
DiffAugment, written for images in [-1, 1]: in another range, the fill is its middle (0 in
[-1, 1]) and brightness shifts scale with its width. The deterministic parts
(:func:`shift`, :func:`erase`, :func:`warp`, :func:`brightness`, :func:`saturation`,
:func:`contrast`) take the parameters explicitly. ``affine``, a small rotation and zoom, is
not DiffAugment's: it makes the second views of ``loss.cluster_views``.

:func:`augment` applies a policy with strength ``p``: each transform is applied to each image
with probability ``p`` (always at 1, the identity at 0). The strength is chosen by
``augment.mode``, an entry of :data:`AUGMENTS`: ``diffaugment`` keeps it fixed, ``ada``
adapts it during training to D's overfitting signal. Both are run state objects
(:class:`FixedStrength`, :class:`AdaptiveStrength`) whose tensors a checkpoint holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .options import Registry, opt

Tensor = torch.Tensor
Range = tuple[float, float]
UNIT: Range = (-1.0, 1.0)
"""The range the transforms are written for (DiffAugment's)."""


def _middle_and_half_width(out_range: Range) -> tuple[float, float]:
    lo, hi = out_range
    return (lo + hi) / 2, (hi - lo) / 2


def _rect(n: int, h: int, w: int, top: Tensor, left: Tensor, height: int, width: int) -> Tensor:
    """(N, 1, H, W) bools: whether each pixel lies in the ``height`` x ``width`` rectangle at
    (``top``, ``left``) of its image (per-image corners, which may lie outside the image)."""
    rows = torch.arange(h, device=top.device).view(1, h, 1)
    cols = torch.arange(w, device=top.device).view(1, 1, w)
    top, left = top.view(n, 1, 1), left.view(n, 1, 1)
    inside = (rows >= top) & (rows < top + height) & (cols >= left) & (cols < left + width)
    return inside.unsqueeze(1)


def shift(x: Tensor, dy: Tensor, dx: Tensor, fill: float = 0.0) -> Tensor:
    """Each image ``i`` moved down by ``dy[i]`` and right by ``dx[i]`` whole pixels (negative:
    up, left); what comes in from outside is ``fill``. Differentiable in ``x``."""
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device).view(1, h, 1) - dy.view(n, 1, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w) - dx.view(n, 1, 1)
    source = rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)  # (N, H, W) flat source pixel
    moved = x.reshape(n, c, h * w).gather(2, source.view(n, 1, h * w).expand(n, c, h * w))
    # the pixels whose source lies in the image are those of the moved image's rectangle
    inside = _rect(n, h, w, dy, dx, h, w)
    return moved.view(n, c, h, w).masked_fill(~inside, fill)


def erase(x: Tensor, top: Tensor, left: Tensor, size: tuple[int, int], fill: float = 0.0):
    """Each image ``i`` with the ``size`` = (height, width) rectangle whose top left corner is
    (``top[i]``, ``left[i]``) set to ``fill`` (only what of it lies inside the image)."""
    n, _, h, w = x.shape
    return x.masked_fill(_rect(n, h, w, top, left, *size), fill)


def _per_image(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


def brightness(x: Tensor, b: Tensor) -> Tensor:
    """Each image ``i`` plus ``b[i]``."""
    return x + _per_image(b)


def saturation(x: Tensor, s: Tensor) -> Tensor:
    """Each pixel's channels moved away from their mean by the factor ``s[i]`` of its image
    (0: grey; 1: unchanged)."""
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _per_image(s) + mean


def contrast(x: Tensor, c: Tensor) -> Tensor:
    """Each image ``i`` moved away from its mean (over channels and pixels) by the factor
    ``c[i]``."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _per_image(c) + mean


def _round(v: float) -> int:
    """Half up, as DiffAugment rounds its sizes: 28 / 8 = 3.5 -> 4."""
    return int(v + 0.5)


def translation(x: Tensor, generator: torch.Generator, out_range: Range = UNIT) -> Tensor:
    """DiffAugment's translation: each image shifted by a whole number of pixels drawn
    uniformly from -s..s, s = 1/8 of its height (rounded half up), and likewise across its
    width; the pixels it uncovers are the middle of ``out_range`` (zero padding in [-1, 1])."""
    n, _, h, w = x.shape
    sy, sx = _round(h / 8), _round(w / 8)
    dy = torch.randint(-sy, sy + 1, (n,), generator=generator, device=x.device)
    dx = torch.randint(-sx, sx + 1, (n,), generator=generator, device=x.device)
    return shift(x, dy, dx, _middle_and_half_width(out_range)[0])


def cutout(x: Tensor, generator: torch.Generator, out_range: Range = UNIT) -> Tensor:
    """DiffAugment's cutout (DeVries & Taylor 2017): in each image a square of half its side
    (rounded half up), its centre uniform over the image (the square may reach past the
    edge), set to the middle of ``out_range`` (0 in [-1, 1])."""
    n, _, h, w = x.shape
    size = _round(h / 2), _round(w / 2)
    # DiffAugment's offsets: 0..h (0..h - 1 for an odd size) for the centre, minus half the size
    top = torch.randint(0, h + 1 - size[0] % 2, (n,), generator=generator, device=x.device)
    left = torch.randint(0, w + 1 - size[1] % 2, (n,), generator=generator, device=x.device)
    fill = _middle_and_half_width(out_range)[0]
    return erase(x, top - size[0] // 2, left - size[1] // 2, size, fill)


def color(x: Tensor, generator: torch.Generator, out_range: Range = UNIT) -> Tensor:
    """DiffAugment's colour transforms, in its order, for images of more than one channel
    (images of one channel are returned as they are, and nothing is drawn): brightness plus
    Uniform[-0.5, 0.5) (in [-1, 1]; scaled with the range's width), saturation times
    Uniform[0, 2), contrast times Uniform[0.5, 1.5), each drawn per image."""
    if x.shape[1] == 1:
        return x
    half_width = _middle_and_half_width(out_range)[1]

    def uniform() -> Tensor:
        return torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype)

    x = brightness(x, (uniform() - 0.5) * half_width)
    x = saturation(x, 2 * uniform())
    return contrast(x, uniform() + 0.5)


def warp(
    x: Tensor, angle: Tensor, scale: Tensor, offset: Tensor | None = None, fill: float = 0.0
) -> Tensor:
    """Each image ``i`` turned by ``angle[i]`` radians (anticlockwise) and magnified by
    ``scale[i]`` about its centre, then, with ``offset`` (N, 2), its sampling grid moved by
    ``offset[i]`` (x, y) in units of half the image's width and height; bilinearly resampled,
    what comes in from outside is ``fill``. Differentiable in ``x``."""
    cos, sin = angle.cos() / scale, angle.sin() / scale
    tx, ty = (torch.zeros_like(cos),) * 2 if offset is None else offset.unbind(1)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    if fill == 0.0:
        return torch.nn.functional.grid_sample(x, grid, align_corners=False)
    return torch.nn.functional.grid_sample(x - fill, grid, align_corners=False) + fill


def affine(x: Tensor, generator: torch.Generator, out_range: Range = UNIT) -> Tensor:
    """A small rotation and zoom: each image turned by Uniform[-15, 15) degrees and magnified
    by Uniform[0.9, 1.1), the uncovered pixels the middle of ``out_range``. Mild enough that a
    digit stays the digit it was."""

    def uniform(lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * torch.rand(x.shape[0], generator=generator, device=x.device)

    angle = uniform(-15.0, 15.0) * (torch.pi / 180.0)
    return warp(x, angle, uniform(0.9, 1.1), fill=_middle_and_half_width(out_range)[0])


Transform = Callable[[Tensor, torch.Generator, Range], Tensor]
TRANSFORMS: Registry[Transform] = Registry("transform", "augment.policy")
TRANSFORMS.register("color", color, doc="brightness, saturation and contrast (3+ channels)")
TRANSFORMS.register("translation", translation, doc="shift by up to 1/8 of the image")
TRANSFORMS.register("cutout", cutout, doc="a square of half the image's side erased")
TRANSFORMS.register("affine", affine, doc="turned by up to 15 degrees, zoomed by up to 10%")


def augment(
    x: Tensor,
    policy: Sequence[str],
    p: float | Tensor,
    generator: torch.Generator,
    out_range: Range = UNIT,
) -> Tensor:
    """The transforms named in ``policy``, in order, each applied to each image with
    probability ``p`` (a number or a 0-dimensional tensor on ``x``'s device, which is read
    without a host sync). At ``p`` = 1 every transform applies to every image, as in
    DiffAugment; at ``p`` = 0 the images come back unchanged. The transforms' parameters, and
    whether each applies, are drawn per image from ``generator``, so images that are
    augmented in one call (a real and a fake batch together) take one policy and strength
    with independent parameters. Differentiable in ``x``."""
    fixed = not torch.is_tensor(p)
    if fixed and p == 0:
        return x
    for name in policy:
        y = TRANSFORMS[name](x, generator, out_range)
        if not (fixed and p == 1):
            shape = (x.shape[0], 1, 1, 1)
            applies = torch.rand(shape, generator=generator, device=x.device) < p
            y = torch.where(applies, y, x)
        x = y
    return x


# --- the strength of augmentation -----------------------------------------------------------


class FixedStrength:
    """``diffaugment``: every transform applied to each image with a fixed probability."""

    reads_sign = False
    """Whether the strength follows the sign of D's logits (which needs an objective whose
    logits' sign is D's decision: :attr:`~digitgan.losses.Objective.signed`)."""

    def __init__(self, options: DiffAugmentOptions, images_per_iteration: int, device):
        self.p: float | Tensor = options.strength

    def observe(self, real_logits: Tensor) -> None:
        """Take note of D's logits on a real batch (of one discriminator step)."""

    def adapt(self, iterations: int, mean: Callable[[Tensor], Tensor]) -> None:
        """Adjust the strength after iteration number ``iterations`` (counted from 1);
        ``mean`` averages a tensor over the processes of a distributed run."""

    def scalars(self) -> dict[str, Tensor]:
        """What to log, by name."""
        return {}

    def state(self) -> dict[str, Tensor]:
        """The tensors a checkpoint keeps, to continue exactly."""
        return {}

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        """Restore :meth:`state` (a ValueError if the tensors are unusable); a checkpoint
        without them (from a run without this mode) leaves the starting state."""


class AdaptiveStrength(FixedStrength):
    """``ada`` (Karras et al. 2020): the strength p follows D's overfitting signal on real
    images, r_t = E[sign(D(x))] over the real batches of the last ``interval`` iterations.
    After every ``interval`` iterations p moves by sign(r_t - target) x (the real images of
    those iterations) / ``ramp_images``, clipped to [0, 1]: while D is too sure of the real
    images (r_t above the target) p rises, and p can go from 0 to 1 in ``ramp_images`` real
    images. Everything stays on the device (no host sync)."""

    reads_sign = True

    def __init__(self, options: ADAOptions, images_per_iteration: int, device):
        self.options = options
        self.adjustment = options.interval * images_per_iteration / options.ramp_images
        """How far one adjustment moves p."""
        self.p = torch.tensor(options.start, device=device)
        self.signs = torch.zeros(2, device=device)
        """The sum of sign(D(x)) and the number of real images since the last adjustment."""
        self.rt = torch.zeros((), device=device)
        """r_t at the last adjustment (0 before the first)."""

    def observe(self, real_logits: Tensor) -> None:
        self.signs[0] += real_logits.detach().sign().sum()
        self.signs[1] += real_logits.numel()

    def adapt(self, iterations: int, mean: Callable[[Tensor], Tensor]) -> None:
        if iterations % self.options.interval:
            return
        self.rt = mean(self.signs[0] / self.signs[1])
        step = torch.sign(self.rt - self.options.target) * self.adjustment
        self.p = (self.p + step).clamp(0.0, 1.0)  # a new tensor: logged values stay as they were
        self.signs.zero_()

    def scalars(self) -> dict[str, Tensor]:
        return {"augment_p": self.p, "augment_rt": self.rt}

    def state(self) -> dict[str, Tensor]:
        return {"p": self.p, "signs": self.signs, "rt": self.rt}

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        if not tensors:
            return
        shapes = {"p": (), "signs": (2,), "rt": ()}
        for name, shape in shapes.items():
            v = tensors.get(name)
            if v is None or tuple(v.shape) != shape or not v.is_floating_point():
                raise ValueError(f"augment.{name} is not a float tensor of shape {shape}")
            if not bool(v.isfinite().all()):
                raise ValueError(f"augment.{name} holds NaN or infinite values")
        if not 0.0 <= float(tensors["p"]) <= 1.0:
            raise ValueError(f"augment.p is {float(tensors['p'])}, outside [0, 1]")
        device = self.p.device
        self.p, self.rt = (tensors[k].to(device, torch.float32) for k in ("p", "rt"))
        self.signs = tensors["signs"].to(device, torch.float32).clone()


@dataclass
class DiffAugmentOptions:
    """The ``augment.diffaugment`` table."""

    strength: float = opt(
        1.0,
        "probability that each transform of augment.policy applies to each image (1 = always, "
        "as in DiffAugment)",
        min=0.0,
        max=1.0,
    )


@dataclass
class ADAOptions:
    """The ``augment.ada`` table."""

    target: float = opt(
        0.6,
        "the target of D's overfitting signal r_t = E[sign(D(x))] on real images: p rises while "
        "r_t is above it and falls while below (0.6 in the paper)",
        min=0.0,
        max=1.0,
    )
    interval: int = opt(4, "adjust p every N iterations (4 in the paper)", min=1)
    ramp_images: int = opt(
        100_000,
        "the speed of p: it can go from 0 to 1 in this many real images (500,000 in the paper, "
        "for runs of millions of images)",
        min=1,
    )
    start: float = opt(0.0, "p at the start of training", min=0.0, max=1.0)


AUGMENTS: Registry[type[FixedStrength]] = Registry("augmentation", "augment.mode")
AUGMENTS.register(
    "diffaugment",
    FixedStrength,
    options=DiffAugmentOptions,
    doc="DiffAugment (Zhao et al. 2020): the policy at a fixed strength",
)
AUGMENTS.register(
    "ada",
    AdaptiveStrength,
    options=ADAOptions,
    doc="adaptive discriminator augmentation (ADA, Karras et al. 2020): the strength follows "
    "D's overfitting signal",
)
