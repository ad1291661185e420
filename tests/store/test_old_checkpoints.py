"""Checkpoints written by digitgan 0.1.0, before per-architecture and per-penalty config
tables: they load, sample, evaluate their config under the new keys, and resume exactly.

The files in data/ were written by digitgan 0.1.0 (a tiny seed model with EMA after 4
iterations; a tiny WGAN-GP after 2) on the first 600 training digits of mnist20k."""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import digitgan
from digitgan.config import preset

DATA = Path(__file__).with_name("data")

CONTINUED_SEED = DATA / "seed-0.1.0-continued-weights.safetensors"
"""The weights (G, D and EMA) that digitgan 0.1.0 reached resuming seed-0.1.0 for 2 more
iterations (2 threads, the machine that wrote the files)."""


@pytest.fixture
def old_run(tmp_path):
    """A run directory around an old checkpoint, as digitgan 0.1.0 left it."""

    def make(name: str) -> Path:
        run = tmp_path / name
        (run / "checkpoints").mkdir(parents=True)
        shutil.copy(DATA / f"{name}.safetensors", run / "checkpoints" / "latest.safetensors")
        sampler = digitgan.load(run)
        (run / "config.toml").write_text(sampler.config.to_toml())
        return run

    return make


def test_old_flat_keys_are_read_into_the_tables(old_run):
    seed = digitgan.load(old_run("seed-0.1.0"))
    assert seed.ema and seed.config.model.mlp.g_hidden == [8]
    assert seed.config.model.mlp.d_hidden == [8]
    wgan = digitgan.load(old_run("wgan-gp-0.1.0")).config
    assert wgan.model.dcgan.g_channels == 2 and wgan.model.dcgan.d_channels == 2
    assert wgan.model.dcgan.d_norm == "none" and wgan.loss.penalties() == [("gp", 10.0)]
    assert "g_hidden" not in wgan.to_dict()["model"]  # written back with the new keys only
    assert wgan.to_dict()["model"]["dcgan"] == {"g_channels": 2, "d_channels": 2, "d_norm": "none"}


@pytest.mark.parametrize("name", ["seed-0.1.0", "wgan-gp-0.1.0"])
def test_old_checkpoints_sample(old_run, name):
    images = digitgan.load(old_run(name)).generate(5, seed=3)
    assert images.shape == (5, 1, 28, 28) and 0 <= images.min() and images.max() <= 1


def test_an_old_seed_run_resumes_as_digitgan_0_1_0_did(old_run, small_data):
    """To float rounding: the same code gives the same bits only on the same kind of CPU
    and thread count (on the machine that wrote the file, they were the same bits)."""
    run = old_run("seed-0.1.0")
    result = digitgan.resume(run, iters=6, dataset=small_data, progress=False)
    assert result.step == 6
    got, want = load_file(run / "checkpoints" / "latest.safetensors"), load_file(CONTINUED_SEED)
    for key, value in want.items():
        assert torch.allclose(got[key], value, rtol=1e-4, atol=1e-6), key
    moved = load_file(DATA / "seed-0.1.0.safetensors")["G.body.fc1.weight"]
    assert not torch.allclose(got["G.body.fc1.weight"], moved, atol=1e-6)  # it did train


def test_an_old_wgan_gp_run_resumes(old_run, small_data):
    run = old_run("wgan-gp-0.1.0")
    result = digitgan.resume(run, iters=4, dataset=small_data, progress=False)
    assert result.step == 4
    resumed = load_file(run / "checkpoints" / "latest.safetensors")
    old = load_file(DATA / "wgan-gp-0.1.0.safetensors")
    moved = [k for k in old if k.startswith("G.") and not (old[k] == resumed[k]).all()]
    assert moved and all(resumed[k].isfinite().all() for k in moved)  # it trained on


def test_old_keys_are_accepted_by_set_and_files():
    cfg = digitgan.build_config("seed", sets=["model.g_hidden=[16, 8]", "loss.r1_gamma=1"])
    assert cfg.model.mlp.g_hidden == [16, 8] and cfg.loss.r1.gamma == 1.0
    assert cfg == preset("seed").replace(model__mlp__g_hidden=[16, 8], loss__r1__gamma=1.0)
