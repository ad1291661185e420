"""Architectures, conditioning, spectral norm, and a smoke run of every preset."""

import numpy as np
import pytest
import torch

import digitgan
from digitgan.config import PRESETS, preset
from digitgan.data import StackedOptions, load_stacked
from digitgan.errors import ConfigError
from digitgan.models import build_models
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
    data = small_data
    if cfg.model.code_parts > 1:  # a part per channel: stacked digits
        data = load_stacked("mnist20k", None, StackedOptions(train_size=300, test_size=2))
    result = digitgan.train(cfg, tmp_path / name, dataset=data, progress=False)
    assert result.step == 2 and all(np.isfinite(v) for v in result.stats.values())
    gan = digitgan.load(tmp_path / name)
    assert gan.ema == (cfg.train.ema_decay > 0)
    images = gan.generate(5, seed=1)
    shape = (5, data.image_shape[0], 28, 28)
    assert images.shape == shape and 0 <= images.min() and images.max() <= 1


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_the_categorical_code_is_the_argmax_of_the_last_entries(arch):
    cfg = _model_cfg(model__arch=arch, model__categories=3)
    G, D = build_models(cfg, (1, 28, 28))
    G.eval()
    z = torch.randn(4, cfg.z_dim)
    z[:, -3:] = torch.tensor([[5.0, 0, 0], [0, 5, 0], [0, 0, 5], [0, 0, 5]])
    # G sees the category one-hot in place of the last three entries
    seen = torch.cat([z[:, :-3], torch.eye(3)[[0, 1, 2, 2]]], 1)
    torch.testing.assert_close(G(z), G.body(seen).view(4, 1, 28, 28))
    # only the argmax counts: scaling the noise (the truncation trick) keeps every category
    wobble = z.clone()
    wobble[:, -3:] *= 0.1
    torch.testing.assert_close(G(wobble), G(z))
    logits, codes = D(G(z), codes=True)
    assert logits.shape == (4,) and codes.shape == (4, 3)
    torch.testing.assert_close(D(G(z)), logits)


def test_a_self_conditioned_d_judges_each_image_as_the_category_it_guesses():
    cfg = _model_cfg(model__categories=3, model__self_condition=True)
    _, D = build_models(cfg, (1, 28, 28))
    x = torch.randn(5, 1, 28, 28)
    logits, guesses = D(x, codes=True)
    h = D.features(x)
    want = D.head(h).squeeze(1) + (D.embed(guesses.argmax(1)) * h).sum(1)
    torch.testing.assert_close(logits, want)
    _, plain = build_models(_model_cfg(model__categories=3), (1, 28, 28))
    assert plain.embed is None


def test_with_clusters_d_judges_each_image_as_the_category_it_is_given():
    cfg = _model_cfg(model__categories=3, model__clusters=True)
    G, D = build_models(cfg, (1, 28, 28))
    assert G.num_classes == 0 and G.categories == 3  # G reads its category from z alone
    assert D.num_classes == 3 and D.code_head is None
    x, y = torch.randn(5, 1, 28, 28), torch.tensor([2, 0, 1, 1, 0])
    h = D.features(x)
    want = D.head(h).squeeze(1) + (D.embed(y) * h).sum(1)
    torch.testing.assert_close(D(x, y), want)
    with pytest.raises(ValueError, match="give a label in 0..2"):
        D(x)


def test_with_clusters_within_classes_d_judges_each_class_and_category_pair():
    cfg = _model_cfg(model__conditional=True, model__categories=3, model__clusters=True)
    G, D = build_models(cfg, (1, 28, 28), num_classes=4)
    assert G.num_classes == 4 and G.categories == 3  # G reads the label and the code
    assert D.num_classes == 12 and D.code_head is None  # label * 3 + category
    x, y = torch.randn(5, 1, 28, 28), torch.tensor([11, 0, 5, 6, 3])
    h = D.features(x)
    want = D.head(h).squeeze(1) + (D.embed(y) * h).sum(1)
    torch.testing.assert_close(D(x, y), want)
    assert G(torch.randn(5, cfg.z_dim), y % 4).shape == (5, 1, 28, 28)


