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

import io
import json
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..config import MAX_INT, Config
from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_write_bytes, memory_limit
from ..models import build_models

FORMAT = "digitgan-checkpoint"
VERSION = 1
LATEST = "latest"
SUFFIX = ".safetensors"
EXPORT_MODEL = "model.safetensors"
"""An exported model folder's generator file (see :mod:`digitgan.store.exported`)."""
EXPORT_CONFIG = "config.json"
"""An exported model folder's description of its generator."""
MAX_HEADER_BYTES = 100_000_000
"""The largest header accepted (safetensors' own limit): refused before it is read."""


def save_checkpoint(
    path: Path,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    fmt: str = FORMAT,
    version: int = VERSION,
) -> None:
    """Write a checkpoint file (and its JSON sidecar) atomically.

    ``fmt`` and ``version`` name the kind of file (other safetensors files that digitgan
    keeps, such as the bundled classifier's weights, use the same layout). A failed write
    (disk full, file too large, permission denied) raises CheckpointError and leaves the
    file that was there before untouched.
    """
    meta = {"format": fmt, "version": version, **meta}
    text = json.dumps(meta, indent=2, sort_keys=True)
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    try:
        atomic_write_bytes(path, st_save(cpu, metadata={"digitgan": text}))
        atomic_write_bytes(path.with_suffix(".json"), (text + "\n").encode())
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}") from e


def read_checkpoint(
    path: Path, fmt: str = FORMAT, version: int = VERSION
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read (tensors, metadata) from a checkpoint file, without pickle, validating the header
    (its ``format`` must be ``fmt`` and its ``version`` ``version``).

    The header is read and checked first, so a file that is not such a file is refused
    before its contents are read into memory.
    """
    path = Path(path)
    return parse_checkpoint(read_checkpoint_bytes(path, fmt, version), path, fmt, version)


def read_checkpoint_bytes(path: Path, fmt: str = FORMAT, version: int = VERSION) -> bytes:
    """The bytes of a checkpoint file, read only after its header has been checked, and no
    more than the header declares (the file must be exactly that long)."""
    with _open_checkpoint(path) as f:
        _read_header(f, path, fmt, version)
        size = f.seek(0, os.SEEK_END)
        limit = memory_limit()
        if limit is not None and 2 * size > limit:  # its bytes, then the tensors made of them
            raise CheckpointError(
                f"{path}: {size:,} bytes, more than this process's {limit / 2**30:.1f} GiB of "
                "memory can read (it takes about twice the file's size)"
            )
        f.seek(0)
        return f.read(size)


def parse_checkpoint(
    data: bytes, path: Path, fmt: str = FORMAT, version: int = VERSION
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) from the bytes of checkpoint file ``path`` (named in errors)."""
    meta = _read_header(io.BytesIO(data), path, fmt, version)
    try:
        tensors = st_load(data)
    except SafetensorError as e:
        raise CheckpointError(f"{path}: damaged checkpoint ({e})") from None
    return tensors, meta


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata of a checkpoint file, read and checked from its header alone."""
    path = Path(path)
    with _open_checkpoint(path) as f:
        return _read_header(f, path)


@contextmanager
def _open_checkpoint(path: Path) -> Iterator[BinaryIO]:
    """Open a checkpoint for reading; a missing, special or unreadable file is a CheckpointError."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or device would block or never end
            raise CheckpointError(f"{path}: not a regular file")
        with path.open("rb") as f:
            yield f
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read checkpoint: {e.strerror or e}") from None


# Checked before anything else is read: (test, what the value must be).
_META_FIELDS = {
    "step": (lambda v: type(v) is int and 0 <= v <= MAX_INT, f"an integer in 0..{MAX_INT}"),
    "config": (lambda v: isinstance(v, dict), "a table of config sections"),
    "image_shape": (
        lambda v: isinstance(v, list) and len(v) == 3 and all(type(x) is int and x > 0 for x in v),
        "[channels, height, width]",
    ),
    "num_classes": (lambda v: type(v) is int and v >= 0, "a non-negative integer"),
}


def _kind(fmt: str) -> str:
    """How messages name a file format: "digitgan checkpoint" or "<format> file"."""
    return "digitgan checkpoint" if fmt == FORMAT else f"{fmt} file"


def _read_header(
    f: BinaryIO, path: Path, fmt: str = FORMAT, version: int = VERSION
) -> dict[str, Any]:
    """Parse the safetensors header at the start of ``f`` (a file or bytes) and check its
    digitgan metadata (for GAN checkpoints, also the fields every one must have)."""
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    prefix = f.read(8)
    header_len = int.from_bytes(prefix, "little") if len(prefix) == 8 else 0
    if not 0 < header_len <= min(size - 8, MAX_HEADER_BYTES):
        raise CheckpointError(f"{path}: not a safetensors checkpoint (no valid header)")
    try:
        header = json.loads(f.read(header_len))
        meta = json.loads(header["__metadata__"]["digitgan"])
    except (ValueError, KeyError, TypeError, RecursionError):
        raise CheckpointError(f"{path}: not a {_kind(fmt)} (no digitgan metadata)") from None
    declared = 8 + header_len + _data_bytes(header, path)
    if size != declared:
        how = "cut short" if size < declared else "followed by data that is not its own"
        raise CheckpointError(
            f"{path}: damaged checkpoint ({how}: its header declares {declared:,} bytes, the "
            f"file has {size:,})"
        )
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise CheckpointError(f"{path}: not a {_kind(fmt)} (no such digitgan metadata)")
    if meta.get("version") != version:
        raise CheckpointError(
            f"{path}: {fmt} format version {meta.get('version')!r}, this digitgan reads "
            f"version {version}"
        )
    if fmt == FORMAT:
        check_gan_metadata(meta, path)
    return meta


def check_gan_metadata(meta: dict[str, Any], path: Path) -> None:
    """Check the fields that the metadata of every file holding a GAN's generator must have
    (step, config, image shape, number of classes)."""
    for key, (ok, what) in _META_FIELDS.items():
        if key not in meta or not ok(meta[key]):
            raise CheckpointError(f"{path}: metadata field {key!r} is missing or not {what}")


def _data_bytes(header: dict, path: Path) -> int:
    """How many bytes of tensor data a safetensors header declares (the end of the last)."""
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int and o >= 0 for o in offsets)
        ):
            raise CheckpointError(f"{path}: damaged checkpoint (tensor {name!r} has no offsets)")
        end = max(end, offsets[1])
    return end


