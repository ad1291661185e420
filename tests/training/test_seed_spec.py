"""The seed preset matches DESIGN.md section 1: shapes, init, noise, optimiser, step order."""

import math

import pytest
import torch
from helpers import Stepping

from digitgan.config import preset
from digitgan.models import sample_noise


@pytest.fixture(scope="module")
def trainer(mnist20k):
    return Stepping(preset("seed").replace(train__device="cpu"), mnist20k, "cpu")


def _params(module):
    return {k: tuple(v.shape) for k, v in module.named_parameters()}


def test_layer_shapes(trainer):
    # torch stores Linear weights as (out, in): 100 -> 128 -> 784 and 784 -> 128 -> 1
    assert _params(trainer.G) == {
        "body.fc1.weight": (128, 100),
        "body.fc1.bias": (128,),
        "body.fc2.weight": (784, 128),
        "body.fc2.bias": (784,),
    }
    assert _params(trainer.D) == {
        "features.fc1.weight": (128, 784),
        "features.fc1.bias": (128,),
        "head.weight": (1, 128),
        "head.bias": (1,),
    }
    z = trainer.noise(5)
    x = trainer.G(z)
    assert x.shape == (5, 1, 28, 28) and x.min() >= 0 and x.max() <= 1  # sigmoid output
    assert trainer.D(x).shape == (5,)  # one logit per image


def test_init_statistics(trainer):
    for module in (trainer.G, trainer.D):
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                assert torch.count_nonzero(p) == 0, name
            else:
                fan_in = p.shape[1]
                expected = 1 / math.sqrt(fan_in / 2)
                # the sample std of n normals is within a few sigma/sqrt(2n) of the true one
                tol = 5 * expected / math.sqrt(2 * p.numel())
                assert abs(p.std().item() - expected) < tol, name
                assert abs(p.mean().item()) < 5 * expected / math.sqrt(p.numel()), name


def test_noise_is_uniform_minus_one_to_one(trainer):
    z = trainer.noise(20_000)
    assert z.shape == (20_000, 100)
    assert z.min() >= -1 and z.max() < 1
    assert z.min() < -0.999 and z.max() > 0.999
    assert abs(z.mean().item()) < 0.01
    assert z.var().item() == pytest.approx(1 / 3, rel=0.01)


def test_uniform_noise_is_torch_rand_times_two_less_one_bit_for_bit():
    # the numbers every run, checkpoint and the exported page's noise were drawn as
    for n, d, seed in [(1, 7, 0), (3, 17, 5), (128, 100, 2**32 - 1), (5, 1601, 7)]:
        want = torch.rand(n, d, generator=torch.Generator().manual_seed(seed)) * 2 - 1
        got = sample_noise(n, d, "uniform", torch.Generator().manual_seed(seed))
        assert torch.equal(got, want)
        out = torch.full((n, d), 9.0)
        sample_noise(n, d, "uniform", torch.Generator().manual_seed(seed), out=out)
        assert torch.equal(out, want)


def test_optimisers_are_adam_with_tensorflow_defaults(trainer):
    for opt, module in ((trainer.opt_g, trainer.G), (trainer.opt_d, trainer.D)):
        assert isinstance(opt, torch.optim.Adam)
        (group,) = opt.param_groups
        assert group["lr"] == 1e-3 and group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8
        assert {id(p) for p in group["params"]} == {id(p) for p in module.parameters()}


def test_step_order_d_then_g_on_fresh_noise(mnist20k):
    """One iteration: G(z1) without grad, D on real and fake (one pass: D has no batch
    statistics), D update; then D(G(z2)) with the updated D, G update. z1 and z2 are
    different draws."""
    cfg = preset("seed").replace(train__device="cpu", data__batch_size=8, train__fast_step=False)
    tr = Stepping(cfg, mnist20k)
    calls = []

    def hook(name):
        def record(module, inputs, output):
            calls.append(
                (
                    name,
                    torch.is_grad_enabled(),
                    inputs[0].detach().clone(),
                    tr.D.features.fc1.weight.detach().clone(),
                    tr.G.body.fc1.weight.detach().clone(),
                    output.detach().clone(),
                )
            )

        return record

    tr.G.register_forward_hook(hook("G"))
    tr.D.register_forward_hook(hook("D"))
    d0, g0 = tr.D.features.fc1.weight.detach().clone(), tr.G.body.fc1.weight.detach().clone()
    tr.step()
    assert [c[0] for c in calls] == ["G", "D", "G", "D"]
    g1, d_both, g2, d_g = calls
    assert not g1[1]  # the D step's fake batch carries no generator gradient
    assert torch.equal(d_both[3], d0)  # the D step sees the old D
    assert d_both[2].shape == (16, 1, 28, 28)  # the real batch, then the fake one
    assert torch.equal(d_both[2][8:], g1[5])
    d_real = d_both[2][:8]
    assert not torch.equal(d_g[3], d0)  # the G step sees the updated D
    assert torch.equal(g2[4], g0)  # G was not updated during the D step
    assert not torch.equal(tr.G.body.fc1.weight, g0)  # ... and is updated by the G step
    assert not torch.equal(g1[2], g2[2])  # fresh noise for the G step
    assert d_real.min() >= 0 and d_real.max() <= 1  # a real batch in [0, 1]
    # the real batch is real data: it matches rows of the dataset exactly
    real = torch.from_numpy(mnist20k.train.images).float() / 255
    assert any(torch.allclose(d_real[0], real[i], atol=1e-6) for i in range(real.shape[0]))


