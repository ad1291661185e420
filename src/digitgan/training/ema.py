"""An exponential moving average of the generator's weights (Yazici et al. 2019).

After every generator step, each EMA parameter moves towards the trained one:
``ema = decay * ema + (1 - decay) * param``; buffers (BatchNorm running statistics)
are copied as they are. Samples and evaluation use the averaged generator, which is
usually visibly smoother than the last iterate.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._params = list(self.model.parameters())
        self._buffers = list(self.model.buffers())

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average towards ``model``'s current weights."""
        torch._foreach_lerp_(self._params, list(model.parameters()), 1.0 - self.decay)
        for mine, theirs in zip(self._buffers, model.buffers(), strict=True):
            mine.copy_(theirs)