def runs_in(folder: str | Path) -> list[Path]:
    """The run directories directly inside ``folder`` (each holding a latest checkpoint), such
    as the ``seed-N`` runs of ``train --seeds``, in natural order (seed-2 before seed-10);
    empty when ``folder`` is a run itself, or holds none."""
    p = Path(folder)
    if not p.is_dir() or (p / "checkpoints").is_dir():
        return []
    runs = [q.parents[1] for q in p.glob(f"*/checkpoints/{LATEST}{SUFFIX}")]
    return sorted(
        runs, key=lambda r: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", r.name)]
    )


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file meant by ``path``: a run directory, a checkpoints folder, an exported
    model folder (its ``model.safetensors``) or a file."""
    p = Path(path)
    if p.is_dir():
        if (p / EXPORT_MODEL).exists() or (p / EXPORT_CONFIG).exists():
            return p / EXPORT_MODEL  # an exported model (a missing file is reported on reading)
        for candidate in (p / "checkpoints" / f"{LATEST}{SUFFIX}", p / f"{LATEST}{SUFFIX}"):
            if candidate.is_file():
                return candidate
        runs = [run.name for run in runs_in(p)]
        if runs:
            shown = ", ".join(runs[:4]) + (", ..." if len(runs) > 4 else "")
            raise CheckpointError(
                f"{p}: a folder of {len(runs)} runs ({shown}), not a run; give one of them, "
                f"e.g. {p / runs[0]}"
            )
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


def check_module_state(
    module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, source: Path
) -> None:
    """Check that the ``prefix.*`` tensors have exactly the names, shapes and dtypes of
    ``module``'s state (which may live on the meta device)."""
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


