"""The objectives on hand-computed logits, label smoothing, and the discriminator penalties."""

import math

import pytest
import torch
from torch import nn

from digitgan.errors import ConfigError
from digitgan.losses import (
    OBJECTIVES,
    PenaltyBatch,
    gradient_penalty,
    half_cosine,
    r1_penalty,
    r2_penalty,
)
from digitgan.training.step import objective_value


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
        assert torch.isfinite(obj.g_loss(big, big.flip(0)) if obj.pairs_real else obj.g_loss(big))
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
    gen = torch.Generator().manual_seed(0)
    batch = PenaltyBatch(real, None, fake, None, lambda shape: torch.rand(shape, generator=gen))
    penalty = gradient_penalty(D, batch)
    alpha = D.seen.detach()  # x_hat = alpha * 1 + (1 - alpha) * 0
    per_sample = alpha.flatten(1)
    assert torch.equal(per_sample.min(1).values, per_sample.max(1).values)  # not per pixel
    a = per_sample[:, 0]
    assert a.unique().numel() > n * 0.99  # not one per batch
    assert a.min() >= 0 and a.max() < 1  # uniform on [0, 1), not normal
    assert a.mean().item() == pytest.approx(0.5, abs=0.03)
    assert a.var().item() == pytest.approx(1 / 12, rel=0.1)
    # ||grad|| = alpha * sqrt(16): one value per sample
    assert penalty.shape == (n,)
    torch.testing.assert_close(penalty, (4 * a - 1) ** 2, rtol=1e-4, atol=1e-6)


def test_gradient_penalty_is_finite_when_real_equals_fake_and_gradient_is_zero():
    D = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    nn.init.zeros_(D[1].weight)  # dD/dx = 0 everywhere: the norm is exactly zero

    class Wrapped(nn.Module):
        def forward(self, x, labels=None):
            return D(x).squeeze(1)

    x = torch.rand(8, 1, 4, 4)
    penalty = gradient_penalty(Wrapped(), PenaltyBatch(x, None, x.clone(), None)).mean()
    penalty.backward()
    assert torch.isfinite(penalty) and penalty.item() == pytest.approx(1.0, abs=1e-5)
    assert torch.isfinite(D[1].weight.grad).all()


def test_r1_is_half_the_squared_gradient_norm_on_real_data():
    x = torch.randn(5, 1, 2, 2)
    penalty = r1_penalty(_Recorder(), PenaltyBatch(x, None, torch.zeros_like(x), None))
    torch.testing.assert_close(penalty, 0.5 * x.flatten(1).square().sum(1))


class _Linear(nn.Module):
    """D(x) = <w, x> + b: its input gradient is w for every sample."""

    def __init__(self, w: torch.Tensor, b: float = 0.3):
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x, labels=None):
        return (x.flatten(1) * self.w).sum(1) + self.b


@pytest.mark.parametrize("penalty", [r1_penalty, r2_penalty])
def test_r1_and_r2_are_zero_at_a_constant_d_and_the_closed_form_for_a_linear_d(penalty):
    real, fake = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2)
    batch = PenaltyBatch(real, None, fake, None)
    assert torch.equal(penalty(_Linear(torch.zeros(4)), batch), torch.zeros(6))
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    torch.testing.assert_close(penalty(_Linear(w), batch), torch.full((6,), 0.5 * 14.25))


def test_r1_looks_at_real_data_and_r2_at_generated_data_with_their_labels():
    seen = []

    class Recorder(nn.Module):
        def forward(self, x, labels=None):
            seen.append((x.detach(), labels))
            return x.flatten(1).sum(1)

    real, fake = torch.ones(3, 1, 2, 2), torch.zeros(3, 1, 2, 2)
    real_y, fake_y = torch.tensor([1, 2, 3]), torch.tensor([7, 8, 9])
    batch = PenaltyBatch(real, real_y, fake, fake_y)
    r1_penalty(Recorder(), batch), r2_penalty(Recorder(), batch)
    (x1, y1), (x2, y2) = seen
    assert torch.equal(x1, real) and torch.equal(y1, real_y)
    assert torch.equal(x2, fake) and torch.equal(y2, fake_y)


