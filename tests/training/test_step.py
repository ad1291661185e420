"""The step: which implementation runs, the passes it saves, its optimiser call, its result."""

import math

import pytest
import torch
from helpers import Stepping

from digitgan.config import preset
from digitgan.training.dense import DenseStep
from digitgan.training.step import Step, features, optimizer_step


def tiny_seed(**overrides):
    return preset("seed").replace(
        train__device="cpu", data__batch_size=16, model__mlp__g_hidden=[16], **overrides
    )


@pytest.mark.parametrize(
    "overrides, kernel, declared",
    [
        ({}, DenseStep, set()),
        ({"train__d_steps": 2, "loss__label_smoothing": 0.1}, DenseStep, set()),
        ({"model__conditional": True}, Step, {"conditional"}),
        ({"loss__r1__gamma": 1.0}, Step, {"penalties"}),
        ({"loss__instance_noise": 0.1}, Step, {"instance_noise"}),
        ({"augment__mode": "diffaugment"}, Step, {"augment"}),
        ({"train__precision": "bf16"}, Step, {"bf16"}),
        ({"model__categories": 4}, Step, {"categories"}),
        ({"model__spectral_norm": True}, Step, set()),  # the models' structure, not a feature
        ({"train__fast_step": False}, Step, set()),
    ],
)
def test_the_dense_kernel_runs_only_what_it_declares(overrides, kernel, declared, small_data):
    s = Stepping(tiny_seed(**overrides), small_data)
    assert type(s.kernel) is kernel
    assert (features(s.trainer) - DenseStep.FEATURES) == declared


@pytest.mark.parametrize(
    "name, overrides, d_calls",
    [
        ("seed", {"train__fast_step": False}, 2),  # no forward state: real and fake in one pass
        ("wgan-gp", {"train__d_steps": 1, "loss__gp__weight": 0.0}, 2),  # no norm, no SN
        ("dcgan", {}, 3),  # BatchNorm: real and fake apart, as two batches
        ("hinge-sn", {}, 3),  # spectral norm: one power iteration per pass, as before
    ],
)
def test_real_and_fake_share_a_pass_where_d_has_no_forward_state(
    tiny, name, overrides, d_calls, small_data
):
    cfg = tiny(name, **overrides) if name != "seed" else tiny_seed(**overrides)
    s = Stepping(cfg, small_data)
    calls = []
    s.D.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    s.step()
    bs = cfg.data.batch_size
    assert len(calls) == d_calls
    assert calls[0] == (2 * bs if d_calls == 2 else bs) and calls[-1] == bs


def test_one_generator_pass_serves_every_d_step_and_computes_the_same(small_data, one_thread):
    """With d_steps = 3 an MLP generator (no batch statistics) makes the fakes of the three
    D steps in one pass; the losses and weights are those of one pass per D step."""
    cfg = tiny_seed(train__fast_step=False, train__d_steps=3)
    one, apart = Stepping(cfg, small_data), Stepping(cfg, small_data)
    apart.kernel.one_g_pass = False
    calls = []
    one.G.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    for _ in range(3):
        one.step()
        apart.step()
        for key, value in one.stats().items():
            assert value == pytest.approx(apart.stats()[key], rel=1e-5, abs=1e-7), key
    assert calls == [3 * 16, 16] * 3  # D steps' fakes at once, then the G step's
    for p, q in zip(one.G.parameters(), apart.G.parameters(), strict=True):
        assert (p - q).abs().max() < 1e-5


