"""Exporting a trained generator as a self-contained model folder (``digitgan export``).

The folder (see :mod:`digitgan.store.exported` for its files) holds the generator alone (the
EMA one where the run kept it) in its own small safetensors format, its description
(config.json), a model card (README.md) with the run's saved evaluation when there is one,
a sample grid and, with ``onnx=True``, the generator as ONNX, checked against PyTorch with
ONNX Runtime. :func:`digitgan.load` reads the folder back. With ``web``, a second folder
holds a static web page that draws with the ONNX generator in the browser (:mod:`digitgan.web`).

Each folder is built in a temporary sibling folder and renamed into place, so a failure leaves
no partial folder (and, with ``force``, the old folder untouched).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shlex
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import PRESETS, preset
from .errors import CheckpointError, ConfigError, DigitganError, missing_extra
from .eval.evaluate import read_evaluation
from .fileio import atomic_write_text
from .sampling import Sampler, load, save_image_rows
from .store.exported import (
    CARD,
    EVAL,
    ONNX,
    SAMPLES,
    config_document,
    foreign_files,
    write_export_files,
)
from .version import __version__
from .web import foreign_site_files, runtime_files, write_site

ONNX_TOLERANCE = 1e-4
"""The largest difference allowed between ONNX Runtime's images and PyTorch's (in [0, 1])."""
ONNX_OPSET = 18
"""The ONNX opset the generator is exported with."""
CARD_METRICS = [  # (key in eval.json, model-index type, name)
    ("fid", "fid", "FID"),
    ("kid", "kid", "KID"),
    ("is", "inception_score", "Inception score"),
    ("precision", "precision", "Precision"),
    ("recall", "recall", "Recall"),
    ("label_accuracy", "accuracy", "Label accuracy"),
    ("cas", "accuracy", "Classification accuracy score"),
    ("modes_covered", "modes_covered", "Modes covered (Stacked MNIST, of 1,000)"),
    ("modes_kl", "reverse_kl", "Reverse KL of the modes from uniform (Stacked MNIST)"),
]
DATASET_IDS = {"mnist20k": "mnist", "mnist": "mnist", "fashion-mnist": "fashion_mnist"}
"""Hugging Face dataset ids of the datasets digitgan knows."""


@dataclass
class ExportResult:
    """What :func:`export` wrote: the folder, its files, the seconds it took and, with ONNX,
    the opset and the largest difference between ONNX Runtime's images and PyTorch's."""

    path: Path
    files: list[str]
    seconds: float
    onnx_opset: int | None = None
    onnx_max_diff: float | None = None
    notes: list[str] = field(default_factory=list)
    web: Path | None = None


def export(
    source: str | Path,
    out: str | Path,
    *,
    force: bool = False,
    onnx: bool = False,
    web: str | Path | None = None,
) -> ExportResult:
    """Export the generator of a run directory, checkpoint or exported folder to folder
    ``out`` (see the module's description) and, with ``web``, its static web page to folder
    ``web`` (see :mod:`digitgan.web`; implies ``onnx``). An existing non-empty ``out`` or
    ``web`` is replaced only with ``force``, and only when digitgan exported it."""
    t0 = time.perf_counter()
    out = _folder(out)
    web = None if web is None else _folder(web)
    targets = [(out, "--out", foreign_files)]
    if web is not None:
        onnx = True
        targets.append((web, "--web", foreign_site_files))
        a, b = out.resolve(), web.resolve()
        if a == b or a in b.parents or b in a.parents:
            raise ConfigError(f"--web {web}: must be a folder apart from --out {out}")
    for folder, option, foreign in targets:
        _check_out(folder, force, option, foreign)
    if onnx:
        _onnx_modules()  # a missing extra is reported before any work
    runtime = runtime_files() if web is not None else None  # (may download it, once)
    gan = load(source, device="cpu")
    notes: list[str] = []
    evaluation = _read_evaluation(gan, notes)
    meta = _generator_meta(gan)
    result = ExportResult(out, [], 0.0, notes=notes, web=web)
    tmps: list[Path] = []
    try:
        for folder, option, _ in targets:
            tmps.append(_beside(folder, option))
        tmp = tmps[0]
        if onnx:
            result.onnx_opset, result.onnx_max_diff = _export_onnx(gan, tmp / ONNX)
            meta["onnx"] = _onnx_description(gan, result.onnx_opset)
        write_export_files(tmp, gan.generator.state_dict(), meta)
        _write_samples(gan, tmp / SAMPLES)
        atomic_write_text(tmp / CARD, model_card(gan, meta, evaluation, source))
        if evaluation is not None:
            atomic_write_text(tmp / EVAL, json.dumps(evaluation, indent=2) + "\n")
        if web is not None:
            write_site(tmps[1], tmp / ONNX, config_document(meta), evaluation, runtime)
        for folder, option, foreign in targets:
            _check_out(folder, force, option, foreign)  # again: it may have changed meanwhile
        for (folder, _, _), built in zip(targets, tmps, strict=True):
            _put_in_place(built, folder)
    except BaseException:
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    result.files = sorted(p.name for p in out.iterdir())
    result.seconds = time.perf_counter() - t0
    return result


def _folder(path: str | Path) -> Path:
    path = Path(path)
    if path.name in ("", ".", ".."):  # a folder named by its path's last part
        path = path.resolve()
    return path


def _beside(folder: Path, option: str) -> Path:
    """A new hidden temporary folder beside ``folder``, to build it in."""
    tmp = folder.with_name(f".{folder.name}.{secrets.token_hex(6)}.part")
    try:
        tmp.mkdir()
    except OSError as e:
        raise ConfigError(f"{option} {folder}: cannot write beside it: {e.strerror or e}") from None
    return tmp


def _check_out(out: Path, force: bool, option: str, foreign) -> None:
    """Refuse folder ``out`` (of ``option``) unless it is new, empty, or (with ``force``)
    one that ``foreign(out)`` finds nothing odd in."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{option} {out}: exists and is not a folder")
    if not out.parent.is_dir():
        raise ConfigError(f"{option} {out}: folder {out.parent} does not exist")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ConfigError(f"{option} {out}: exists and is not empty; use --force to replace it")
        if odd := foreign(out):
            shown = ", ".join(odd[:5]) + (f" and {len(odd) - 5} more" if len(odd) > 5 else "")
            what = "a model folder" if option == "--out" else "a web page folder"
            raise ConfigError(
                f"{option} {out}: not {what} digitgan exported (it holds {shown}); "
                "refusing to replace it, even with --force"
            )