def test_rpgan_on_hand_computed_logits():
    o = OBJECTIVES["rpgan"]
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    # softplus(f - r): softplus(-1.5), softplus(-2.0); G: softplus(1.5), softplus(2.0)
    d = (math.log1p(math.exp(-1.5)) + math.log1p(math.exp(-2.0))) / 2
    g = (math.log1p(math.exp(1.5)) + math.log1p(math.exp(2.0))) / 2
    assert o.d_loss(real, fake).item() == pytest.approx(d, rel=1e-6)
    assert o.g_loss(fake, real).item() == pytest.approx(g, rel=1e-6)
    assert o.pairs_real and not o.real_target


def test_the_penalty_schedule_is_a_half_cosine_to_its_end():
    assert half_cosine(0, 100, 0.1) == 1.0 and half_cosine(100, 100, 0.1) == pytest.approx(0.1)
    assert half_cosine(50, 100, 0.1) == pytest.approx(0.55)
    assert half_cosine(200, 100, 0.1) == pytest.approx(0.1)  # (a resume past the end)
    assert half_cosine(37, 100, 1.0) == 1.0


def test_the_cluster_loss_rewards_confident_and_evenly_used_categories():
    from digitgan.losses import cluster_loss

    k = 4
    unsure = torch.zeros(8, k)  # every image spread evenly: entropy log K, their mean's log K
    assert cluster_loss(unsure).item() == pytest.approx(0.0, abs=1e-6)
    even = 50.0 * torch.eye(k).repeat(2, 1)  # certain, two images per category
    assert cluster_loss(even).item() == pytest.approx(-math.log(k), abs=1e-4)
    one = 50.0 * torch.eye(k)[[0] * 8]  # certain, all in one category
    assert cluster_loss(one).item() == pytest.approx(0.0, abs=1e-4)


def test_the_paired_cluster_loss_is_minus_the_mutual_information_of_the_two_views():
    from digitgan.losses import paired_cluster_loss

    k = 4
    even = 50.0 * torch.eye(k).repeat(2, 1)  # both views certain and agreeing, split evenly
    assert paired_cluster_loss(even, even).item() == pytest.approx(-math.log(k), abs=1e-4)
    unsure = torch.zeros(8, k)  # one view says nothing: independent of the other
    assert paired_cluster_loss(even, unsure).item() == pytest.approx(0.0, abs=1e-6)
    one = 50.0 * torch.eye(k)[[0] * 8]  # agreeing, but all in one category: no information
    assert paired_cluster_loss(one, one).item() == pytest.approx(0.0, abs=1e-4)
    # by hand: certain first view, second view 3:1 towards it; joint [[3, 1], [1, 3]] / 8
    first = 50.0 * torch.eye(2)
    second = torch.tensor([[0.75, 0.25], [0.25, 0.75]]).log()
    mi = 0.75 * math.log(0.375 / 0.25) + 0.25 * math.log(0.125 / 0.25)
    assert paired_cluster_loss(first, second).item() == pytest.approx(-mi, abs=1e-5)
    # symmetric in its two views
    assert paired_cluster_loss(second, first).item() == pytest.approx(-mi, abs=1e-5)


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_each_objective_gives_stacked_runs_one_loss_each(name):
    # logits of 3 runs (3, N): each run's loss, as if it were alone, without a vmap
    objective = OBJECTIVES[name]
    real, fake = torch.randn(3, 4), torch.randn(3, 4)
    g_args = (fake, real) if objective.pairs_real else (fake,)
    d = objective_value(objective.d_loss, real, fake)
    g = objective_value(objective.g_loss, *g_args)
    assert d.shape == g.shape == (3,)
    for i in range(3):
        torch.testing.assert_close(d[i], objective.d_loss(real[i], fake[i]))
        torch.testing.assert_close(g[i], objective.g_loss(*(x[i] for x in g_args)))


def test_an_objective_that_reduces_over_every_run_is_refused_for_stacked_runs():
    def mean_of_all(fake):
        return fake.mean()

    assert objective_value(mean_of_all, torch.ones(4)) == 1  # one run: any reduction
    with pytest.raises(ConfigError, match=r"loss\.objective: .*last dimension.*\(2, 4\).*\(\)"):
        objective_value(mean_of_all, torch.ones(2, 4))