def test_optimizer_step_is_adam_step_exactly():
    """The step's Adam call gives the weights and state of ``opt.step()``, bit for bit."""
    torch.manual_seed(0)
    a = [torch.randn(7, 5, requires_grad=True), torch.randn(5, requires_grad=True)]
    b = [p.detach().clone().requires_grad_(True) for p in a]
    kw = {"lr": 1e-2, "betas": (0.5, 0.99), "eps": 1e-8, "fused": True}
    opt_a, opt_b = torch.optim.Adam(a, **kw), torch.optim.Adam(b, **kw)
    for _ in range(4):
        grads = [torch.randn_like(p) for p in a]
        for p, q, g in zip(a, b, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt_a.step()
        optimizer_step(opt_b)
        assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert all(torch.equal(sa[i][k], sb[i][k]) for i in sa for k in sa[i])
    assert float(sb[0]["step"]) == 4


def test_a_parameter_without_gradient_is_left_alone_as_adam_does():
    used, unused = torch.ones(3, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = torch.optim.Adam([used, unused], lr=0.1, fused=True)
    for _ in range(2):
        used.grad = torch.ones(3)
        optimizer_step(opt)
    assert torch.equal(unused, torch.ones(2)) and not torch.equal(used, torch.ones(3))


def test_the_result_names_every_scalar_penalties_included(tiny, small_data):
    s = Stepping(tiny("wgan-gp"), small_data)
    s.step()
    stats = s.stats()
    assert set(stats) == {"D_loss", "G_loss", "D_real", "D_fake", "gp_penalty"}
    assert stats["gp_penalty"] >= 0


def _penalty_part(s: Stepping) -> float:
    """What the penalties added to the last D step's loss."""
    r = s.result
    return (r.d_loss - s.kernel.d_loss(r.real_logits, r.fake_logits)).item()


def test_lazy_regularisation_computes_penalties_every_n_d_steps_scaled_by_n(small_data):
    s = Stepping(tiny_seed(loss__r1__gamma=2.0, loss__lazy_every=4), small_data)
    for i in range(9):
        s.step()
        if i % 4 == 0:
            value = s.result.extras["r1_penalty"].item()
            assert _penalty_part(s) == pytest.approx(4 * 2.0 * value, rel=1e-4, abs=1e-7)
        else:
            assert "r1_penalty" not in s.result.extras and _penalty_part(s) == 0.0


def test_the_penalty_weight_follows_its_schedule(small_data):
    s = Stepping(tiny_seed(loss__r2__gamma=1.0, loss__penalty_end=0.1, train__iters=10), small_data)
    for _ in range(6):
        s.step()
    value = s.result.extras["r2_penalty"].item()  # the step done at step_count 5
    assert _penalty_part(s) == pytest.approx(0.55 * value, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("fast_step", [True, False])  # the dense kernel and the generic step
def test_the_learning_rates_follow_their_schedule(small_data, fast_step):
    cfg = tiny_seed(optim__lr_end=0.1, train__iters=10, train__fast_step=fast_step)
    s = Stepping(cfg, small_data)
    for step_count in range(11):
        g, d = s.trainer.opt_g, s.trainer.opt_d
        s.step()  # the step done at step_count: 1 at 0, 0.55 at 5, 0.1 from 10 on
        scale = 0.1 + 0.45 * (1 + math.cos(math.pi * step_count / 10))
        assert g.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr_g * scale)
        assert d.param_groups[0]["lr"] == pytest.approx(cfg.optim.lr_d * scale)


def test_a_relativistic_generator_step_pairs_its_fakes_with_a_real_batch(small_data):
    s = Stepping(tiny_seed(loss__objective="rpgan"), small_data)
    assert type(s.kernel) is Step  # the dense kernel does not declare pairs_real
    calls, batches = [], []
    s.D.register_forward_hook(lambda m, i, o: calls.append((i[0].shape[0], o.requires_grad)))
    take = s.batches.next
    s.trainer.batches.next = lambda **kw: batches.append(1) or take(**kw)
    s.step()
    # D step: real and fake in one pass; G step: the fakes, then a real batch without grad
    assert calls == [(32, True), (16, True), (16, False)] and len(batches) == 2
    assert s.stats()["G_loss"] > 0


def test_the_code_term_is_the_weighted_cross_entropy_and_the_code_is_learnt(small_data, one_thread):
    cfg = tiny_seed(model__z_dim=16, model__categories=4, loss__code_weight=0.5)
    s = Stepping(cfg, small_data)
    s.step()
    first = s.result.extras["code_loss"].item()
    assert first == pytest.approx(math.log(4), abs=0.3)  # at first D cannot tell the codes
    assert _penalty_part(s) == pytest.approx(0.5 * first, rel=1e-4)
    for _ in range(150):
        s.step()
    assert s.result.extras["code_loss"].item() < 0.5 * math.log(4)


def _one_recorded_step(s):
    """One step of ``s``: G's inputs (z, labels), D's labels and the real batches, in order."""
    g_inputs, d_labels, real = [], [], []
    s.G.register_forward_pre_hook(lambda m, args: g_inputs.append(args))
    s.D.register_forward_pre_hook(lambda m, args: d_labels.append(args[1]))
    take = s.batches.next
    s.trainer.batches.next = lambda **kw: real.append(take(**kw)) or real[-1]
    s.step()
    return g_inputs, d_labels, real


def test_with_clusters_d_judges_real_images_by_cluster_and_fakes_by_code(tiny, small_data):
    from digitgan.models.base import code_of

    cfg = tiny("cdcgan", model__conditional=False, model__categories=3, model__clusters=True)
    s = Stepping(cfg, small_data)
    clusters = s.batches.labels  # the training images' clusters, in place of their labels
    assert torch.bincount(clusters, minlength=3).min() >= 190  # 600 images, 3 equal clusters
    assert not torch.equal(clusters, torch.from_numpy(small_data.train.labels))
    g_inputs, d_labels, real = _one_recorded_step(s)
    # spectral norm: D's step scores real and fake apart; then G's step scores fresh fakes
    assert len(d_labels) == 3 and len(g_inputs) == 2
    assert torch.equal(d_labels[0], real[0][1])
    for (z, g_labels), judged in zip(g_inputs, d_labels[1:], strict=True):
        assert g_labels is None and torch.equal(judged, code_of(z, 3))


def test_with_clusters_within_classes_d_judges_class_and_category_together(tiny, small_data):
    from digitgan.models.base import code_of

    cfg = tiny("cdcgan", model__categories=3, model__clusters=True)  # 3 within each class
    s = Stepping(cfg, small_data)
    classes = torch.from_numpy(small_data.train.labels)
    assert torch.equal(s.batches.labels // 3, classes)  # class * 3 + cluster in its class
    g_inputs, d_labels, real = _one_recorded_step(s)
    assert torch.equal(d_labels[0], real[0][1])
    for (z, g_labels), judged in zip(g_inputs, d_labels[1:], strict=True):
        assert g_labels.max() < 10 and torch.equal(judged, g_labels * 3 + code_of(z, 3))