def checkpoint_config(meta: dict, source: Path):
    """The validated :class:`~digitgan.config.Config` stored in checkpoint metadata."""
    try:
        return Config.from_dict(meta["config"], source="config")
    except ConfigError as e:
        raise CheckpointError(f"{source}: the config it holds is invalid: {e}") from None


def check_models(
    model_cfg, meta: dict, tensors: dict[str, torch.Tensor], prefixes: str, source: Path
) -> None:
    """Check that the config in ``meta`` describes the models whose tensors are in the file.

    The models are built on the meta device, so a tampered config (say, a billion hidden
    units) costs no memory; ``prefixes`` is "GD" for a trainer, "G" for sampling.
    """
    try:
        with torch.device("meta"):
            G, D = build_models(model_cfg, meta["image_shape"], meta["num_classes"])
    except (RuntimeError, ValueError) as e:
        raise CheckpointError(f"{source}: the model in its config cannot be built: {e}") from None
    models = {"G": G, "D": D}
    for prefix in prefixes:
        check_module_state(models[prefix], tensors, prefix, source)


def load_module_state(
    module: torch.nn.Module, tensors: dict[str, torch.Tensor], prefix: str, source: Path
) -> None:
    """Load ``prefix.*`` tensors into ``module``, checking names, shapes and finiteness first."""
    check_module_state(module, tensors, prefix, source)
    got = split_prefix(tensors, prefix)
    bad = [k for k, v in got.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise CheckpointError(f"{source}: {prefix}.{bad[0]} holds NaN or infinite values")
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
    """Restore the per-parameter state saved by :func:`optimizer_tensors` into ``opt``.

    The hyper-parameters (learning rate, betas, ...) stay those ``opt`` was built with, from
    the config; the saved ``param_groups`` are a record for people. Each parameter's state
    must have the names and shapes that ``opt`` itself would give it, in floating point.
    """
    params = [p for group in opt.param_groups for p in group["params"]]
    expected = _state_layout(opt)
    try:
        state: dict[int, dict] = {}
        for key, value in split_prefix(tensors, prefix).items():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = value
        for key, value in meta["scalars"].items():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = value
        for idx, entries in state.items():
            if not 0 <= idx < len(params):
                raise ValueError(f"state for parameter {idx}, the model has {len(params)}")
            if set(entries) != set(expected):
                raise ValueError(f"parameter {idx} has state {sorted(entries)}")
            for name, value in entries.items():
                shape = () if expected[name] else params[idx].shape
                if not torch.is_tensor(value) or value.shape != shape:
                    raise ValueError(f"{idx}.{name} is not a tensor of shape {tuple(shape)}")
                if not value.is_floating_point():
                    raise ValueError(f"{idx}.{name} is {value.dtype}, not floating point")
                if not bool(value.isfinite().all()):
                    raise ValueError(f"{idx}.{name} holds NaN or infinite values")
        opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{source}: optimizer state {prefix} does not match: {e}") from None
    # Saved state is contiguous; a parameter may be channels-last. The fused Adam kernel walks
    # a parameter and its moments in memory order, so they must share a layout.
    for p in params:  # (.get: a parameter without state, before the first step, gets none)
        for name, value in opt.state.get(p, {}).items():
            if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                opt.state[p][name] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _state_layout(opt: torch.optim.Optimizer) -> dict[str, bool]:
    """The state names an optimizer like ``opt`` keeps per parameter -> whether each is a
    scalar (else it has the parameter's shape), found by stepping a copy on a probe."""
    probe = torch.zeros(2, requires_grad=True)
    twin = type(opt)([probe], **opt.defaults)
    probe.grad = torch.ones(2)
    twin.step()
    return {name: value.dim() == 0 for name, value in twin.state[probe].items()}
