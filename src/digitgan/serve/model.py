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
import os
from pathlib import Path

import torch

from ..errors import DigitganError
from ..eval.evaluate import EVAL_FILE
from ..fileio import MiB, read_text_bounded
from ..store.rundir import run_dir_of

log = logging.getLogger("digitgan.serve")
MAX_EVAL_BYTES = MiB  # eval.json holds a few numbers: a few hundred bytes


def num_classes(gan) -> int:
    """The number of classes a model is conditioned on (0 = unconditional)."""
    return int(getattr(gan, "num_classes", 0))


def _psi(truncation: float) -> dict:
    """The keyword for a truncation: none for plain sampling, so that a model object without
    the truncation trick still serves plain draws."""
    return {} if truncation == 1 else {"truncation": truncation}


def samples(
    gan, n: int, seed: int, label: int | None = None, truncation: float = 1.0
) -> torch.Tensor:
    """``n`` samples for ``seed``, all of class ``label`` if set (else the classes in turn),
    drawn with the truncation trick at ``truncation`` (1: plain sampling)."""
    return gan.generate(n, seed, label, **_psi(truncation))


def class_grid(gan, n: int, seed: int, truncation: float = 1.0) -> torch.Tensor:
    """``n`` samples of every class, class by class: (num_classes * n, C, H, W); column j uses
    the same noise vector in every row (see ``Sampler.class_grid``)."""
    return gan.class_grid(n, seed, **_psi(truncation))


def walk(
    gan,
    seed_a: int,
    seed_b: int,
    steps: int,
    label: int | None = None,
    truncation: float = 1.0,
) -> torch.Tensor:
    """A latent walk of ``steps`` images from seed_a's first sample to seed_b's
    (see ``Sampler.interpolate``)."""
    return gan.interpolate(seed_a, seed_b, steps, label, **_psi(truncation))


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
    optional). No file gives (None, None); anything else that is not such a file (not a
    regular file, over MAX_EVAL_BYTES, not UTF-8, not JSON, nested too deeply, another shape)
    is logged in one line and gives (None, None) too, so a bad metrics file never stops the
    model being served. The server reads it once, when it starts.
    """
    path = run_dir_of(checkpoint) / EVAL_FILE
    if not os.path.lexists(path):
        return None, None
    try:
        doc = json.loads(read_text_bounded(path, MAX_EVAL_BYTES, "evaluation metrics"))
    except DigitganError as e:
        log.warning("%s; no scores are shown", e)
        return None, None
    except ValueError as e:
        log.warning("evaluation metrics %s: not valid JSON (%s); no scores are shown", path, e)
        return None, None
    except RecursionError:
        log.warning("evaluation metrics %s: nested too deeply; no scores are shown", path)
        return None, None
    metrics = _scores(doc.get("metrics")) if isinstance(doc, dict) else None
    if metrics is None:
        log.warning(
            'evaluation metrics %s: expected {"metrics": {name: number}, "floor": {...}}; '
            "no scores are shown",
            path,
        )
        return None, None
    return metrics, _scores(doc.get("floor"))
