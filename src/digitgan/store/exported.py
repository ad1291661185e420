"""Exported models: a folder with a trained generator alone, for sharing and deploying.

DIR/model.safetensors  the generator's weights (``G.<param>``) with metadata of format
                       ``digitgan-generator``: step, config, image shape, classes and class
                       names, output range, dataset, whether it is the EMA generator
DIR/config.json        what the generator is: architecture, image shape, noise, classes,
                       output range, the digitgan version (derived from the metadata above,
                       and checked against it when the folder is read)
DIR/README.md          the model card (Hugging Face convention: YAML front matter, then prose)
DIR/samples.png        a grid of samples
DIR/generator.onnx     with ``digitgan export --onnx``: the generator for ONNX Runtime
DIR/eval.json          where the run had one: its saved evaluation

``digitgan export`` (:mod:`digitgan.export`) writes such a folder; :func:`read_export` reads
it back for :func:`digitgan.load`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from ..errors import CheckpointError, DigitganError
from ..fileio import MiB, atomic_write_bytes, atomic_write_text, read_text_bounded
from .checkpoint import (
    EXPORT_CONFIG,
    EXPORT_MODEL,
    check_gan_metadata,
    read_checkpoint,
)

FORMAT = "digitgan-generator"
VERSION = 1
CARD = "README.md"
SAMPLES = "samples.png"
ONNX = "generator.onnx"
EVAL = "eval.json"
FILES = {EXPORT_MODEL, EXPORT_CONFIG, CARD, SAMPLES, ONNX, EVAL}
"""Every file digitgan writes into an exported model folder."""
REQUIRED = (EXPORT_MODEL, EXPORT_CONFIG)
"""The files a folder must have to be loaded."""
MAX_CONFIG_BYTES = MiB
"""The largest config.json read (it holds a few hundred bytes)."""


def config_document(meta: dict[str, Any]) -> dict[str, Any]:
    """config.json's content for generator metadata ``meta``."""
    model = meta["config"]["model"]
    doc = {
        "library": "digitgan",
        "format": FORMAT,
        "format_version": VERSION,
        "digitgan_version": meta.get("digitgan_version"),
        "architecture": model["arch"],
        "image_shape": meta["image_shape"],
        "noise": {"kind": model["noise"], "z_dim": model["z_dim"]},
        "num_classes": meta["num_classes"],
        "class_names": meta.get("class_names"),
        "output_range": meta.get("out_range"),
        "dataset": meta.get("dataset"),
        "preset": meta["config"].get("preset"),
        "step": meta["step"],
        "ema": meta.get("ema"),
    }
    if model.get("categories"):  # learnt categories (model.categories): the web page draws them
        doc["categories"] = model["categories"]
        if model.get("code_parts", 1) > 1:  # drawn part by part (models.base.with_code)
            doc["code_parts"] = model["code_parts"]
    if meta.get("onnx") is not None:
        doc["onnx"] = meta["onnx"]
    return doc


def write_export_files(folder: Path, state: dict[str, torch.Tensor], meta: dict) -> None:
    """Write model.safetensors (``state`` as ``G.*``, with ``meta``) and config.json."""
    meta = {"format": FORMAT, "version": VERSION, **meta}
    text = json.dumps(meta, indent=2, sort_keys=True)
    tensors = {f"G.{k}": v.detach().to("cpu").contiguous() for k, v in state.items()}
    atomic_write_bytes(folder / EXPORT_MODEL, st_save(tensors, metadata={"digitgan": text}))
    doc = json.dumps(config_document(meta), indent=2)
    atomic_write_text(folder / EXPORT_CONFIG, doc + "\n")


def read_export(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of an exported model folder, after checking that it has its files,
    that model.safetensors is a digitgan generator file and that config.json agrees with it.

    Any problem is one CheckpointError naming the folder and what is wrong.
    """
    folder = Path(folder)
    missing = [name for name in REQUIRED if not (folder / name).exists()]
    if missing:
        raise CheckpointError(
            f"exported model {folder}: {' and '.join(missing)} missing (export it again with "
            "digitgan export)"
        )
    model = folder / EXPORT_MODEL
    tensors, meta = read_checkpoint(model, FORMAT, VERSION)
    check_gan_metadata(meta, model)
    text = read_text_bounded(
        folder / EXPORT_CONFIG, MAX_CONFIG_BYTES, "exported model config", CheckpointError
    )
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise CheckpointError(f"{folder / EXPORT_CONFIG}: not valid JSON") from None
    want = config_document(meta)
    if not isinstance(doc, dict):
        raise CheckpointError(f"{folder / EXPORT_CONFIG}: not a JSON object")
    if "categories" not in doc:  # written before config.json named the learnt categories
        want.pop("categories", None)
    differ = sorted(k for k in set(want) | set(doc) if doc.get(k) != want.get(k))
    if differ:
        raise CheckpointError(
            f"exported model {folder}: config.json disagrees with model.safetensors' metadata "
            f"({', '.join(differ[:4])}); the folder was changed after export"
        )
    return tensors, meta


def foreign_files(folder: Path) -> list[str]:
    """What in ``folder`` an export did not write (empty for an exported model folder that
    ``digitgan export --force`` may replace); the whole folder when it lacks the required
    files."""
    entries = sorted(folder.iterdir())
    odd = [p.name + ("/" if p.is_dir() else "") for p in entries if not _ours(p)]
    if odd:
        return odd
    if not all((folder / name).is_file() for name in REQUIRED) or not our_json(
        folder / EXPORT_CONFIG
    ):
        return [p.name for p in entries]
    return []


def our_json(path: Path, key: str | None = None) -> bool:
    """Whether JSON file ``path`` (or its field ``key``) is a config.json document that
    digitgan export wrote."""
    try:
        doc = json.loads(read_text_bounded(path, MAX_CONFIG_BYTES, "config"))
    except (DigitganError, ValueError, RecursionError):
        return False
    if key is not None:
        doc = doc.get(key) if isinstance(doc, dict) else None
    ours = {"library": "digitgan", "format": FORMAT}
    return isinstance(doc, dict) and all(doc.get(k) == v for k, v in ours.items())


def _ours(p: Path) -> bool:
    return p.name in FILES and p.is_file() and not p.is_symlink()
