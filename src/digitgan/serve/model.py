"""What the web server asks of a model: images (samples, a class-by-sample grid, a latent walk)
and facts (configuration, iterations trained, evaluation metrics).

Everything here is plain library code over a :class:`digitgan.sampling.Sampler` (or any
object with its interface: ``noise(n, seed)``, ``decode(z, labels)``, ``config``, ``meta``,
``path``, ``step``, ``image_shape``, for class-conditional models ``num_classes`` and for
models with learnt categories ``categories`` and the ``category`` keyword); the
HTTP layer is app.py. Images come back as float tensors (N, C, H, W) in [0, 1].
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..errors import DigitganError
from ..eval.evaluate import read_evaluation as read_saved_evaluation
from ..models.base import Category

log = logging.getLogger("digitgan.serve")


def num_classes(gan) -> int:
    """The number of classes a model is conditioned on (0 = unconditional)."""
    return int(getattr(gan, "num_classes", 0))


def num_categories(gan) -> int:
    """The number of categories a model learnt without labels (``model.categories``; 0: none)."""
    return int(getattr(gan, "categories", 0))


def code_parts(gan) -> int:
    """The parts a model's categories come in (``model.code_parts``; 1: one piece)."""
    return int(getattr(gan, "code_parts", 1))


def _options(truncation: float, category: Category | None = None) -> dict:
    """The keywords for a truncation and a category: none for plain sampling of any category,
    so that a model object without the truncation trick or categories still serves plain
    draws."""
    return {
        **({} if truncation == 1 else {"truncation": truncation}),
        **({} if category is None else {"category": category}),
    }


def samples(
    gan,
    n: int,
    seed: int,
    label: int | None = None,
    truncation: float = 1.0,
    category: Category | None = None,
) -> torch.Tensor:
    """``n`` samples for ``seed``, all of class ``label`` if set (else the classes in turn),
    or of learnt ``category`` if set, drawn with the truncation trick at ``truncation`` (1:
    plain sampling)."""
    return gan.generate(n, seed, label, **_options(truncation, category))


def class_grid(gan, n: int, seed: int, truncation: float = 1.0) -> torch.Tensor:
    """``n`` samples of every class (or learnt category), class by class: (K * n, C, H, W);
    column j uses the same noise vector in every row (see ``Sampler.class_grid``)."""
    return gan.class_grid(n, seed, **_options(truncation))


def walk(
    gan,
    seed_a: int,
    seed_b: int,
    steps: int,
    label: int | None = None,
    truncation: float = 1.0,
    category: Category | None = None,
) -> torch.Tensor:
    """A latent walk of ``steps`` images from seed_a's first sample to seed_b's, within learnt
    ``category`` if set (see ``Sampler.interpolate``)."""
    return gan.interpolate(seed_a, seed_b, steps, label, **_options(truncation, category))


def model_info(gan) -> dict:
    """The facts the page shows: where the model comes from, how it was trained, its scores."""
    cfg = gan.config
    metrics, floor = read_evaluation(gan.path)
    return {
        "checkpoint": str(gan.path),
        "preset": cfg.preset,
        "step": gan.step,
        "arch": cfg.model.arch,
        "dataset": gan.meta.get("dataset", cfg.data.dataset),
        "image_shape": list(gan.image_shape),
        "z_dim": cfg.model.z_dim,
        "noise": cfg.model.noise,
        "num_classes": num_classes(gan),
        "class_names": list(gan.class_names) if num_classes(gan) else [],
        "categories": num_categories(gan),
        "code_parts": code_parts(gan),
        "saved_at": gan.meta.get("saved_at"),
        "metrics": metrics,
        "floor": floor,
    }


def read_evaluation(checkpoint: Path) -> tuple[dict | None, dict | None]:
    """(metrics, real-data floor) from ``eval.json`` in the checkpoint's run directory
    (:func:`digitgan.eval.evaluate.read_evaluation`; the floor is optional). No file gives
    (None, None); a file that is not such a file is logged in one line and gives (None, None)
    too, so a bad metrics file never stops the model being served. The server reads it once,
    when it starts.
    """
    try:
        doc = read_saved_evaluation(checkpoint)
    except DigitganError as e:
        log.warning("%s; no scores are shown", e)
        return None, None
    return (None, None) if doc is None else (doc["metrics"], doc["floor"])
