"""Checkpoints: safetensors for tensors, JSON for metadata, never pickle; written atomically.

A checkpoint is one self-contained ``.safetensors`` file. Its tensors are named
``G.<param>``, ``D.<param>``, ``opt_g.<i>.<state>``, ``opt_d.<i>.<state>``,
``rng.<name>`` and ``data.<name>``; its header metadata holds one key,
``digitgan``, whose value is a JSON document (format, version, step, the full
config, image shape, ...). A ``.json`` file of the same stem beside it is a
human-readable copy of that metadata, for people and tools like ``jq``; digitgan
itself reads only the ``.safetensors`` file.

Each file is written to a temporary name in the same folder, flushed to disk
and renamed over the target, so a reader (or a crash) sees the old file or the
new one, never half of one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import CheckpointError
from ..fileio import atomic_write_bytes

FORMAT = "digitgan-checkpoint"
VERSION = 1
LATEST = "latest"
SUFFIX = ".safetensors"


def save_checkpoint(
    path: Path,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    fmt: str = FORMAT,
    version: int = VERSION,
) -> None:
    """Write a checkpoint file (and its JSON sidecar) atomically.

    ``fmt`` and ``version`` name the kind of file (other safetensors files that digitgan
    keeps, such as the bundled classifier's weights, use the same layout).
    """
    meta = {"format": fmt, "version": version, **meta}
    text = json.dumps(meta, indent=2, sort_keys=True)
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(cpu, metadata={"digitgan": text}))
    atomic_write_bytes(path.with_suffix(".json"), (text + "\n").encode())


def read_checkpoint(
    path: Path, fmt: str = FORMAT, version: int = VERSION
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read (tensors, metadata) from a checkpoint file, without pickle, validating the header
    (its ``format`` must be ``fmt`` and its ``version`` ``version``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint: {e.strerror}") from None
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        meta = json.loads(header.get("__metadata__", {}).get("digitgan", "null"))
    except (SafetensorError, ValueError, UnicodeDecodeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise CheckpointError(f"{path}: not a {fmt} file (no such digitgan metadata)")
    if meta.get("version") != version:
        raise CheckpointError(
            f"{path}: {fmt} format version {meta.get('version')!r}, this digitgan reads "
            f"version {version}"
        )
    return tensors, meta


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file meant by ``path``: a run directory, a checkpoints folder or a file."""
    p = Path(path)
    if p.is_dir():
        for candidate in (p / "checkpoints" / f"{LATEST}{SUFFIX}", p / f"{LATEST}{SUFFIX}"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{p}: no checkpoint found (expected checkpoints/{LATEST}{SUFFIX})")
    if p.suffix == ".json" and p.with_suffix(SUFFIX).is_file():
        return p.with_suffix(SUFFIX)
    if not p.exists():
        raise CheckpointError(f"no such run directory or checkpoint: {p}")
    return p


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under ``prefix.``, with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def load_module_state(
    module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, source: Path
) -> None:
    """Load ``prefix.*`` tensors into ``module``, checking names and shapes first."""
    got = split_prefix(tensors, prefix)
    want = module.state_dict()
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing or extra:
        raise CheckpointError(
            f"{source}: {prefix} weights do not match the model in its config"
            + (f"; missing {', '.join(missing[:4])}" if missing else "")
            + (f"; unexpected {', '.join(extra[:4])}" if extra else "")
        )
    for k, v in want.items():
        if got[k].shape != v.shape or got[k].dtype != v.dtype:
            raise CheckpointError(
                f"{source}: {prefix}.{k} has shape {tuple(got[k].shape)} {got[k].dtype}, the "
                f"model expects {tuple(v.shape)} {v.dtype}"
            )
    module.load_state_dict(got)


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict, dict]:
    """Split an optimizer's state into (tensors for safetensors, JSON-able rest)."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(
    opt: torch.optim.Optimizer, tensors: dict, meta: dict, prefix: str, source: Path
) -> None:
    """Restore an optimizer from :func:`optimizer_tensors` output."""
    state: dict[int, dict] = {}
    for key, value in split_prefix(tensors, prefix).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    try:
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{source}: optimizer state {prefix} does not match: {e}") from None
