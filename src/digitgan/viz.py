"""Pictures: image tensors to uint8 arrays, grids, and PNG files."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch

from .fileio import atomic_write_bytes


def to_uint8(images: torch.Tensor, out_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Float images (N, C, H, W) in ``out_range`` -> uint8 array (N, C, H, W), rounded."""
    lo, hi = out_range
    x = (images.detach().float().cpu() - lo) * (255.0 / (hi - lo))
    return x.round_().clamp_(0, 255).to(torch.uint8).numpy()


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile uint8 images (N, C, H, W) into one (H', W') or (H', W', C) image, ``nrow`` per row.

    ``nrow`` defaults to ceil(sqrt(N)), so 16 images make a 4x4 grid; cells are separated by
    ``pad`` black pixels.
    """
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
    from PIL import Image

    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    return buf.getvalue()


def save_png(path: str | Path, grid: np.ndarray, scale: int = 1) -> None:
    """Write a grid as a PNG file, atomically."""
    atomic_write_bytes(Path(path), png_bytes(grid, scale))
