"""Mini-batches drawn from shuffled epochs of a dataset held on the training device.

The images stay uint8 on the device; each batch is an index into them, taken
from a stream of shuffled epochs (every image once per epoch; a batch that
crosses an epoch boundary takes the rest of one epoch and the start of the
next). No per-item loader, no host round trip. The state (current permutation,
position, generator state) is saved in checkpoints so that a resumed run sees
exactly the batches an uninterrupted one would.

In distributed training every rank walks the same stream (same generator, same
permutations, so no communication is needed) and takes its own contiguous part of
each batch: with ``shard=(rank, world)``, rank r gets items r*b .. (r+1)*b - 1 of
every batch of ``batch_size``, b = batch_size / world.
"""

from __future__ import annotations

import torch


class EpochBatches:
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        generator: torch.Generator,
        out_range: tuple[float, float] = (0.0, 1.0),
        shard: tuple[int, int] = (0, 1),
    ):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError("images must be a uint8 tensor of shape (N, C, H, W)")
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        rank, world = shard
        if batch_size % world or not 0 <= rank < world:
            raise ValueError(f"cannot take part {rank} of {world} of a batch of {batch_size}")
        self.part = slice(rank * batch_size // world, (rank + 1) * batch_size // world)
        self.generator = generator
        lo, hi = out_range
        self._scale = (hi - lo) / 255.0
        self._shift = lo
        self.perm = self._new_epoch()
        self.pos = 0

    def _new_epoch(self) -> torch.Tensor:
        n = self.images.shape[0]
        return torch.randperm(n, generator=self.generator, device=self.images.device)

    def next_indices(self) -> torch.Tensor:
        """Indices of the next (whole) batch in the epoch stream."""
        parts, need = [], self.batch_size
        while need > 0:
            if self.pos == self.perm.numel():
                self.perm, self.pos = self._new_epoch(), 0
            take = min(need, self.perm.numel() - self.pos)
            parts.append(self.perm[self.pos : self.pos + take])
            self.pos += take
            need -= take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def next(self, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """This shard's part of the next batch: (images as float in the model's range, labels).
        The images are written into ``out`` (float, of the batch's shape) when given."""
        idx = self.next_indices()[self.part]
        return self.images_at(idx, out), self.labels.index_select(0, idx)

    def images_at(self, idx: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The images at ``idx`` as float in the model's range: (len(idx), C, H, W), or
        written into ``out`` (float, of any shape holding len(idx) images in order)."""
        raw = self.images.index_select(0, idx)
        x = raw.float() if out is None else out.copy_(raw.view(out.shape))  # (converts)
        x.mul_(self._scale)
        if self._shift:
            x.add_(self._shift)
        return x

    def state_dict(self) -> dict:
        return {
            "perm": self.perm.cpu(),
            "pos": self.pos,
            "rng": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output; ValueError if it cannot be this dataset's."""
        perm, pos, n = state["perm"], state["pos"], self.images.shape[0]
        if perm.shape != (n,):
            raise ValueError(f"saved data order covers {perm.numel()} images, the dataset has {n}")
        if perm.dtype != torch.int64 or not torch.equal(perm.sort().values, torch.arange(n)):
            raise ValueError("saved data order is not a permutation of the dataset")
        if type(pos) is not int or not 0 <= pos <= n:
            raise ValueError(f"saved position {pos!r} is not in 0..{n}")
        self.generator.set_state(state["rng"])
        self.perm = perm.to(self.images.device)
        self.pos = pos