def _put_in_place(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out``, replacing an old export there."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.{secrets.token_hex(6)}.old")
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    dir_fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _generator_meta(gan: Sampler) -> dict:
    m = gan.meta
    return {
        "step": gan.step,
        "config": gan.config.to_dict(),
        "image_shape": list(gan.image_shape),
        "num_classes": gan.num_classes,
        "class_names": list(gan.class_names),
        "out_range": [float(v) for v in gan.generator.out_range],
        "dataset": m.get("dataset", gan.config.data.dataset),
        "ema": bool(gan.ema),
        "digitgan_version": __version__,
        "trained_with": m.get("trained_with", m.get("digitgan_version")),
        "saved_at": m.get("saved_at"),
    }


def _read_evaluation(gan: Sampler, notes: list[str]) -> dict | None:
    """The run's saved evaluation (:func:`~digitgan.eval.evaluate.read_evaluation`) with its
    null metrics left out, if it has a valid one; else None, with a note why."""
    try:
        doc = read_evaluation(gan.path)
    except DigitganError as e:
        notes.append(f"{e}; the model card has no metrics")
        return None
    if doc is None:
        return None
    return doc | {"metrics": _known(doc["metrics"]), "floor": _known(doc["floor"] or {})}


def _known(scores: dict) -> dict:
    return {k: v for k, v in scores.items() if v is not None}


