"""Using a trained model: load a run or checkpoint and draw samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .config import Config
from .errors import ConfigError
from .models import build_models, sample_noise
from .training.checkpoint import (
    check_models,
    checkpoint_config,
    load_module_state,
    read_checkpoint,
    resolve_checkpoint,
)
from .viz import make_grid, save_png, to_uint8


class GAN:
    """A trained generator, ready to draw images. Made by :func:`load`."""

    def __init__(self, generator: torch.nn.Module, config: Config, meta: dict, path: Path):
        self.generator = generator.eval()
        self.config = config
        self.meta = meta
        self.path = path

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.meta["image_shape"])

    @property
    def step(self) -> int:
        """Iterations the model was trained for."""
        return int(self.meta["step"])

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def noise(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` noise vectors, the same for a given seed on every device."""
        gen = torch.Generator().manual_seed(seed)
        m = self.config.model
        return sample_noise(n, m.z_dim, m.noise, gen)

    @torch.no_grad()
    def generate(self, n: int, seed: int = 0, batch_size: int = 1000) -> torch.Tensor:
        """``n`` images as a float tensor (n, C, H, W) in [0, 1], reproducible for ``seed``.

        Drawn in batches without gradients; ``generate(k, s)`` is the first k of
        ``generate(n, s)`` for k < n.
        """
        if n < 0:
            raise ConfigError(f"--n: cannot draw {n} samples")
        z = self.noise(n, seed)
        lo, hi = self.generator.out_range
        out = [
            ((self.generator(z[i : i + batch_size].to(self.device)) - lo) / (hi - lo)).cpu()
            for i in range(0, n, batch_size)
        ]
        return torch.cat(out) if out else torch.empty(0, *self.image_shape)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` images as a uint8 array (n, C, H, W), reproducible for ``seed``."""
        return to_uint8(self.generate(n, seed))

    def save_samples(self, path: str | Path, n: int, seed: int = 0) -> Path:
        """Write ``n`` samples to ``.png`` (a grid) or ``.npy`` (uint8, (n, H, W) for grey,
        (n, H, W, C) for colour)."""
        path = Path(path)
        if path.suffix not in (".png", ".npy"):
            raise ConfigError(f"--out {path}: the file must end in .png or .npy")
        if not path.parent.is_dir():
            raise ConfigError(f"--out {path}: folder {path.parent} does not exist")
        images = self.sample(n, seed)
        if path.suffix == ".png":
            if n == 0:
                raise ConfigError("--n: a PNG grid needs at least one sample")
            save_png(path, make_grid(images))
        else:
            arr = images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)
            with path.open("wb") as f:
                np.save(f, np.ascontiguousarray(arr))
        return path


def load(path: str | Path, device: str | torch.device = "cpu") -> GAN:
    """Load the generator of a run directory (its latest checkpoint) or a checkpoint file."""
    ckpt = resolve_checkpoint(path)
    tensors, meta = read_checkpoint(ckpt)
    cfg = checkpoint_config(meta, ckpt)
    check_models(cfg.model, meta, tensors, "G", ckpt)
    with torch.random.fork_rng(devices=[]):  # building draws an init we then overwrite
        G, _ = build_models(cfg.model, meta["image_shape"], meta["num_classes"])
    load_module_state(G, tensors, "G", ckpt)
    return GAN(G.to(device), cfg, meta, ckpt)
