"""The exponential moving average of G's weights."""

import pytest
import torch

from digitgan.training.ema import EMA


def test_ema_update_arithmetic():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = EMA(model, decay=0.9)
    # the decay warms up: (1 + t) / (10 + t) until it reaches 0.9 at t = 80
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(35) == pytest.approx(0.8)
    assert ema.decay_at(80) == ema.decay_at(10_000) == 0.9
    before = [p.detach().clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(3.0)
    ema.update(model, t=100)
    for e, b, p in zip(ema.model.parameters(), before, model.parameters(), strict=True):
        assert torch.allclose(e, 0.9 * b + 0.1 * p)
    assert torch.equal(ema.model[1].running_mean, torch.full((2,), 3.0))  # buffers copied
    assert not any(p.requires_grad for p in ema.model.parameters())
