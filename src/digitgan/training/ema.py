"""An exponential moving average of the generator's weights (Yazici et al. 2019).

After every generator step, each EMA parameter moves towards the trained one:
``ema = d * ema + (1 - d) * param``; buffers (BatchNorm running statistics) are copied
as they are. The decay warms up as TensorFlow's ExponentialMovingAverage does with
``num_updates``: d = min(decay, (1 + t) / (10 + t)) at update t, so early averages are
not dominated by the random initial weights (with a fixed 0.999 the average would still
be two-thirds initial weights after 400 steps). Samples and evaluation use the averaged
generator, which is usually visibly smoother than the last iterate.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float, average: nn.Module | None = None):
        """The average of ``model``, starting from a copy of it, or from ``average`` (a module
        of the same parameters, such as the stacked averages of several runs)."""
        self.decay = decay
        start = copy.deepcopy(model) if average is None else average
        self.model = start.eval().requires_grad_(False)
        self._params = list(self.model.parameters())
        self._buffers = list(self.model.buffers())

    def decay_at(self, t: int) -> float:
        """The decay used for update number ``t`` (0-based)."""
        return min(self.decay, (1.0 + t) / (10.0 + t))

    def weight_at(self, t: int) -> float:
        """How far update number ``t`` moves the average towards the model: 1 - decay."""
        return 1.0 - self.decay_at(t)

    def update(self, model: nn.Module, t: int) -> None:
        """Update number ``t`` of the average towards ``model``'s current weights."""
        self.blend(model, self.weight_at(t))

    @torch.no_grad()
    def blend(self, model: nn.Module, weight: float | torch.Tensor) -> None:
        """Move the average ``weight`` of the way towards ``model``'s weights: a float, or a
        scalar tensor on the device (the same numbers; a CUDA graph reads it as it changes)."""
        params = list(model.parameters())
        if isinstance(weight, torch.Tensor):
            weight = [weight] * len(params)
        torch._foreach_lerp_(self._params, params, weight)
        for mine, theirs in zip(self._buffers, model.buffers(), strict=True):
            mine.copy_(theirs)
