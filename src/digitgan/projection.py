"""Finding a drawn digit in a generator: reading and preparing the drawing, searching the
noise (and, for a class-conditional model, the class) whose image is nearest to it, and the
training digits nearest to what was found.

:func:`search` is :meth:`digitgan.sampling.Sampler.project`. ``digitgan project``
(:func:`digitgan.sampling.project_file`) and the drawing pad of ``digitgan serve`` prepare an
image file with :func:`decode_image`, then :func:`find_drawing` searches it and looks up
:func:`nearest_training`. docs/usage.md describes the method and the preparation.
"""

from __future__ import annotations

import io
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .data import Dataset, Split, load_dataset
from .errors import ConfigError, DataError, ImageError, ImageTooLargeError
from .fileio import MiB, atomic_write_text, read_bounded
from .models import sample_noise
from .viz import make_grid, save_png, to_uint8

MAX_IMAGE_BYTES = 8 * MiB
"""The largest image file read."""
MAX_IMAGE_PIXELS = 4096 * 4096
"""The most pixels an image may have (checked from its header, before it is decoded)."""
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "PPM", "TIFF")
"""The formats an image file may come in (PPM includes PGM)."""
DIGIT_BOX = 20 / 28
"""The share of the image side the longer side of the digit is scaled to: MNIST's digits
fit a 20 x 20 box inside 28 x 28 (LeCun et al. 1998)."""
BLANK = 0.1
"""An image whose ink is less than this much brighter than its background is blank."""
NOISE_BOUND = {"uniform": 1.0, "normal": 3.0}
"""The box each noise component is kept in while searching: the uniform noise's own
[-1, 1], and +-3 standard deviations for normal noise."""
NARROW_AFTER = 0.25
"""The share of the steps after which a search over every class of a conditional model goes
on with each image's ``restarts`` best candidates only (of classes x restarts)."""
MAX_RESTARTS = 64
MAX_STEPS = 10_000
MAX_CANDIDATES = 4096
"""The most noise vectors one search optimises at once (images x classes x restarts)."""
NEAREST_CHUNK = 4096  # training digits compared at a time
NEAREST = 3
"""How many nearest training digits :func:`find_drawing` looks up."""
WALK_STEPS = 10
"""Frames of the walk from a found digit."""


# --- the drawing -----------------------------------------------------------------------------


def read_image(
    path, image_shape: tuple[int, int, int], fit: bool = True, what: str = "image"
) -> torch.Tensor:
    """The image file ``path`` prepared for a model of ``image_shape`` (see
    :func:`decode_image`); at most :data:`MAX_IMAGE_BYTES`, else an ImageError."""
    data = read_bounded(path, MAX_IMAGE_BYTES, what, ImageError)
    return decode_image(data, image_shape, fit, f"{what} {path}")


def decode_image(
    data: bytes,
    image_shape: tuple[int, int, int],
    fit: bool = True,
    what: str = "image",
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> torch.Tensor:
    """Encoded image ``data`` (PNG, JPEG, ...) as a float tensor ``image_shape`` (C, H, W) in
    [0, 1], drawn as MNIST draws: a light digit on a black background.

    1. Transparent pixels become background: white behind dark ink, black behind light ink.
    2. Grey (one channel) or RGB (three), as the model draws; 16-bit grey keeps its levels.
    3. A light background (the outermost pixels' mean above one half) is inverted, so that
       dark ink on paper becomes light ink on black.
    4. The background level (the outermost pixels' median) is subtracted and the brightest
       ink scaled to 1; an image whose ink is not :data:`BLANK` brighter than its background
       is blank, an ImageError.
    5. With ``fit`` (the default), as MNIST's digits were made (LeCun et al. 1998): the ink's
       bounding box is scaled, keeping its aspect ratio, so that its longer side fills
       :data:`DIGIT_BOX` of the image side, and placed so that its centre of mass lies at the
       image's centre. Without ``fit``, the whole image is resized to the model's size.

    Anything that is not such an image (not one of :data:`IMAGE_FORMATS`, damaged, smaller
    than the model's images) is an ImageError of one line starting with ``what``; one of
    more than ``max_pixels`` pixels an ImageTooLargeError, found from its header.
    """
    c, h, w = image_shape
    if c not in (1, 3):
        raise ImageError(f"{what}: this model draws {c}-channel images; only grey or RGB read")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as im:
                if im.width * im.height > max_pixels:
                    raise ImageTooLargeError(
                        f"{what}: {im.width}x{im.height} pixels, more than the "
                        f"{max_pixels:,} allowed"
                    )
                if im.width < w or im.height < h:
                    raise ImageError(
                        f"{what}: {im.width}x{im.height} pixels, smaller than the model's "
                        f"{w}x{h} images"
                    )
                rgba = _with_alpha(im, c)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        message = f"{what}: more than the {max_pixels:,} pixels allowed ({e})"
        raise ImageTooLargeError(message) from None
    except Image.UnidentifiedImageError:
        formats = ", ".join(IMAGE_FORMATS)
        raise ImageError(f"{what}: not an image file (expected one of {formats})") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        raise ImageError(f"{what}: not a readable image ({type(e).__name__}: {e})") from None
    pixels = _on_background(rgba[..., :c], rgba[..., c])
    pixels = _light_on_black(pixels, what)
    x = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))
    return _fit(x, h, w) if fit else _resize(x, h, w)


