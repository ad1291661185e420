"""Architectures, conditioning, spectral norm, EMA and a smoke run of every preset."""

import numpy as np
import pytest
import torch

import digitgan
from digitgan.config import PRESETS, preset
from digitgan.errors import ConfigError
from digitgan.models import build_models
from digitgan.training.ema import EMA
from digitgan.training.trainer import Trainer


def _model_cfg(**kw):
    base = dict(
        model__arch="dcgan", model__dcgan__g_channels=8, model__dcgan__d_channels=8, model__z_dim=6
    )
    return preset("seed").replace(**{**base, **kw}).model


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
@pytest.mark.parametrize("cond_d", ["projection", "concat"])
def test_conditional_models_shapes_for_every_label(arch, cond_d):
    cfg = _model_cfg(model__arch=arch, model__conditional=True, model__cond_d=cond_d)
    G, D = build_models(cfg, (1, 28, 28), num_classes=10)
    labels = torch.arange(10)
    x = G(torch.randn(10, cfg.z_dim), labels)
    assert x.shape == (10, 1, 28, 28)
    assert D(x, labels).shape == (10,)
    # the label changes the output: same noise, different class
    z = torch.randn(1, cfg.z_dim).repeat(2, 1)
    assert not torch.allclose(*G(z, torch.tensor([3, 4])))
    with pytest.raises(ValueError, match="conditional"):
        G(torch.randn(2, cfg.z_dim))


def test_image_shape_comes_from_the_dataset():
    G, D = build_models(_model_cfg(), (3, 32, 24))
    x = G(torch.randn(4, 6))
    assert x.shape == (4, 3, 32, 24) and D(x).shape == (4,)
    with pytest.raises(ConfigError, match="divisible by 4"):
        build_models(_model_cfg(), (1, 30, 30))


def test_spectral_norm_makes_each_layer_norm_one():
    _, D = build_models(_model_cfg(model__spectral_norm=True), (1, 28, 28))
    x = torch.rand(16, 1, 28, 28)
    for _ in range(30):  # power iterations run in training-mode forward passes
        D(x)
    D.eval()
    layers = [m for m in D.modules() if hasattr(m, "parametrizations")]
    assert len(layers) == 3  # two convolutions and the head
    for m in layers:
        w = m.weight.detach().flatten(1)  # SN normalises the (out, in * k * k) matrix
        assert torch.linalg.matrix_norm(w, ord=2).item() == pytest.approx(1.0, abs=0.02)


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


def test_bad_combinations_are_refused(small_data):
    with pytest.raises(ConfigError, match="loss.label_smoothing"):
        preset("wgan-gp").replace(loss__label_smoothing=0.1)
    with pytest.raises(ConfigError, match="loss.gp: the penalty is per sample, but this discr"):
        Trainer(preset("wgan-gp").replace(model__dcgan__d_norm="batch"), small_data)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_trains_a_few_iterations(name, tmp_path, small_data):
    cfg = preset(name).replace(
        train__iters=2,
        data__batch_size=8,
        model__dcgan__g_channels=8,
        model__dcgan__d_channels=8,
        model__mlp__g_hidden=[16],
        model__mlp__d_hidden=[16],
        train__device="cpu",
        log__sample_every=1,
        log__tb_every=1,
        log__ckpt_every=1,
    )
    result = digitgan.train(cfg, tmp_path / name, dataset=small_data, progress=False)
    assert result.step == 2 and all(np.isfinite(v) for v in result.stats.values())
    gan = digitgan.load(tmp_path / name)
    assert gan.ema == (cfg.train.ema_decay > 0)
    images = gan.generate(5, seed=1)
    assert images.shape == (5, 1, 28, 28) and 0 <= images.min() and images.max() <= 1


def test_conditional_sampling_api(cond_run):
    gan = digitgan.load(cond_run)
    assert gan.num_classes == 10 and gan.class_names[7] == "7"
    sevens = gan.generate(4, seed=2, labels=7)
    assert not torch.allclose(sevens, gan.generate(4, seed=2, labels=1))
    assert torch.allclose(sevens[1], gan.generate(4, seed=2, labels=[0, 7, 0, 0])[1])
    grid = gan.class_grid(per_class=3, seed=0)
    assert grid.shape == (30, 1, 28, 28)
    assert torch.allclose(grid[21], gan.generate(3, seed=0, labels=7)[0])  # row 7, column 0
    for bad in (10, -1):
        with pytest.raises(ConfigError, match=f"label {bad} is out of range 0..9"):
            gan.generate(2, labels=bad)
    walk = gan.interpolate(3, 9, steps=5, label=2)
    assert walk.shape == (5, 1, 28, 28)
    assert torch.allclose(walk[0], gan.generate(1, seed=3, labels=2)[0], atol=1e-5)
    assert torch.allclose(walk[-1], gan.generate(1, seed=9, labels=2)[0], atol=1e-5)
