"""What the server draws and reads: noise interpolation, latent walks, decode, eval.json."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from digitgan.errors import ConfigError
from digitgan.models import interpolate_noise, sample_noise
from digitgan.sampling import Sampler
from digitgan.serve.model import read_evaluation, walk


def test_uniform_noise_is_walked_in_a_straight_line():
    gen = torch.Generator().manual_seed(0)
    a, b = sample_noise(2, 50, "uniform", gen)
    z = interpolate_noise(a, b, 5, "uniform")
    assert z.shape == (5, 50)
    assert torch.equal(z[0], a) and torch.equal(z[-1], b)
    assert torch.allclose(z[2], (a + b) / 2)
    assert z.abs().max() <= 1  # stays inside the cube the generator was trained on


def test_normal_noise_is_walked_by_slerp():
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    z = interpolate_noise(a, b, 3, "normal")
    assert torch.allclose(z[0], a) and torch.allclose(z[-1], b)
    assert torch.allclose(z[1], torch.tensor([0.5**0.5, 0.5**0.5, 0.0]))  # on the circle
    gen = torch.Generator().manual_seed(0)
    a, b = sample_noise(2, 100, "normal", gen)
    norms = interpolate_noise(a, b, 9, "normal").norm(dim=1)
    lerp = interpolate_noise(a, b, 9, "uniform").norm(dim=1)
    # a straight line through high-dimensional normal noise shrinks towards the middle ...
    assert lerp[4] < 0.8 * min(a.norm(), b.norm())
    # ... slerp keeps the length of typical noise vectors
    assert norms.min() > 0.95 * min(a.norm(), b.norm())


def test_slerp_of_parallel_vectors_falls_back_to_the_line():
    a = torch.tensor([1.0, 2.0])
    z = interpolate_noise(a, 3 * a, 3, "normal")
    assert torch.isfinite(z).all() and torch.allclose(z[1], 2 * a)
    with pytest.raises(ValueError, match="unknown noise kind"):
        interpolate_noise(a, a, 3, "cauchy")


class Recording(Sampler):
    """A Sampler that keeps the noise vectors it was asked to decode."""

    def decode(self, z, labels=None, batch_size=1000, truncation=1.0):
        self.seen = z
        return super().decode(z, labels, batch_size, truncation)


@pytest.mark.parametrize("kind", ["uniform", "normal"])
def test_walk_follows_the_models_noise_distribution(gan, kind):
    cfg = gan.config.replace(model__noise=kind)
    rec = Recording(gan.generator, cfg, gan.meta, gan.path)
    frames = walk(rec, 3, 8, 6)
    assert frames.shape == (6, 1, 28, 28)
    want = interpolate_noise(rec.noise(1, 3)[0], rec.noise(1, 8)[0], 6, kind)
    assert torch.equal(rec.seen, want)
    assert torch.allclose(frames, gan.decode(want), atol=1e-6)


def test_decode_is_generate_for_given_noise(gan):
    z = gan.noise(7, seed=11)
    assert torch.equal(gan.decode(z), gan.generate(7, seed=11))
    assert torch.allclose(gan.decode(z, batch_size=3), gan.decode(z), atol=1e-6)
    assert gan.decode(z[:0]).shape == (0, 1, 28, 28)
    with pytest.raises(ConfigError, match="this model is unconditional"):
        gan.decode(z, labels=torch.zeros(7, dtype=torch.long))


# --- eval.json -----------------------------------------------------------------------------


def test_evaluation_is_read_from_the_run_directory(tmp_path):
    ckpt = tmp_path / "checkpoints" / "step-0000100.safetensors"
    assert read_evaluation(ckpt) == (None, None)  # no file: nothing to show
    (tmp_path / "eval.json").write_text(json.dumps({"metrics": {"fid": 12.5, "is": None}}))
    assert read_evaluation(ckpt) == ({"fid": 12.5, "is": None}, None)  # the floor is optional
    loose = tmp_path / "elsewhere" / "model.safetensors"  # a checkpoint outside a run: its folder
    loose.parent.mkdir()
    (loose.parent / "eval.json").write_text(
        json.dumps({"metrics": {"fid": 3}, "floor": {"fid": 0.5}})
    )
    assert read_evaluation(loose) == ({"fid": 3}, {"fid": 0.5})


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[1, 2]",
        '{"fid": 12.5}',
        '{"metrics": {"fid": "good"}}',
        '{"metrics": {"fid": NaN}}',
        '{"metrics": {"fid": true}}',
    ],
)
def test_a_malformed_eval_json_is_logged_and_ignored(tmp_path, caplog, text):
    (tmp_path / "eval.json").write_text(text)
    with caplog.at_level(logging.WARNING, logger="digitgan.serve"):
        assert read_evaluation(tmp_path / "checkpoints" / "latest.safetensors") == (None, None)
    assert "eval.json" in caplog.text


def test_evaluate_save_is_what_the_page_shows(tiny_run, tmp_path, capsys):
    import shutil

    from digitgan.cli import main
    from digitgan.store.checkpoint import resolve_checkpoint

    run = shutil.copytree(tiny_run, tmp_path / "run")  # the shared run must stay unscored
    assert main(["evaluate", str(run), "--n", "200", "--save"]) == 0
    assert "wrote" in capsys.readouterr().out
    metrics, floor = read_evaluation(resolve_checkpoint(run))
    assert set(metrics) == set(floor) and "fid" in metrics and "precision" in metrics
    assert floor["fid"] < metrics["fid"]  # real digits beat a 3-iteration model
    assert main(["evaluate", "--real", "--n", "200", "--save"]) == 2  # nothing to save it to
