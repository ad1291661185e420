"""What the web server asks of a model: images (samples, a class-by-sample grid, a latent walk)
and facts (configuration, iterations trained, evaluation metrics).

Everything here is plain library code over a :class:`digitgan.sampling.Sampler` (or any
object with its interface: ``noise(n, seed)``, ``decode(z, labels)``, ``config``, ``meta``,
``path``, ``step``, ``image_shape`` and, for class-conditional models, ``num_classes``); the
HTTP layer is app.py. Images come back as float tensors (N, C, H, W) in [0, 1].
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch

from ..eval.evaluate import EVAL_FILE
from ..store.rundir import run_dir_of

log = logging.getLogger("digitgan.serve")


def num_classes(gan) -> int:
    """The number of classes a model is conditioned on (0 = unconditional)."""
    return int(getattr(gan, "num_classes", 0))


def samples(gan, n: int, seed: int, label: int | None = None) -> torch.Tensor:
    """``n`` samples for ``seed``, all of class ``label`` if set (else the classes in turn)."""
    return gan.generate(n, seed, label)


def class_grid(gan, n: int, seed: int) -> torch.Tensor:
    """``n`` samples of every class, class by class: (num_classes * n, C, H, W); column j uses
    the same noise vector in every row (see ``Sampler.class_grid``)."""
    return gan.class_grid(n, seed)


def walk(gan, seed_a: int, seed_b: int, steps: int, label: int | None = None) -> torch.Tensor:
    """A latent walk of ``steps`` images from seed_a's first sample to seed_b's
    (see ``Sampler.interpolate``)."""
    return gan.interpolate(seed_a, seed_b, steps, label)


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
        "saved_at": gan.meta.get("saved_at"),
        "metrics": metrics,
        "floor": floor,
    }


def _scores(value) -> dict | None:
    """A {metric name: number or null} table, or None if ``value`` is not one."""
    if not isinstance(value, dict):
        return None
    for v in value.values():
        ok = v is None or (
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        )
        if not ok:
            return None
    return value


def read_evaluation(checkpoint: Path) -> tuple[dict | None, dict | None]:
    """(metrics, real-data floor) from ``eval.json`` in the checkpoint's run directory.

    The file is expected to hold ``{"metrics": {name: number}, "floor": {name: number}}``
    ("floor": the same metrics between two sets of real images, the best score reachable;
    optional). No file gives (None, None); an unreadable or malformed one is logged and
    gives (None, None) too, so a bad metrics file never stops the model being served.
    """
    path = run_dir_of(checkpoint) / EVAL_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as e:
        log.warning("%s: cannot read evaluation metrics (%s)", path, e)
        return None, None
    metrics = _scores(doc.get("metrics")) if isinstance(doc, dict) else None
    if metrics is None:
        log.warning('%s: expected {"metrics": {name: number}, "floor": {...}}', path)
        return None, None
    return metrics, _scores(doc.get("floor"))