def _with_alpha(im: Image.Image, c: int) -> np.ndarray:
    """The pixels of ``im`` as (h, w, c + 1) floats in [0, 1]: ``c`` channels and alpha.
    Grey of 16 bits (or 32-bit integers, or floats in [0, 1]) keeps its levels, which
    Pillow's conversion to 8 bits would clip."""
    if im.mode.startswith("I") or im.mode == "F":
        top = 1.0 if im.mode == "F" else 65535.0
        grey = np.clip(np.asarray(im, dtype=np.float32) / top, 0, 1)[..., None]
        return np.concatenate([grey.repeat(c, axis=2), np.ones_like(grey)], axis=2)
    return np.asarray(im.convert("LA" if c == 1 else "RGBA"), dtype=np.float32) / 255


def _on_background(pixels: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``pixels`` (h, w, c) in [0, 1] over a background of the opposite brightness of their
    ink, by their ``alpha`` (h, w) in [0, 1]."""
    if alpha.min() == 1:
        return pixels
    weight = alpha.sum()
    ink = float((pixels.mean(axis=2) * alpha).sum() / weight) if weight > 0 else 0.0
    background = 1.0 if ink < 0.5 else 0.0
    a = alpha[..., None]
    return pixels * a + background * (1 - a)


def _light_on_black(pixels: np.ndarray, what: str) -> np.ndarray:
    """Light ink on black: inverted if the border is light, the background level removed and
    the brightest ink scaled to 1 (a blank image is an ImageError)."""
    grey = pixels.mean(axis=2)
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    if border.mean() > 0.5:
        pixels, border = 1 - pixels, 1 - border
    ink = np.clip(pixels - np.median(border), 0, None)
    peak = float(ink.max())
    if peak < BLANK:
        raise ImageError(f"{what}: blank (no stroke stands out from the background)")
    return ink / peak


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Image ``x`` (C, h', w') resized to (C, h, w), antialiased, clipped to [0, 1]."""
    if x.shape[1:] == (h, w):
        return x
    out = F.interpolate(x[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return out[0].clamp_(0, 1)


def _fit(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The ink of ``x`` (C, h', w') scaled into the digit box of an (h, w) image, its centre
    of mass at the centre."""
    grey = x.mean(dim=0)
    rows = torch.nonzero(grey.amax(dim=1) > BLANK).flatten()
    cols = torch.nonzero(grey.amax(dim=0) > BLANK).flatten()
    ink = x[:, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = DIGIT_BOX * min(h, w) / max(ink.shape[1:])
    size = [max(1, round(s * scale)) for s in ink.shape[1:]]
    ink = _resize(ink, *size)
    mass = ink.mean(dim=0)
    total = float(mass.sum()) or 1.0
    cy = float((mass.sum(dim=1) * torch.arange(size[0])).sum()) / total
    cx = float((mass.sum(dim=0) * torch.arange(size[1])).sum()) / total
    top = min(max(round((h - 1) / 2 - cy), 0), h - size[0])
    left = min(max(round((w - 1) / 2 - cx), 0), w - size[1])
    out = torch.zeros(x.shape[0], h, w)
    out[:, top : top + size[0], left : left + size[1]] = ink
    return out


def as_unit_images(images, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """Images (N, C, H, W), uint8 (0-255) or float in [0, 1], as a float32 tensor in [0, 1];
    a ConfigError unless they have the model's ``image_shape``."""
    x = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(image_shape) or len(x) == 0:
        raise ConfigError(
            f"images: shape {tuple(x.shape)}, expected (N, {', '.join(map(str, image_shape))}) "
            "with N >= 1 (the model's image shape)"
        )
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ConfigError("images: float images must lie in [0, 1] (uint8 ones in 0..255)")
    return x


# --- the search ------------------------------------------------------------------------------


@dataclass
class Projection:
    """What :meth:`~digitgan.sampling.Sampler.project` found, one row per target image.

    ``noise`` (N, z_dim) and ``labels`` (N,) (None for an unconditional model) are the
    generator's input whose image, ``images`` (N, C, H, W) in [0, 1], is nearest to each
    target; ``distance`` (N,) is the root mean squared difference of those images from the
    targets, per pixel, in [0, 1] units. ``steps`` optimiser steps were taken (fewer than
    asked when the time limit stopped the search: ``stopped_early``) in ``seconds``.
    """

    noise: torch.Tensor
    labels: torch.Tensor | None
    images: torch.Tensor
    distance: torch.Tensor
    steps: int
    seconds: float
    stopped_early: bool


def check_search(
    restarts: int = 4, steps: int = 300, lr: float = 0.1, time_limit: float | None = None
) -> None:
    """A ConfigError naming the option unless the search's settings are in range."""
    checks = [
        ("restarts", restarts, isinstance(restarts, int) and 1 <= restarts <= MAX_RESTARTS),
        ("steps", steps, isinstance(steps, int) and 0 <= steps <= MAX_STEPS),
        ("lr", lr, isinstance(lr, (int, float)) and 0 < lr < math.inf),
    ]
    if time_limit is not None:
        ok = isinstance(time_limit, (int, float)) and 0 <= time_limit < math.inf
        checks.append(("time_limit", time_limit, ok))
    for name, value, ok in checks:
        if not ok or isinstance(value, bool):
            bounds = {"restarts": f"1 to {MAX_RESTARTS}", "steps": f"0 to {MAX_STEPS:,}"}
            want = bounds.get(name, "a positive number" if name == "lr" else "seconds >= 0")
            raise ConfigError(f"--{name.replace('_', '-')} {value!r}: expected {want}")


def search(
    gan,
    targets,
    labels=None,
    *,
    restarts: int = 4,
    steps: int = 300,
    lr: float = 0.1,
    seed: int = 0,
    time_limit: float | None = None,
) -> Projection:
    """The noise (and class) whose image under ``gan``'s generator is nearest to each target,
    by gradient descent on the pixels' squared difference; see ``Sampler.project``."""
    t0 = time.perf_counter()
    check_search(restarts, steps, lr, time_limit)
    x = as_unit_images(targets, gan.image_shape)
    n, k, kind = len(x), gan.num_classes, gan.config.model.noise
    classes = gan.labels(n, labels) if labels is not None or not k else None
    each = restarts * (k if k and classes is None else 1)  # candidates per image
    if n * each > MAX_CANDIDATES:
        raise ConfigError(
            f"--restarts {restarts}: {n} images x {each // restarts} classes x {restarts} "
            f"restarts = {n * each:,} searches, more than the {MAX_CANDIDATES:,} allowed at once"
        )
    device = gan.device
    cand_labels = None  # the class of each candidate: image i's are rows i*each .. (i+1)*each-1
    if k and classes is None:  # every class, restarts times
        cand_labels = torch.arange(k).repeat(n * restarts).to(device)
    elif k:
        cand_labels = classes.repeat_interleave(each).to(device)
    z = gan.noise(n * each, seed).to(device).requires_grad_(True)
    target = x.to(device).repeat_interleave(each, dim=0)
    bound = NOISE_BOUND[kind]
    redraw = torch.Generator(device=device).manual_seed(seed)
    optimiser = torch.optim.Adam([z], lr=lr)
    deadline = None if time_limit is None else t0 + time_limit
    narrow_at = int(steps * NARROW_AFTER) if each > restarts else None
    done = 0
    with torch.enable_grad():
        while done < steps and (deadline is None or time.perf_counter() < deadline):
            if done == narrow_at:  # the best `restarts` of each image's candidates go on
                with torch.no_grad():
                    err = _errors(gan, z, cand_labels, target).view(n, each)
                offsets = torch.arange(n, device=device)[:, None] * each
                keep = (err.topk(restarts, dim=1, largest=False).indices + offsets).flatten()
                z, optimiser = _narrowed(z, optimiser, keep, lr)
                cand_labels, target, each = cand_labels[keep], target[keep], restarts
            loss = _errors(gan, z, cand_labels, target).sum()
            (z.grad,) = torch.autograd.grad(loss, [z])
            optimiser.step()
            with torch.no_grad():
                _stochastic_clip(z, bound, kind, redraw)
            done += 1
    with torch.no_grad():
        err, best = _errors(gan, z, cand_labels, target).view(n, each).min(dim=1)
        best += torch.arange(n, device=device) * each
        z_best = z.detach()[best]
        label_best = None if cand_labels is None else cand_labels[best]
        images = gan.image_of(z_best, label_best)
    return Projection(
        noise=z_best.cpu(),
        labels=None if label_best is None else label_best.cpu(),
        images=images.cpu(),
        distance=err.sqrt().cpu(),
        steps=done,
        seconds=time.perf_counter() - t0,
        stopped_early=done < steps,
    )


def _narrowed(z: torch.Tensor, optimiser: torch.optim.Adam, keep: torch.Tensor, lr: float):
    """Rows ``keep`` of the noise searched, and an Adam optimiser for them that goes on with
    their moment estimates."""
    kept = z.detach()[keep].clone().requires_grad_(True)
    narrower = torch.optim.Adam([kept], lr=lr)
    state = optimiser.state.get(z)
    if state:
        narrower.state[kept] = {
            key: value[keep].clone() if value.shape[:1] == z.shape[:1] else value.clone()
            for key, value in state.items()
        }
    return kept, narrower


def _errors(gan, z: torch.Tensor, labels, target: torch.Tensor) -> torch.Tensor:
    """Each image's mean squared difference from its target."""
    return (gan.image_of(z, labels) - target).square().flatten(1).mean(dim=1)


def _stochastic_clip(z: torch.Tensor, bound: float, kind: str, gen: torch.Generator) -> None:
    """Components of ``z`` outside [-bound, bound] drawn afresh from the noise distribution
    (clipped to the box): stochastic clipping (Lipton & Tripathi 2017, "Precise recovery of
    latent vectors from generative adversarial networks"), which keeps the search where the
    generator was trained without pinning components to the edge."""
    outside = z.abs() > bound
    if outside.any():
        fresh = sample_noise(z.shape[0], z.shape[1], kind, gen, z.device).clamp_(-bound, bound)
        z.copy_(torch.where(outside, fresh, z))


# --- the training digits nearest to an image ---------------------------------------------------


def training_digits(gan) -> Split:
    """The training split of the dataset ``gan`` was trained on (a DataError if it cannot be
    loaded here, or its images are not the model's shape)."""
    spec = gan.meta.get("dataset") or gan.config.data.dataset
    data: Dataset = load_dataset(spec, gan.config.data.data_dir or None)
    if data.image_shape != tuple(gan.image_shape):
        raise DataError(
            f"dataset {data.name}: images {data.image_shape}, the model draws {gan.image_shape}"
        )
    return data.train


def nearest_training(
    images: torch.Tensor, train: Split, k: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image (N, C, H, W) in [0, 1], its ``k`` nearest training images by Euclidean
    distance on the pixels: (distances (N, k), reported as the root mean squared difference
    per pixel as :class:`Projection` reports its own, and indices (N, k) into the split),
    nearest first."""
    x = images.flatten(1).float().cpu()
    ref = torch.from_numpy(train.images.reshape(len(train.images), -1))
    k = min(k, len(ref))
    best_d = torch.full((len(x), 0), math.inf)
    best_i = torch.zeros((len(x), 0), dtype=torch.long)
    for start in range(0, len(ref), NEAREST_CHUNK):
        chunk = ref[start : start + NEAREST_CHUNK].float() / 255
        d, i = torch.cdist(x, chunk).topk(min(k, len(chunk)), dim=1, largest=False)
        best_d, order = torch.cat([best_d, d], dim=1).topk(k, dim=1, largest=False)
        best_i = torch.cat([best_i, i + start], dim=1).gather(1, order)
    return best_d / math.sqrt(x.shape[1]), best_i


def training_digits_or_note(gan) -> tuple[Split | None, str | None]:
    """:func:`training_digits`, or (None, the reason in one line) when they cannot be had."""
    try:
        return training_digits(gan), None
    except DataError as e:
        return None, f"no nearest training digits: {e}"


# --- a drawing, found: the search, the nearest training digits, a walk -------------------------


@dataclass
class Found:
    """One drawing found in a model (:func:`find_drawing`).

    ``drawing`` (C, H, W) is the prepared drawing, ``projection`` the search's result for it
    (one row). ``nearest`` (k, C, H, W) are the training digits nearest to the model's digit
    (a memorisation check: a model digit that is all but one of them may be a copy), with
    their ``nearest_distance`` (k,) (the same distance as the projection's), their
    ``nearest_index`` in the training split and their ``nearest_label``; None, with
    ``nearest_note`` saying why, when the training digits could not be loaded. ``walk``
    (frames, C, H, W) walks from the found noise to the first noise vector of seed
    ``walk_to``, within the found class. ``files`` lists what :func:`save_found` wrote.
    """

    drawing: torch.Tensor
    projection: Projection
    walk: torch.Tensor
    walk_to: int
    nearest: torch.Tensor | None = None
    nearest_distance: torch.Tensor | None = None
    nearest_index: torch.Tensor | None = None
    nearest_label: torch.Tensor | None = None
    nearest_note: str | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def label(self) -> int | None:
        labels = self.projection.labels
        return None if labels is None else int(labels[0])

    def summary(self) -> dict:
        """The numbers, as JSON-able values (no images)."""
        p = self.projection
        nearest = []
        if self.nearest is not None:
            for d, i, y in zip(
                self.nearest_distance, self.nearest_index, self.nearest_label, strict=True
            ):
                nearest.append({"index": int(i), "label": int(y), "distance": float(d)})
        return {
            "label": self.label,
            "distance": float(p.distance[0]),
            "noise": p.noise[0].tolist(),
            "steps": p.steps,
            "seconds": round(p.seconds, 3),
            "stopped_early": p.stopped_early,
            "nearest": nearest,
            "nearest_note": self.nearest_note,
            "walk_to": self.walk_to,
        }


def find_drawing(
    gan,
    drawing: torch.Tensor,
    train: Split | None = None,
    train_note: str | None = None,
    *,
    label: int | None = None,
    restarts: int = 4,
    steps: int = 300,
    seed: int = 0,
    time_limit: float | None = None,
    walk_steps: int = WALK_STEPS,
    walk_to: int = 1,
    nearest: int = NEAREST,
) -> Found:
    """Project one prepared ``drawing`` (C, H, W) into ``gan`` (``Sampler.project``, with
    ``label`` fixing a conditional model's class), look up the ``nearest`` training digits
    of ``train`` (a Split; None: none, ``train_note`` says why) nearest to the model's digit,
    and walk ``walk_steps`` frames from the found noise toward seed ``walk_to``'s."""
    p = gan.project(
        drawing[None],
        None if label is None else [label],
        restarts=restarts,
        steps=steps,
        seed=seed,
        time_limit=time_limit,
    )
    z_to = gan.noise(1, walk_to)[0]
    label_found = None if p.labels is None else int(p.labels[0])
    found = Found(drawing, p, gan.walk(p.noise[0], z_to, walk_steps, label_found), walk_to)
    if train is None:
        found.nearest_note = train_note
        return found
    distance, index = nearest_training(p.images, train, nearest)
    found.nearest_distance, found.nearest_index = distance[0], index[0]
    found.nearest = torch.from_numpy(train.images[index[0].numpy()]).float() / 255
    found.nearest_label = torch.from_numpy(train.labels[index[0].numpy()].astype(np.int64))
    return found


def output_folder(out) -> Path:
    """``out`` as a folder results can be written into (made if missing), or a ConfigError."""
    out = Path(out)
    if "\x00" in str(out):
        raise ConfigError(f"--out {str(out)!r}: not a folder name (it holds a NUL character)")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: folder {out.parent} does not exist")
    return out


def save_found(found: Found, out, **about) -> list[Path]:
    """Write into folder ``out`` (made if missing; each file atomically, replacing an older
    one): ``projection.png``, one row of the drawing, the model's digit and the nearest
    training digits; ``walk.png``, the walk; ``projection.json``, :meth:`Found.summary` and
    ``about``. Returns the files (also kept in ``found.files``)."""
    out = output_folder(out)
    try:
        out.mkdir(exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--out {out}: cannot make the folder: {e.strerror or e}") from None
    row = [found.drawing[None], found.projection.images]
    if found.nearest is not None:
        row.append(found.nearest)
    row = torch.cat(row)
    found.files = [out / "projection.png", out / "walk.png"]
    for images, path in zip((row, found.walk), found.files, strict=True):
        save_png(path, make_grid(to_uint8(images), nrow=len(images)))
    doc = {**about, **found.summary()}
    atomic_write_text(out / "projection.json", json.dumps(doc, indent=2) + "\n")
    found.files.append(out / "projection.json")
    return found.files