def test_a_code_in_parts_is_read_block_by_block_and_projected_as_a_sum():
    """Stacked MNIST's 1,000 modes as 3 parts of 10 (here 8 = 2^3): G sees a one-hot per
    block of z's last entries; D embeds a category as the sum of its parts' rows."""
    from digitgan.models.base import category_parts, code_of

    cfg = _model_cfg(model__z_dim=9, model__categories=8, model__clusters=True, model__code_parts=3)
    G, D = build_models(cfg, (3, 28, 28))
    G.eval()
    assert G.categories == 8 and G.code_parts == 3 and D.num_classes == 8
    assert D.embed.num_embeddings == 6  # 3 parts x 2 values, not 8 categories
    z = torch.randn(2, 9)
    z[:, 3:] = torch.tensor([[5.0, 0, 0, 5, 5, 0], [0, 5, 5, 0, 0, 5]])  # parts 0,1,0 and 1,0,1
    assert code_of(z, 8, 3).tolist() == [0b010, 0b101]
    assert category_parts(torch.tensor([0b010, 0b101]), 8, 3).tolist() == [[0, 1, 0], [1, 0, 1]]
    seen = torch.cat([z[:, :3], torch.tensor([[1.0, 0, 0, 1, 1, 0], [0, 1, 1, 0, 0, 1]])], 1)
    torch.testing.assert_close(G(z), G.body(seen).view(2, 3, 28, 28))
    x, y = torch.randn(2, 3, 28, 28), torch.tensor([0b010, 0b101])
    rows = D.embed.weight  # (under spectral norm: the normalised table)
    h = D.features(x)
    projected = torch.stack([rows[0] + rows[3] + rows[4], rows[1] + rows[2] + rows[5]])
    torch.testing.assert_close(D(x, y), D.head(h).squeeze(1) + (projected * h).sum(1))


def test_noise_draws_every_category_equally_often():
    from digitgan.models import sample_noise
    from digitgan.models.base import code_of

    for kind in ("normal", "uniform"):
        z = sample_noise(60_000, 12, kind, torch.Generator().manual_seed(0))
        shares = torch.bincount(code_of(z, 10), minlength=10) / 60_000
        assert shares.min() > 0.09 and shares.max() < 0.11
        # a code in 2 parts of 3: 9 categories, each part's block drawn independently
        shares = torch.bincount(code_of(z, 9, 2), minlength=9) / 60_000
        assert shares.min() > 0.1 and shares.max() < 0.122


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model__categories": 1}, "2 or more"),
        ({"model__categories": 6}, "fewer than model.z_dim"),
        ({"model__categories": 3, "model__conditional": True}, "only as clusters within"),
        (
            {"model__categories": 3, "model__conditional": True, "model__clusters": True}
            | {"model__cond_d": "concat"},
            "concat cannot judge clusters within classes",
        ),
        ({"model__self_condition": True}, "needs model.categories"),
        ({"model__clusters": True}, "needs model.categories"),
        ({"model__categories": 3, "model__clusters": True, "model__self_condition": True}, "one"),
        ({"model__categories": 3, "model__clusters": True, "loss__cluster_weight": 1.0}, "one"),
        ({"loss__cluster_weight": 1.0}, "needs model.categories"),
        ({"model__categories": 4, "model__code_parts": 2}, "needs model.clusters and an unc"),
        (
            {"model__categories": 4, "model__code_parts": 2, "model__clusters": True}
            | {"model__conditional": True},
            "needs model.clusters and an unconditional",
        ),
        ({"model__categories": 5, "model__code_parts": 2, "model__clusters": True}, r"k\^2 for"),
        ({"model__categories": 9, "model__code_parts": 2, "model__clusters": True}, "6 entries"),
        ({"model__categories": 3, "loss__cluster_views": ["affine"]}, "needs loss.cluster_w"),
        ({"model__categories": 3, "loss__cluster_views": ["spin"]}, "'spin' is not one of"),
    ],
)
def test_impossible_categories_are_refused(change, message):
    model = "categories|code_parts|self_condition|clusters|cond_d"
    keys = f"model.({model})|loss.cluster_(weight|views)"
    with pytest.raises(ConfigError, match=f"({keys}): .*{message}"):
        preset("seed").replace(model__z_dim=6, **change)
