"""A trained generator as a Sampler: reproducible draws, classes, walks, files and limits."""

import numpy as np
import pytest
import torch

import digitgan
from digitgan.errors import ConfigError
from digitgan.sampling import MAX_GRID_IMAGES


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


def test_numpy_and_torch_integers_serve_as_labels_and_seeds(cond_run):
    """What a loop over ``np.arange`` or a tensor of classes hands the sampler."""
    gan = digitgan.load(cond_run)
    sevens = gan.generate(4, seed=2, labels=7)
    for seven in (np.int64(7), torch.tensor(7), np.full(4, 7), torch.full((4,), 7)):
        assert torch.equal(gan.generate(4, seed=np.int64(2), labels=seven), sevens)
    for bad in (7.0, [7.0, 7, 7, 7], [7, None, 7, 7], True, "7"):
        with pytest.raises(ConfigError, match="--label: expected an integer or one per sample"):
            gan.generate(4, labels=bad)
    with pytest.raises(ConfigError, match="--label: 1 labels for 4 samples"):
        gan.generate(4, labels=[7])  # a list gives one label per sample
    for bad in (True, 2.0, "2", -1):
        with pytest.raises(ConfigError, match="a seed is an integer in 0..2\\^63-1"):
            gan.generate(4, seed=bad)


def test_draws_are_reproducible_and_prefixes_of_larger_draws(cond_run):
    sampler = digitgan.load(cond_run)
    assert torch.equal(sampler.generate(6, seed=4), sampler.generate(6, seed=4))
    # the same noise (z's 69 entries: not whole blocks of torch's normal_); a convolution's
    # rounding may differ with the batch size
    assert torch.equal(sampler.noise(1, seed=4), sampler.noise(6, seed=4)[:1])
    assert torch.allclose(sampler.generate(3, seed=4), sampler.generate(6, seed=4)[:3], atol=1e-6)
    assert not torch.equal(sampler.generate(3, seed=4), sampler.generate(3, seed=5))


def test_npy_files_hold_uint8_images_as_the_docs_say(cond_run, tmp_path):
    sampler = digitgan.load(cond_run)
    path = sampler.save_samples(tmp_path / "s.npy", 7, seed=1)
    arr = np.load(path)
    assert arr.shape == (7, 28, 28) and arr.dtype == np.uint8
    assert np.array_equal(arr, sampler.sample(7, seed=1)[:, 0])


def test_draws_beyond_the_limits_are_refused_before_any_work(cond_run, tmp_path):
    sampler = digitgan.load(cond_run)
    with pytest.raises(ConfigError, match=r"--n 20000: draw 0 to 10,000 images of 1x28x28"):
        sampler.save_samples(tmp_path / "big.png", 20_000)
    assert not (tmp_path / "big.png").exists()
    with pytest.raises(ConfigError, match="at a time"):
        sampler.generate(sampler.max_draw() + 1)
    with pytest.raises(ConfigError, match="a class grid needs at least one per class"):
        sampler.class_grid(per_class=0)
    with pytest.raises(ConfigError, match="draw 0 to 1,000 images"):
        sampler.class_grid(per_class=MAX_GRID_IMAGES // 10 + 1)
    with pytest.raises(ConfigError, match=r"--seed -1: a seed is an integer in 0..2\^63-1"):
        sampler.generate(2, seed=-1)
