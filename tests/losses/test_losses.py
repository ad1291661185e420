"""The objectives on hand-computed logits, label smoothing, and the discriminator penalties."""

import math

import pytest
import torch
from torch import nn

from digitgan.losses import OBJECTIVES, gradient_penalty, r1_penalty


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


REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -3.0])


def test_least_squares_on_hand_computed_logits():
    o = OBJECTIVES["lsgan"]
    expected_d = 0.5 * ((2 - 1) ** 2 + (-1 - 1) ** 2) / 2 + 0.5 * (0.5**2 + 3.0**2) / 2
    assert o.d_loss(REAL, FAKE).item() == pytest.approx(expected_d)
    assert o.g_loss(FAKE).item() == pytest.approx(0.5 * ((0.5 - 1) ** 2 + (-3 - 1) ** 2) / 2)


def test_wasserstein_on_hand_computed_logits():
    o = OBJECTIVES["wgan"]
    assert o.d_loss(REAL, FAKE).item() == pytest.approx((0.5 - 3) / 2 - (2 - 1) / 2)
    assert o.g_loss(FAKE).item() == pytest.approx(-(0.5 - 3) / 2)


def test_hinge_on_hand_computed_logits():
    o = OBJECTIVES["hinge"]
    # relu(1 - real): [0, 2]; relu(1 + fake): [1.5, 0]
    assert o.d_loss(REAL, FAKE).item() == pytest.approx(2 / 2 + 1.5 / 2)
    assert o.g_loss(FAKE).item() == pytest.approx(1.25)


def test_one_sided_label_smoothing_targets_point_nine():
    real, fake = torch.tensor([1.0]), torch.tensor([0.0])
    p = 1 / (1 + math.exp(-1.0))
    expected = -(0.9 * math.log(p) + 0.1 * math.log(1 - p)) + math.log(2)
    got = OBJECTIVES["ns"].d_loss(real, fake, real_target=0.9).item()
    assert got == pytest.approx(expected, rel=1e-6)
    # fake targets stay at 0: smoothing is one-sided
    assert OBJECTIVES["ns"].d_loss(real, fake, real_target=1.0).item() == pytest.approx(
        -math.log(p) + math.log(2), rel=1e-6
    )
    assert OBJECTIVES["lsgan"].d_loss(real, fake, real_target=0.9).item() == pytest.approx(
        0.5 * 0.1**2
    )


class _Recorder(nn.Module):
    """D(x) = 1/2 sum x^2, which records its input: its input gradient is x itself."""

    def forward(self, x, labels=None):
        self.seen = x
        return 0.5 * x.flatten(1).square().sum(1)


def test_gradient_penalty_draws_one_uniform_alpha_per_sample():
    n = 2000
    real, fake = torch.ones(n, 1, 4, 4), torch.zeros(n, 1, 4, 4)
    D = _Recorder()
    penalty = gradient_penalty(D, real, fake, None, torch.Generator().manual_seed(0))
    alpha = D.seen.detach()  # x_hat = alpha * 1 + (1 - alpha) * 0
    per_sample = alpha.flatten(1)
    assert torch.equal(per_sample.min(1).values, per_sample.max(1).values)  # not per pixel
    a = per_sample[:, 0]
    assert a.unique().numel() > n * 0.99  # not one per batch
    assert a.min() >= 0 and a.max() < 1  # uniform on [0, 1), not normal
    assert a.mean().item() == pytest.approx(0.5, abs=0.03)
    assert a.var().item() == pytest.approx(1 / 12, rel=0.1)
    # ||grad|| = alpha * sqrt(16) per sample
    assert penalty.item() == pytest.approx(((4 * a - 1) ** 2).mean().item(), rel=1e-4)


def test_gradient_penalty_is_finite_when_real_equals_fake_and_gradient_is_zero():
    D = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    nn.init.zeros_(D[1].weight)  # dD/dx = 0 everywhere: the norm is exactly zero

    class Wrapped(nn.Module):
        def forward(self, x, labels=None):
            return D(x).squeeze(1)

    x = torch.rand(8, 1, 4, 4)
    penalty = gradient_penalty(Wrapped(), x, x.clone(), None)
    penalty.backward()
    assert torch.isfinite(penalty) and penalty.item() == pytest.approx(1.0, abs=1e-5)
    assert torch.isfinite(D[1].weight.grad).all()


def test_r1_is_half_the_squared_gradient_norm_on_real_data():
    x = torch.randn(5, 1, 2, 2)
    penalty = r1_penalty(_Recorder(), x, torch.zeros_like(x), None)
    assert penalty.item() == pytest.approx(0.5 * x.flatten(1).square().sum(1).mean().item())