def _write_samples(gan: Sampler, path: Path) -> None:
    if gan.num_classes:
        per_class = min(10, max(1, 100 // gan.num_classes))
        save_image_rows(gan.class_grid(per_class, seed=0), per_class, path)
    else:
        save_image_rows(gan.generate(64, seed=0), 8, path)


# --- the model card ---------------------------------------------------------------------------


def reproduce_command(gan: Sampler) -> str:
    """The ``digitgan train`` command that trains this model again: its preset, with ``--set``
    for every field that differs from it (the device and logging aside)."""
    cfg = gan.config
    # a preset since renamed or removed: from the default one, with every value that differs
    name = cfg.preset if cfg.preset in PRESETS else "seed"
    base = preset(name).flat()
    parts = [f"digitgan train --preset {name}"]
    for key, value in cfg.flat().items():
        if key.startswith("log.") or key in ("train.device", "data.data_dir"):
            continue
        if key == "train.iters":
            if value != base.get(key):
                parts.append(f"--iters {value}")
            continue
        if key not in base or base[key] != value:
            text = json.dumps(value, separators=(",", ":"))
            parts.append("--set " + shlex.quote(f"{key}={text}"))
    return " ".join(parts)


def _yaml(value) -> str:
    """A YAML scalar (JSON's syntax for strings and numbers is YAML's)."""
    return json.dumps(value)


def model_card(gan: Sampler, meta: dict, evaluation: dict | None, source) -> str:
    """README.md of an exported model: YAML front matter (Hugging Face's model card
    metadata) and a description of the model, its training and its scores."""
    cfg = gan.config
    dataset = str(meta["dataset"])
    dataset_id = DATASET_IDS.get(dataset, dataset)
    conditional = bool(gan.num_classes)
    task = "conditional-image-generation" if conditional else "unconditional-image-generation"
    tags = ["gan", "image-generation", task, "digitgan", cfg.model.arch, f"preset-{cfg.preset}"]
    if "mnist" in dataset:
        tags.insert(2, "mnist")
    lines = ["---", "library_name: digitgan", "tags:"]
    lines += [f"- {_yaml(t)}" for t in tags]
    lines += ["datasets:", f"- {_yaml(dataset_id)}"]
    rows = []
    if evaluation is not None:
        m, floor = evaluation["metrics"], evaluation["floor"]
        rows = [(k, t, n) for k, t, n in CARD_METRICS if k in m]
        lines += ["metrics:"] + [f"- {_yaml(t)}" for _, t, _ in rows]
        lines += [
            "model-index:",
            f"- name: {_yaml(f'digitgan-{cfg.preset}-{dataset}')}",
            "  results:",
            "  - task:",
            f"      type: {_yaml(task)}",
            "      name: Image generation",
            "    dataset:",
            f"      type: {_yaml(dataset_id)}",
            f"      name: {_yaml((evaluation.get('dataset') or dataset) + ' (test split)')}",
            "    metrics:",
        ]
        for key, typ, name in rows:
            lines += [f"    - type: {_yaml(typ)}", f"      value: {_yaml(m[key])}"]
            lines += [f"      name: {_yaml(name)}"]
            if key in floor:
                lines += [f"    - type: {_yaml(typ)}", f"      value: {_yaml(floor[key])}"]
                lines += [f"      name: {_yaml(f'{name} of real digits (floor)')}"]
    lines.append("---")

    c, h, w = gan.image_shape
    kind = "class-conditional " if conditional else ""
    noise = f"{cfg.model.z_dim}-dimensional {cfg.model.noise} noise"
    lines += [
        "",
        f"# digitgan {cfg.preset}: a {kind}GAN generator for {dataset}",
        "",
        f"A {kind}generative adversarial network's generator ({cfg.model.arch} architecture) "
        f"trained with [digitgan](https://pypi.org/project/digitgan/) on `{dataset}`. It maps "
        f"{noise}"
        + (f" and a class label (0-{gan.num_classes - 1})" if conditional else "")
        + f" to a {c}x{h}x{w} image"
        + (f"; classes: {', '.join(gan.class_names)}." if conditional else "."),
        "",
        "![samples](samples.png)",
        "",
        "## Training",
        "",
        f"- preset `{cfg.preset}`, {gan.step:,} iterations, seed {cfg.train.seed}",
        f"- batch size {cfg.data.batch_size}, objective `{cfg.loss.objective}`, Adam learning "
        f"rates {cfg.optim.lr_g:g} (G) / {cfg.optim.lr_d:g} (D), "
        f"{cfg.train.d_steps} D step(s) per G step",
        "- generator weights: "
        + (
            f"the exponential moving average (decay {cfg.train.ema_decay:g})"
            if meta["ema"]
            else "the trained generator (no moving average)"
        ),
        "",
        "Train it again with:",
        "",
        "```",
        reproduce_command(gan),
        "```",
        "",
        "## Evaluation",
        "",
    ]
    if evaluation is None:
        lines.append(
            "No evaluation was saved with the run (`digitgan evaluate RUN --save` writes one)."
        )
    else:
        m, floor = evaluation["metrics"], evaluation["floor"]
        n = evaluation.get("samples")
        lines += [
            f"Scored on {n:,} samples " if n else "Scored ",
        ]
        lines[-1] += (
            "against the test split with digitgan's bundled classifier (`digitgan evaluate`); "
            "the floor is real training digits scored the same way, the best a model can do."
        )
        lines += ["", "| metric | this model | real digits (floor) |", "| --- | --- | --- |"]
        for key, _, name in rows:
            fl = f"{floor[key]:.4g}" if key in floor else ""
            lines.append(f"| {name} | {m[key]:.4g} | {fl} |")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import digitgan",
        "",
        'gan = digitgan.load("THIS_FOLDER")',
        "digits = gan.sample(16, seed=0)  # uint8 array (16, C, H, W)",
        "```",
        "",
        "or `digitgan sample THIS_FOLDER --n 64 --out samples.png`.",
    ]
    if meta.get("onnx"):
        o = meta["onnx"]
        inputs = ", ".join(f"`{i}`" for i in o["inputs"])
        lines += [
            "",
            f"`{ONNX}` (opset {o['opset']}) takes {inputs} (batch axis dynamic) and returns "
            "`images` in [0, 1].",
        ]
    lines += ["", f"Exported with digitgan {__version__}.", ""]
    return "\n".join(lines)


# --- ONNX -----------------------------------------------------------------------------------


def _torch_onnx_export(model, args, path, **options) -> None:
    quiet = logging.getLogger("torch.onnx")  # notes on operators of packages not installed
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        torch.onnx.export(
            model, args, path, dynamo=True, external_data=False, verbose=False, **options
        )
    finally:
        quiet.setLevel(level)


class UnitRangeGenerator(torch.nn.Module):
    """A generator whose images are mapped from its output range to [0, 1]: what the ONNX
    file computes. It calls the generator's parts directly (no checks on the labels, which an
    exported graph cannot raise)."""

    def __init__(self, generator: torch.nn.Module):
        super().__init__()
        self.generator = generator
        lo, hi = generator.out_range
        self.lo, self.scale = float(lo), float(hi - lo)

    def forward(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        g = self.generator
        x = g.body(g.body_input(noise, labels)).reshape(-1, *g.image_shape)
        return ((x - self.lo) / self.scale).clamp(0, 1)


def _onnx_modules():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise missing_extra("export", "onnx and onnxruntime", "digitgan export --onnx") from None
    return onnx, onnxruntime


def _onnx_description(gan: Sampler, opset: int) -> dict:
    inputs = ["noise"] + (["labels"] if gan.num_classes else [])
    return {"file": ONNX, "opset": opset, "inputs": inputs, "output": "images", "range": [0, 1]}


def _export_onnx(gan: Sampler, path: Path) -> tuple[int, float]:
    """Write the generator (as :class:`UnitRangeGenerator`) to ``path`` with a dynamic batch
    axis, then compare ONNX Runtime's images with PyTorch's on fresh noise: (opset, the
    largest absolute difference). A difference over :data:`ONNX_TOLERANCE` is an error."""
    _, ort = _onnx_modules()
    model = UnitRangeGenerator(gan.generator).eval()
    conditional = bool(gan.num_classes)
    z = gan.noise(2, seed=0)
    args = (z, torch.zeros(2, dtype=torch.long)) if conditional else (z,)
    names = ["noise", "labels"] if conditional else ["noise"]
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    shapes = {"noise": {0: batch}} | ({"labels": {0: batch}} if conditional else {})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on its own internals
            _torch_onnx_export(
                model,
                args,
                str(path),
                input_names=names,
                output_names=["images"],
                opset_version=ONNX_OPSET,
                dynamic_shapes=shapes,
            )
    except Exception as e:  # the exporter raises many kinds; any is a failed export
        raise CheckpointError(f"--onnx: the generator cannot be exported to ONNX: {e}") from None
    # Fresh noise, and a batch size other than the one exported with.
    n = 17
    fresh = gan.noise(n, seed=secrets.randbits(62))
    feeds = {"noise": fresh.numpy()}
    labels = None
    if conditional:
        labels = torch.randint(0, gan.num_classes, (n,))
        feeds["labels"] = labels.numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["images"], feeds)
    with torch.no_grad():
        want = model(fresh, labels).numpy()
    if got.shape != want.shape:
        raise CheckpointError(
            f"--onnx: ONNX Runtime drew images of shape {got.shape}, PyTorch {want.shape}"
        )
    diff = float(abs(got - want).max())
    if not diff <= ONNX_TOLERANCE:
        raise CheckpointError(
            f"--onnx: ONNX Runtime's images differ from PyTorch's by up to {diff:.3g} (more "
            f"than {ONNX_TOLERANCE:g}); no model folder was written"
        )
    return ONNX_OPSET, diff
