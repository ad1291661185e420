"""Pictures: image tensors to uint8 arrays, grids, and PNG files."""

from __future__ import annotations

import io
import math
import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import RunDirError, missing_extra
from .fileio import (
    MAX_METRICS_BYTES,
    MiB,
    atomic_write,
    atomic_write_bytes,
    read_bounded,
    read_jsonl,
)

MAX_GRID_BYTES = 64 * MiB
"""The largest sample grid (PNG) :func:`progress_gif` reads."""
MAX_PANELS = 32
"""The most panels :func:`plot_metrics` draws (the first ones, in its order)."""
_PLOTTABLE = 1e15  # larger values (and NaN, infinity) are left out of a plot
_KEY = re.compile(r"[\w./-]{1,64}")  # names of logged values worth a panel
# What PIL raises for a damaged or hostile image file.
_BAD_IMAGE = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error)


def to_uint8(images: torch.Tensor, out_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Float images (N, C, H, W) in ``out_range`` -> uint8 array (N, C, H, W), rounded."""
    lo, hi = out_range
    x = (images.detach().float().cpu() - lo) * (255.0 / (hi - lo))
    return x.round_().clamp_(0, 255).to(torch.uint8).numpy()


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile uint8 images (N, C, H, W) into one image, ``nrow`` per row: grey (H', W') for
    one channel, else colour (H', W', 3) (two channels as red and green) or (H', W', 4)
    (RGBA).

    ``nrow`` defaults to ceil(sqrt(N)), so 16 images make a 4x4 grid; cells are separated by
    ``pad`` black pixels.
    """
    if images.shape[1] == 2:  # red and green, no blue: an image PNG and TensorBoard show
        images = np.concatenate([images, np.zeros_like(images[:, :1])], axis=1)
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / nrow))
    grid = np.zeros((c, pad + rows * (h + pad), pad + nrow * (w + pad)), dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, y : y + h, x : x + w] = images[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def png_bytes(grid: np.ndarray, scale: int = 1) -> bytes:
    """Encode a grey (H, W) or colour (H, W, 3) uint8 image as PNG, upscaled ``scale`` times."""
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | Path, grid: np.ndarray, scale: int = 1) -> None:
    """Write a grid as a PNG file, atomically."""
    atomic_write_bytes(Path(path), png_bytes(grid, scale))


def progress_gif(
    run_dir: str | Path, out: str | Path | None = None, scale: int = 3, ms_per_frame: int = 400
) -> Path:
    """An animated GIF of a run's saved sample grids (samples/000.png, 001.png, ...), in order.

    Written to ``out`` (default ``RUN/plots/progress.gif``); frames are upscaled ``scale``
    times with nearest-neighbour so single pixels stay sharp.
    """
    run_dir = Path(run_dir)
    frames = sorted(p for p in (run_dir / "samples").glob("[0-9][0-9][0-9]*.png"))
    if not frames:
        raise RunDirError(f"{run_dir}: no sample grids in {run_dir / 'samples'} to animate")
    images = []
    for p in frames:
        data = read_bounded(p, MAX_GRID_BYTES, "sample grid", RunDirError)
        try:
            with Image.open(io.BytesIO(data), formats=["PNG"]) as im:
                mode = "RGB" if im.mode in ("RGB", "RGBA") else "L"  # colour grids stay colour
                images.append(
                    im.convert(mode).resize((im.width * scale, im.height * scale), Image.NEAREST)
                )
        except (*_BAD_IMAGE, Image.DecompressionBombError) as e:
            raise RunDirError(f"sample grid {p}: not a readable PNG image ({e})") from None
    out = Path(out) if out else run_dir / "plots" / "progress.gif"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as f:
        images[0].save(
            f, format="GIF", save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0
        )
    return out


def plot_metrics(run_dir: str | Path | Sequence[str | Path], out: str | Path | None = None) -> Path:
    """A PNG of a run's logged curves (from metrics.jsonl): losses, D outputs, and any
    evaluation metrics, one panel each, against the iteration. A sequence of runs (the seeds
    of ``train --seeds``) share the panels, a colour each, so that their spread shows; their
    PNG goes to ``plots/curves.png`` in the first run's parent folder unless ``out`` says."""
    plt = _pyplot()

    several = not isinstance(run_dir, str | Path)  # then a colour per run, a style per key
    runs = [Path(r) for r in run_dir] if several else [Path(run_dir)]
    logs = {run: _logged(run) for run in runs}
    panels = [("losses", ["D_loss", "G_loss"]), ("discriminator outputs", ["D_real", "D_fake"])]
    skip = {"step", "wall_s", "it_per_s", "D_loss", "G_loss", "D_real", "D_fake"}
    extra = sorted({k for records in logs.values() for r in records for k in r if k not in skip})
    panels += [(k, [k]) for k in extra[: MAX_PANELS - len(panels)]]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(7, 2.4 * len(panels)), sharex=True, squeeze=False
    )
    styles = ("-", "--")
    for ax, (title, keys) in zip(axes[:, 0], panels, strict=True):
        for i, (run, records) in enumerate(logs.items()):
            for k, style in zip(keys, styles, strict=False):
                pts = [(r["step"], r[k]) for r in records if k in r]
                if not pts:
                    continue
                look = {"label": k}  # several runs: a colour each, named once; a style per key
                if several:
                    look = {"color": f"C{i % 10}", "linestyle": style}
                    look["label"] = run.name if k == keys[0] else None
                ax.plot(*zip(*pts, strict=True), linewidth=1, **look)
        if several and len(keys) > 1:
            title += f" ({keys[0]} solid, {keys[1]} dashed)"
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("iteration")
    fig.tight_layout()
    out = Path(out) if out else (runs[0].parent if several else runs[0]) / "plots" / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return out


def _logged(run_dir: Path) -> list[dict]:
    """The plottable records of a run's metrics.jsonl (each with a ``step``); a RunDirError
    when there are none."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise RunDirError(f"{run_dir}: not a run directory (no metrics.jsonl)")
    records = read_jsonl(path, MAX_METRICS_BYTES, "metrics file", RunDirError)
    records = [
        {k: x for k, v in r.items() if (x := _plottable(v)) is not None and _KEY.fullmatch(k)}
        for r in records
        if _plottable(r.get("step")) is not None
    ]
    if not records:
        raise RunDirError(f"{run_dir}: no logged metrics in {path} to plot")
    return records


def _plottable(value) -> float | None:
    """A logged value as a float, if it is a number a plot can show (not a bool, finite, of
    magnitude below 1e15); else None."""
    if type(value) not in (int, float) or not -_PLOTTABLE < value < _PLOTTABLE:
        return None
    return float(value)


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend: imported here, when a plot is drawn,
    because it is an optional extra (``digitgan[plot]``) and slow to import."""
    try:
        import matplotlib
    except ImportError:
        raise missing_extra("plot", "matplotlib", "digitgan plot") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