def test_epoch_stream_visits_every_image_once_per_epoch(mnist20k):
    tr = Stepping(preset("seed").replace(train__device="cpu", data__batch_size=128), mnist20k)
    n = mnist20k.train.images.shape[0]
    seen = torch.cat([tr.batches.next_indices() for _ in range(math.ceil(2 * n / 128))])
    assert torch.equal(seen[:n].sort().values, torch.arange(n))
    assert torch.equal(seen[n : 2 * n].sort().values, torch.arange(n))
    assert not torch.equal(seen[:n], seen[n : 2 * n])  # reshuffled each epoch


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"loss__objective": "minimax", "train__d_steps": 2},
        {
            "loss__objective": "hinge",
            "model__mlp__g_hidden": [64, 32],
            "model__mlp__d_hidden": [48, 24],
        },
        {"loss__label_smoothing": 0.1, "train__ema_decay": 0.9},
    ],
)
def test_hand_written_step_computes_what_autograd_does(mnist20k, overrides):
    """The fast MLP step (the default for the seed) against the generic autograd step:
    the same losses and weights, up to float32 rounding, after several iterations.

    Adam divides by sqrt(v), so where a gradient is near zero a rounding difference becomes
    a difference of up to one learning rate (its first step is nearly sign(g)): a few
    weights may differ by ~1e-3; the losses, which a wrong gradient would change far more,
    are compared closely.
    """
    cfg = preset("seed").replace(train__device="cpu", data__batch_size=32, **overrides)
    fast = Stepping(cfg, mnist20k)
    slow = Stepping(cfg.replace(train__fast_step=False), mnist20k)
    assert fast.hand_written is True and slow.hand_written is False
    for _ in range(5):
        fast.step()
        slow.step()
        for key in ("D_loss", "G_loss", "D_real", "D_fake"):
            assert fast.stats()[key] == pytest.approx(slow.stats()[key], rel=5e-4, abs=1e-6)
    for a, b in (
        (fast.G, slow.G),
        (fast.D, slow.D),
        (fast.sample_generator, slow.sample_generator),
    ):
        for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
            gap = (p - q).abs()
            assert gap.max() <= 2 * 5 * 1e-3, name  # Adam moves a weight at most ~lr a step
            assert (gap > 1e-4).float().mean() < 0.1, f"{name}: many weights differ"


def test_seed_training_matches_a_plain_pytorch_loop(mnist20k):
    """Fed the same initial weights, batches and noise, digitgan's seed iterations give the
    losses of the textbook eager loop (nn.Sequential, BCEWithLogitsLoss, two Adams)."""
    from torch import nn

    tr = Stepping(preset("seed").replace(train__device="cpu"), mnist20k)
    G = nn.Sequential(nn.Linear(100, 128), nn.ReLU(), nn.Linear(128, 784), nn.Sigmoid())
    D = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 1))
    mine = [tr.G.body.fc1, tr.G.body.fc2, tr.D.features.fc1, tr.D.head]
    with torch.no_grad():
        for plain, ours in zip([G[0], G[2], D[0], D[2]], mine, strict=True):
            plain.weight.copy_(ours.weight)
            plain.bias.copy_(ours.bias)
    batches, noises = [], []  # what each iteration drew, from the data and the noise stream
    next_batch, noise = tr.batches.next, tr.noise
    tr.batches.next = lambda **kw: batches.append(next_batch(**kw)) or batches[-1]
    tr.trainer.noise = lambda n, generator=None, out=None: (
        noises.append(noise(n, generator, out)) or noises[-1]
    )
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3)
    bce = nn.BCEWithLogitsLoss()
    ones, zeros = torch.ones(128, 1), torch.zeros(128, 1)
    for _ in range(5):
        batches.clear(), noises.clear()
        tr.step()
        ((x, _),), (z1, z2) = batches, noises
        d_loss = bce(D(x.flatten(1)), ones) + bce(D(G(z1).detach()), zeros)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = bce(D(G(z2)), ones)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        assert tr.stats()["D_loss"] == pytest.approx(d_loss.item(), rel=1e-5)
        assert tr.stats()["G_loss"] == pytest.approx(g_loss.item(), rel=1e-5)
