import math

import pytest
import torch

from digitgan.losses import OBJECTIVES


def _softplus(v):
    return math.log1p(math.exp(v))


def test_ns_and_bce_on_hand_computed_logits():
    real = torch.tensor([0.0, 2.0])
    fake = torch.tensor([0.0, -1.0])
    ns = OBJECTIVES["ns"]
    # -log sigmoid(l) = log(1 + e^-l);  -log(1 - sigmoid(l)) = log(1 + e^l)
    d_expected = (math.log(2) + math.log(1 + math.exp(-2))) / 2 + (
        math.log(2) + math.log(1 + math.exp(-1))
    ) / 2
    assert ns.d_loss(real, fake).item() == pytest.approx(d_expected, rel=1e-6)
    g_expected = (math.log(2) + math.log(1 + math.exp(1))) / 2
    assert ns.g_loss(fake).item() == pytest.approx(g_expected, rel=1e-6)


def test_d_loss_matches_seed_cross_entropy_form():
    """The seed's D_loss_real + D_loss_fake written with sigmoid cross-entropy."""
    torch.manual_seed(0)
    real, fake = torch.randn(64) * 3, torch.randn(64) * 3
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    seed = bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
    assert OBJECTIVES["ns"].d_loss(real, fake).item() == pytest.approx(seed.item(), rel=1e-6)
    g_seed = bce(fake, torch.ones_like(fake))
    assert OBJECTIVES["ns"].g_loss(fake).item() == pytest.approx(g_seed.item(), rel=1e-6)


def test_minimax_generator_loss_is_log_one_minus_d():
    fake = torch.tensor([1.0, -3.0])
    expected = sum(math.log(1 - 1 / (1 + math.exp(-v))) for v in (1.0, -3.0)) / 2
    assert OBJECTIVES["minimax"].g_loss(fake).item() == pytest.approx(expected, rel=1e-6)


def test_losses_are_stable_for_extreme_logits():
    big = torch.tensor([80.0, -80.0])
    for obj in OBJECTIVES.values():
        assert torch.isfinite(obj.d_loss(big, big))
        assert torch.isfinite(obj.g_loss(big))
    # -log sigmoid(-80) is 80, not inf
    assert OBJECTIVES["ns"].g_loss(torch.tensor([-80.0])).item() == pytest.approx(80.0)
