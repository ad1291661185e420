"""Using a trained generator: load a run or checkpoint, draw samples, class grids and walks."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch

from .config import Config
from .errors import ConfigError
from .models import build_models, interpolate_noise, sample_noise, truncate_noise
from .models.base import Category, category_choice, category_text, check_label_values, with_code
from .projection import (
    Found,
    Projection,
    check_search,
    find_drawing,
    output_folder,
    read_image,
    save_found,
    search,
    training_digits_or_note,
)
from .store.checkpoint import (
    EXPORT_MODEL,
    check_models,
    checkpoint_config,
    load_module_state,
    read_checkpoint,
    resolve_checkpoint,
)
from .store.exported import read_export
from .viz import make_grid, save_png, to_uint8

Labels = int | Sequence[int] | np.ndarray | torch.Tensor | None

MAX_DRAW_BYTES = 2 << 30
"""The most memory one draw may take (its noise and its float images): 2 GiB."""
MAX_GRID_IMAGES = 10_000
"""The most images in one PNG grid (a 100 x 100 grid)."""


def check_truncation(psi) -> float:
    """``psi`` as a float if it is a truncation (a number from 0 to 1), else a ConfigError."""
    number = isinstance(psi, Real) and not isinstance(psi, bool)
    if not (number and 0 <= psi <= 1):  # NaN fails the comparison too
        raise ConfigError(
            f"--truncation {psi!r}: expected a number from 0 (every sample at the mean noise) "
            "to 1 (plain sampling)"
        )
    return float(psi)


class Sampler:
    """A trained generator, ready to draw images. Made by :func:`load`.

    When the run kept an exponential moving average of the generator, that is the one
    loaded (``ema`` is True).

    Every drawing method takes ``truncation``, the truncation trick's psi in [0, 1]: the
    noise is pulled toward its mean, ``z' = mean + psi * (z - mean)``, before the generator
    sees it (see :func:`~digitgan.models.truncate_noise`). 1 (the default) is plain
    sampling; smaller values give more typical, less varied samples; 0 gives the generator's
    image of the mean noise for every sample.
    """

    def __init__(
        self, generator: torch.nn.Module, config: Config, meta: dict, path: Path, ema: bool = False
    ):
        self.generator = generator.eval()
        self.config = config
        self.meta = meta
        self.path = path
        self.ema = ema

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["image_shape"])

    @property
    def step(self) -> int:
        """Iterations the model was trained for."""
        return int(self.meta["step"])

    @property
    def num_classes(self) -> int:
        """Number of classes a conditional model draws; 0 for an unconditional one."""
        return self.generator.num_classes

    @property
    def categories(self) -> int:
        """Number of categories an unconditional model learnt without labels
        (``model.categories``); 0 for none."""
        return self.generator.categories

    @property
    def code_parts(self) -> int:
        """The parts a model's categories come in (``model.code_parts``: one digit of the
        category each, as Stacked MNIST's channels); 1 for a category in one piece."""
        return self.generator.code_parts

    @property
    def class_names(self) -> tuple[str, ...]:
        names = self.meta.get("class_names") or [str(i) for i in range(self.num_classes)]
        return tuple(names)

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def max_draw(self) -> int:
        """The most samples one call draws: their noise and float images fit in
        :data:`MAX_DRAW_BYTES`."""
        c, h, w = self.image_shape
        return MAX_DRAW_BYTES // (4 * (self.config.model.z_dim + c * h * w))

    def _check_count(self, n: int, what: str = "--n", limit: int | None = None) -> None:
        limit = self.max_draw() if limit is None else min(limit, self.max_draw())
        if not 0 <= n <= limit:
            shape = "x".join(map(str, self.image_shape))
            raise ConfigError(
                f"{what} {n}: draw 0 to {limit:,} images of {shape} at a time (split larger "
                "draws over several calls with other seeds)"
            )

    def noise(self, n: int, seed: int = 0, category: Category | None = None) -> torch.Tensor:
        """``n`` noise vectors, the same for a given seed on every device; with ``category``
        (models with learnt categories), each made to draw that category
        (:func:`~digitgan.models.base.with_code`). A model whose categories are a code in
        parts (:attr:`code_parts`, as ``stacked``'s, one per channel) also takes one value
        per part, None (or "any") for a part left to the noise: ``(3, None, 7)``."""
        if not isinstance(seed, Integral) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise ConfigError(f"--seed {seed!r}: a seed is an integer in 0..2^63-1")
        seed = int(seed)  # (numpy's integers too)
        self._check_count(n)
        self._check_category(category)
        gen = torch.Generator().manual_seed(seed)
        m = self.config.model
        # torch's CPU normal_ transforms its numbers in blocks of 16 and redraws a last, partial
        # block, so n vectors alone would not be the first n of a larger draw: whole blocks
        # keep every draw of a seed the prefix of a larger one
        size = n * m.z_dim
        z = sample_noise(1, -(-size // 16) * 16, m.noise, gen)[0, :size].view(n, m.z_dim)
        if category is None:
            return z
        return with_code(z, self.categories, category, self.code_parts)

    def _check_grid(self, n: int, rows: int = 1) -> None:
        """A ConfigError unless ``n`` samples a row, ``rows`` rows, make a PNG grid: at least
        one sample, and :data:`MAX_GRID_IMAGES` at most in all."""
        self._check_count(n, "--n", MAX_GRID_IMAGES // rows)
        if n == 0:
            raise ConfigError("--n: a PNG grid needs at least one sample")

    def _check_category(self, category: Category | None) -> None:
        """A ConfigError unless ``category`` is None or one of the model's categories (of a
        code in parts, possibly part by part: :func:`~digitgan.models.base.category_choice`)."""
        if category is None:
            return
        if not self.categories:
            raise ConfigError(
                "--category: this model learnt no categories (its model.categories is 0)"
            )
        try:
            category_choice(category, self.categories, self.code_parts)
        except ValueError as e:
            raise ConfigError(
                f"--category {category_text(category)}: this model has {self.categories} "
                f"categories: {e}"
            ) from None

    def labels(self, n: int, labels: Labels = None) -> torch.Tensor | None:
        """Labels for ``n`` samples: one int for all, one per sample, or (default) the classes
        in turn 0, 1, ..., K-1, 0, 1, ... Unconditional models take none."""
        if not self.num_classes:
            if labels is not None:
                raise ConfigError("--label: this model is unconditional; it draws no chosen class")
            return None
        if labels is None:
            return torch.arange(n) % self.num_classes
        try:
            t = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError):
            t = None
        if t is None or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ConfigError(f"--label: expected an integer or one per sample, got {labels!r}")
        t = (t.expand(n) if t.dim() == 0 else t.flatten()).long()  # one for all, or one each
        if t.numel() != n:
            raise ConfigError(f"--label: {t.numel()} labels for {n} samples")
        try:
            check_label_values(t, self.num_classes)
        except ValueError as e:
            raise ConfigError(f"--label: {e}") from None
        return t

    @torch.no_grad()
    def decode(
        self,
        z: torch.Tensor,
        labels: Labels = None,
        batch_size: int = 1000,
        truncation: float = 1.0,
    ) -> torch.Tensor:
        """Images (n, C, H, W) in [0, 1] for noise ``z`` (and labels, see :meth:`labels`), in
        batches, without gradients; ``z`` is truncated by ``truncation`` first."""
        psi = check_truncation(truncation)
        labels = self.labels(z.shape[0], labels)
        z = truncate_noise(z, psi, self.config.model.noise)
        out = []
        for i in range(0, z.shape[0], batch_size):
            y = None if labels is None else labels[i : i + batch_size]
            out.append(self.image_of(z[i : i + batch_size], y).cpu())
        return torch.cat(out) if out else torch.empty(0, *self.image_shape)

    def image_of(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The generator's images (n, C, H, W) in [0, 1] for noise ``z`` and checked
        ``labels``, in one batch on the model's device, differentiable in ``z`` (outside
        ``torch.no_grad``)."""
        lo, hi = self.generator.out_range
        y = None if labels is None else labels.to(self.device)
        return ((self.generator(z.to(self.device), y) - lo) / (hi - lo)).clamp(0, 1)

    def generate(
        self,
        n: int,
        seed: int = 0,
        labels: Labels = None,
        batch_size: int = 1000,
        truncation: float = 1.0,
        category: Category | None = None,
    ) -> torch.Tensor:
        """``n`` images as a float tensor (n, C, H, W) in [0, 1], reproducible for ``seed``.

        ``labels`` chooses the classes of a conditional model (see :meth:`labels`),
        ``category`` the learnt category of a model with ``model.categories`` (see
        :meth:`noise`); ``truncation`` is the truncation trick's psi (1: plain sampling; see
        the class).
        ``generate(k, s)`` is the first k of ``generate(n, s)`` for k < n (the same noise; to
        float rounding, which a convolution may do differently for another batch size).
        """
        check_truncation(truncation)
        return self.decode(self.noise(n, seed, category), labels, batch_size, truncation)

    def sample(
        self,
        n: int,
        seed: int = 0,
        labels: Labels = None,
        truncation: float = 1.0,
        category: Category | None = None,
    ) -> np.ndarray:
        """``n`` images as a uint8 array (n, C, H, W), reproducible for ``seed``."""
        return to_uint8(self.generate(n, seed, labels, truncation=truncation, category=category))

    def class_grid(
        self, per_class: int = 8, seed: int = 0, truncation: float = 1.0
    ) -> torch.Tensor:
        """A conditional model's classes by rows: (K * per_class, C, H, W), row k = class k,
        column j = the same noise vector in every row. A model with learnt categories draws
        them by rows instead, row k = category k (column j: one noise vector made to draw
        each)."""
        check_truncation(truncation)
        k = self.num_classes or self.categories
        if not k:
            raise ConfigError(
                "--class-grid: this model is unconditional and learnt no categories; it has "
                "no classes"
            )
        self._check_count(per_class, "--n", MAX_GRID_IMAGES // k)
        if per_class < 1:
            raise ConfigError(f"--n {per_class}: a class grid needs at least one per class")
        z = self.noise(per_class, seed)
        if not self.num_classes:
            rows = [with_code(z, k, c, self.code_parts) for c in range(k)]
            return self.decode(torch.cat(rows), truncation=truncation)
        labels = torch.arange(k).repeat_interleave(per_class)
        return self.decode(z.repeat(k, 1), labels, truncation=truncation)

    def interpolate(
        self,
        seed_a: int,
        seed_b: int,
        steps: int = 10,
        label: int | None = None,
        truncation: float = 1.0,
        category: Category | None = None,
    ) -> torch.Tensor:
        """``steps`` images walking from seed_a's first sample to seed_b's (both included), along
        :func:`~digitgan.models.interpolate_noise`: linear for uniform noise, slerp for normal.
        With ``truncation`` every point of the walk is truncated (the same walk as between the
        truncated ends: both interpolations commute with scaling toward the mean 0). With
        ``category`` both ends draw that learnt category, and so does every point between
        (both interpolations weigh the ends by non-negative weights, which keeps the largest
        code entry where the ends have it)."""
        psi = check_truncation(truncation)
        a, b = (self.noise(1, s, category)[0] for s in (seed_a, seed_b))
        return self.walk(a, b, steps, label, psi)

    def walk(
        self,
        z_a: torch.Tensor,
        z_b: torch.Tensor,
        steps: int = 10,
        label: int | None = None,
        truncation: float = 1.0,
    ) -> torch.Tensor:
        """``steps`` images walking from noise vector ``z_a`` (z_dim,) to ``z_b``, as
        :meth:`interpolate` walks between two seeds' (e.g. from a :meth:`project` result)."""
        psi = check_truncation(truncation)
        if steps < 2:
            raise ConfigError(f"--n {steps}: a walk needs at least 2 steps")
        self._check_count(steps, "--n", MAX_GRID_IMAGES)
        z = interpolate_noise(z_a.cpu(), z_b.cpu(), steps, self.config.model.noise)
        if label is None and self.num_classes:
            label = 0  # a conditional walk stays within one class
        return self.decode(z, label, truncation=psi)

    def project(self, images, labels: Labels = None, **options) -> Projection:
        """Find ``images`` in the model: for each image (N, C, H, W; uint8 or float in
        [0, 1], shaped as the model's), the noise vector, and for a conditional model the
        class, whose generated image is nearest to it (root mean squared difference per
        pixel). A :class:`~digitgan.projection.Projection`.

        Each image is searched from ``restarts`` (default 4) noise vectors drawn with
        ``seed`` (default 0; for a conditional model: that many for every class, unless
        ``labels`` fixes the classes, as in :meth:`labels`), each improved by ``steps``
        (default 300) steps of Adam at rate ``lr`` (default 0.1) on the squared pixel
        difference, with noise components that leave the noise's range drawn afresh
        (stochastic clipping); the best of them wins. A search over every class goes on,
        after a quarter of the steps, with each image's ``restarts`` best candidates only.
        ``time_limit`` (seconds; default none) stops the search early, keeping what it
        found. These keywords are those of :func:`digitgan.projection.search`. To project a
        drawing from a file, prepare it with :func:`~digitgan.projection.read_image` first.
        """
        return search(self, images, labels, **options)

    def save_samples(
        self,
        path: str | Path,
        n: int,
        seed: int = 0,
        labels: Labels = None,
        truncation: float = 1.0,
        category: Category | None = None,
    ) -> Path:
        """Write ``n`` samples to ``.png`` (a grid) or ``.npy`` (uint8, (n, H, W) for one
        channel, (n, C, H, W) for more); ``category`` as in :meth:`generate`."""
        check_truncation(truncation)
        path = _output_path(path, (".png", ".npy"))
        if path.suffix == ".png":
            self._check_grid(n)
        images = self.sample(n, seed, labels, truncation, category)
        if path.suffix == ".png":
            save_png(path, make_grid(images))
        else:
            arr = images[:, 0] if images.shape[1] == 1 else images
            with path.open("wb") as f:
                np.save(f, np.ascontiguousarray(arr))
        return path


def _output_path(path: str | Path, suffixes: tuple[str, ...]) -> Path:
    """Check an output file's suffix and folder before any work is done."""
    path = Path(path)
    if path.suffix not in suffixes:
        raise ConfigError(f"--out {path}: the file must end in {' or '.join(suffixes)}")
    if not path.parent.is_dir():
        raise ConfigError(f"--out {path}: folder {path.parent} does not exist")
    return path


def save_runs_grid(
    runs: Sequence[str | Path],
    path: str | Path,
    n: int,
    seed: int = 0,
    labels: Labels = None,
    truncation: float = 1.0,
    category: Category | None = None,
    device: str | torch.device = "cpu",
) -> Path:
    """A PNG grid of ``n`` samples of each run's model (the seeds of ``train --seeds``), a row
    per run, every row from the same noise seed, labels and category."""
    path = _output_path(path, (".png",))
    rows = []
    for run in runs:
        gan = load(run, device=device)
        gan._check_grid(n, len(runs))
        rows.append(gan.sample(n, seed, labels, truncation, category))
        if rows[-1].shape[1:] != rows[0].shape[1:]:
            raise ConfigError(
                f"{run}: draws images of {rows[-1].shape[1:]}, {runs[0]} of "
                f"{rows[0].shape[1:]}; a grid of runs needs one shape"
            )
    save_png(path, make_grid(np.concatenate(rows), nrow=n))
    return path


def save_image_rows(images: torch.Tensor, nrow: int, path: str | Path) -> Path:
    """Write float images in [0, 1] as a PNG grid with ``nrow`` per row."""
    path = _output_path(path, (".png",))
    save_png(path, make_grid(to_uint8(images), nrow=nrow))
    return path


def project_file(
    source: str | Path,
    image: str | Path,
    out: str | Path,
    *,
    fit: bool = True,
    device: str | torch.device = "cpu",
    **options,
) -> Found:
    """``digitgan project``: read the drawing ``image``
    (:func:`~digitgan.projection.read_image`, ``fit`` as there), find it in the model of run,
    checkpoint or model folder ``source`` (:func:`~digitgan.projection.find_drawing`, with
    ``options``: ``label``, ``restarts``, ``steps``, ``seed``, ``time_limit``, ``walk_to``),
    and write the pictures and numbers into folder ``out``
    (:func:`~digitgan.projection.save_found`)."""
    out = output_folder(out)
    settings = ("restarts", "steps", "time_limit")
    check_search(**{k: v for k, v in options.items() if k in settings})  # before any work
    gan = load(source, device=device)
    drawing = read_image(image, gan.image_shape, fit)
    found = find_drawing(gan, drawing, *training_digits_or_note(gan), **options)
    save_found(found, out, source=str(source), image=str(image))
    return found


def load(path: str | Path, device: str | torch.device = "cpu", ema: bool = True) -> Sampler:
    """Load the generator of a run directory (its latest checkpoint), a checkpoint file or
    an exported model folder (``digitgan export``).

    With ``ema`` (the default) the averaged generator is used when the run kept one (an
    exported model holds one generator, the one chosen when it was exported).
    """
    ckpt = resolve_checkpoint(path)
    if ckpt.name == EXPORT_MODEL:
        tensors, meta = read_export(ckpt.parent)
    else:
        tensors, meta = read_checkpoint(ckpt)
    cfg = checkpoint_config(meta, ckpt)
    check_models(cfg.model, meta, tensors, "G", ckpt)
    with torch.random.fork_rng(devices=[]):  # building draws an init we then overwrite
        G, _ = build_models(cfg.model, meta["image_shape"], meta["num_classes"])
    if ckpt.name == EXPORT_MODEL:
        load_module_state(G, tensors, "G", ckpt)
        return Sampler(G.to(device), cfg, meta, ckpt, ema=bool(meta.get("ema")))
    use_ema = ema and any(k.startswith("G_ema.") for k in tensors)
    load_module_state(G, tensors, "G_ema" if use_ema else "G", ckpt)
    return Sampler(G.to(device), cfg, meta, ckpt, ema=use_ema)
