"""The truncation trick: psi = 1 is plain sampling, psi = 0 the generator at the mean noise,
and in between the noise the generator sees is pulled toward the mean by psi."""

from contextlib import contextmanager

import numpy as np
import pytest
import torch

import digitgan
from digitgan.cli import main
from digitgan.errors import ConfigError
from digitgan.models import NOISE_MEAN, sample_noise, truncate_noise


@contextmanager
def seen_noise(sampler):
    """The noise batches the sampler's generator is called with, while the block runs."""
    seen = []
    handle = sampler.generator.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        yield seen
    finally:
        handle.remove()


@pytest.mark.parametrize("kind", ["uniform", "normal"])
def test_truncate_noise_pulls_toward_the_mean(kind):
    z = sample_noise(50, 8, kind, torch.Generator().manual_seed(1))
    assert NOISE_MEAN[kind] == 0.0
    assert truncate_noise(z, 1.0, kind) is z  # untouched, not a rounded copy
    assert torch.equal(truncate_noise(z, 0.0, kind), torch.zeros_like(z))
    for psi in (0.9, 0.5, 0.25):
        assert torch.allclose(truncate_noise(z.clone(), psi, kind), psi * z)
    half = truncate_noise(z.clone(), 0.5, kind)
    assert (half.norm(dim=1) < z.norm(dim=1)).all()
    if kind == "uniform":
        assert half.abs().max() <= 0.5  # inside the smaller cube
    with pytest.raises(ValueError, match="unknown noise kind"):
        truncate_noise(z, 0.5, "cauchy")


def test_truncation_1_is_plain_sampling_bit_for_bit(cond_run, tmp_path):
    gan = digitgan.load(cond_run)
    assert torch.equal(gan.generate(8, seed=3, truncation=1.0), gan.generate(8, seed=3))
    assert torch.equal(gan.generate(8, seed=3, truncation=1), gan.generate(8, seed=3))
    assert np.array_equal(gan.sample(5, 2, 4, truncation=1.0), gan.sample(5, 2, 4))
    assert torch.equal(gan.class_grid(2, 1, truncation=1.0), gan.class_grid(2, 1))
    assert torch.equal(gan.interpolate(1, 2, 4, truncation=1.0), gan.interpolate(1, 2, 4))
    a = gan.save_samples(tmp_path / "a.npy", 6, 7, truncation=1.0)
    b = gan.save_samples(tmp_path / "b.npy", 6, 7)
    assert np.array_equal(np.load(a), np.load(b))


def test_truncation_0_draws_the_generator_at_the_mean_noise(cond_run):
    gan = digitgan.load(cond_run)
    labels = [3] * 6
    mean = gan.decode(torch.zeros(1, gan.config.model.z_dim), [3])
    at0 = gan.generate(6, seed=5, labels=labels, truncation=0.0)
    assert torch.allclose(at0, mean.expand_as(at0), atol=1e-6)
    assert not torch.allclose(gan.generate(6, seed=5, labels=labels), mean.expand_as(at0))
    walk = gan.interpolate(1, 2, 5, label=3, truncation=0)
    assert torch.allclose(walk, mean.expand_as(walk), atol=1e-6)
    grid = gan.class_grid(3, seed=2, truncation=0)  # a row per class, every column the same
    assert torch.allclose(grid.view(10, 3, *grid.shape[1:]), grid[::3].unsqueeze(1), atol=1e-6)


def test_in_between_the_generator_sees_noise_scaled_toward_the_mean(cond_run):
    gan = digitgan.load(cond_run)
    z = gan.noise(4, seed=9)
    with seen_noise(gan) as seen:
        images = gan.generate(4, seed=9, truncation=0.7)
    assert torch.allclose(seen[0], 0.7 * z)
    assert torch.equal(images, gan.decode(0.7 * z))
    with seen_noise(gan) as seen:
        gan.interpolate(4, 6, 5, truncation=0.5)
    plain = gan.interpolate(4, 6, 5)
    assert seen[0].shape == (5, z.shape[1])
    assert not torch.equal(gan.interpolate(4, 6, 5, truncation=0.5), plain)
    za, zb = gan.noise(1, 4)[0], gan.noise(1, 6)[0]
    assert torch.allclose(seen[0][0], 0.5 * za) and torch.allclose(seen[0][-1], 0.5 * zb)


@pytest.mark.parametrize(
    "bad", [-0.1, 1.5, float("nan"), float("inf"), 10**400, "0.5", True, None, [0.5]]
)
def test_bad_truncations_are_refused_in_one_line_before_any_work(cond_run, tmp_path, bad):
    gan = digitgan.load(cond_run)
    with seen_noise(gan) as seen:
        for draw in (
            lambda: gan.generate(2, truncation=bad),
            lambda: gan.sample(2, truncation=bad),
            lambda: gan.class_grid(2, truncation=bad),
            lambda: gan.interpolate(0, 1, 3, truncation=bad),
            lambda: gan.decode(torch.zeros(2, gan.config.model.z_dim), truncation=bad),
            lambda: gan.save_samples(tmp_path / "x.png", 4, truncation=bad),
        ):
            with pytest.raises(
                ConfigError, match=r"^--truncation .*: expected a number from 0"
            ) as e:
                draw()
            assert "\n" not in str(e.value)
    assert seen == [] and not (tmp_path / "x.png").exists()


def test_sample_command_draws_truncated_samples_grids_and_walks(cond_run, tmp_path, capsys):
    gan = digitgan.load(cond_run)
    npy = tmp_path / "s.npy"
    assert (
        main(
            [
                "sample",
                str(cond_run),
                "--n",
                "6",
                "--seed",
                "2",
                "--truncation",
                "0.5",
                "--out",
                str(npy),
            ]
        )
        == 0
    )
    assert "wrote 6 samples (truncation 0.5) to" in capsys.readouterr().out
    assert np.array_equal(np.load(npy), gan.sample(6, 2, truncation=0.5)[:, 0])
    assert not np.array_equal(np.load(npy), gan.sample(6, 2)[:, 0])
    for mode in (["--class-grid"], ["--walk", "4"]):
        png = tmp_path / f"{mode[0]}.png"
        argv = ["sample", str(cond_run), "--n", "3", *mode, "--truncation", "0", "--out", str(png)]
        assert main(argv) == 0 and png.stat().st_size > 0
