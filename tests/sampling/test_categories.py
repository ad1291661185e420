"""Drawing a chosen learnt category (``model.categories``): the noise is made to pick it, with
the distribution of noise that picks it, in samples, grids, walks and the command line."""

import numpy as np
import pytest
import torch

import digitgan
from digitgan.cli import main
from digitgan.errors import ConfigError
from digitgan.models import interpolate_noise, sample_noise
from digitgan.models.base import category_parts, code_of, with_code


@pytest.fixture(scope="module")
def coded_run(tmp_path_factory, small_data, tiny):
    """A few iterations of hinge-sn with 3 learnt categories."""
    out = tmp_path_factory.mktemp("coded") / "run"
    cfg = tiny("hinge-sn", model__categories=3, log__tb_every=0, log__sample_every=0)
    digitgan.train(cfg, out, dataset=small_data, progress=False)
    return out


@pytest.mark.parametrize("kind", ["uniform", "normal"])
def test_with_code_swaps_the_largest_code_entry_into_place(kind):
    z = sample_noise(500, 10, kind, torch.Generator().manual_seed(0))
    for c in range(4):
        made = with_code(z, 4, c)
        assert (code_of(made, 4) == c).all()
        assert torch.equal(made[:, :6], z[:, :6])  # the rest of the noise is untouched
        # each row's code is its own entries, two of them swapped; rows picking c unchanged
        assert torch.equal(made[:, 6:].sort(1).values, z[:, 6:].sort(1).values)
        assert ((made != z).sum(1) <= 2).all()
        already = code_of(z, 4) == c
        assert torch.equal(made[already], z[already])
    assert code_of(z, 4).unique().numel() == 4  # (z itself is left as it was)


def test_with_code_in_parts_swaps_within_each_parts_block():
    z = sample_noise(300, 9, "normal", torch.Generator().manual_seed(0))
    for c in range(8):  # 3 parts of 2 in the last 6 entries
        made = with_code(z, 8, c, parts=3)
        assert (code_of(made, 8, parts=3) == c).all()
        assert torch.equal(made[:, :3], z[:, :3])
        for block in (slice(3, 5), slice(5, 7), slice(7, 9)):  # swaps stay in their block
            assert torch.equal(made[:, block].sort(1).values, z[:, block].sort(1).values)


def test_a_code_in_parts_is_chosen_part_by_part():
    """Of 8 categories in 3 parts of 2, [1, None, 0] fixes the first and last parts' blocks and
    leaves the middle one, and the category it picks, to the noise."""
    z = sample_noise(300, 9, "normal", torch.Generator().manual_seed(0))
    made = with_code(z, 8, [1, None, 0], parts=3)
    parts, before = (category_parts(code_of(x, 8, parts=3), 8, 3) for x in (made, z))
    assert (parts[:, 0] == 1).all() and (parts[:, 2] == 0).all()
    assert torch.equal(made[:, 5:7], z[:, 5:7]) and torch.equal(parts[:, 1], before[:, 1])
    assert set(parts[:, 1].tolist()) == {0, 1}
    assert torch.equal(with_code(z, 8, (1, 1, 0), parts=3), with_code(z, 8, 6, parts=3))
    assert torch.equal(with_code(z, 8, [np.int64(1), None, 0], parts=3), made)  # numpy's ints
    assert torch.equal(with_code(z, 8, np.int64(6), parts=3), with_code(z, 8, 6, parts=3))
    assert torch.equal(with_code(z, 8, ["any", None, "any"], parts=3), z)
    expected = r"expected an integer from 0 to 7 or 3 values \(one per part, each 0 to 1 or any\)"
    bad_parts = ([1, 2, 0], [1, 0], [1, 0, 0, 0], [True, 0, 0], [1.0, 0, 0], [np.ones(2), 0, 0])
    for bad in (*bad_parts, 8, "1,0,0"):
        with pytest.raises(ValueError, match=expected):
            with_code(z, 8, bad, parts=3)
    with pytest.raises(ValueError, match="expected an integer from 0 to 3$"):
        with_code(z[:, :5], 4, [1])  # a code in one part is chosen whole


def test_with_code_draws_noise_as_distributed_given_its_category():
    z = sample_noise(200_000, 5, "normal", torch.Generator().manual_seed(1))
    picked = z[code_of(z, 3) == 1]  # noise that picks category 1 by chance
    made = with_code(z, 3, 1)
    # the mean of the largest of 3 standard normals is 3 / (2 sqrt(pi)) = 0.846
    assert made[:, 3].mean().item() == pytest.approx(0.846, abs=0.01)
    for column in range(5):
        for stat in (torch.mean, torch.std):
            a, b = stat(made[:, column]).item(), stat(picked[:, column]).item()
            assert a == pytest.approx(b, abs=0.015), (column, stat)


@pytest.mark.parametrize("kind", ["uniform", "normal"])
def test_a_walk_between_two_ends_of_a_category_stays_in_it(kind):
    ends = with_code(sample_noise(40, 6, kind, torch.Generator().manual_seed(2)), 3, 2)
    for a, b in zip(ends[::2], ends[1::2], strict=True):
        assert (code_of(interpolate_noise(a, b, 9, kind), 3) == 2).all()


def test_the_sampler_draws_a_chosen_category(coded_run):
    gan = digitgan.load(coded_run)
    assert gan.categories == 3 and gan.num_classes == 0
    z = gan.noise(6, seed=4, category=1)
    assert (code_of(z, 3) == 1).all() and torch.equal(z, with_code(gan.noise(6, seed=4), 3, 1))
    ones = gan.generate(6, seed=4, category=1)
    assert torch.equal(ones, gan.decode(z))
    assert not torch.equal(ones, gan.generate(6, seed=4, category=2))
    assert np.array_equal(gan.sample(6, 4, category=1), gan.sample(6, 4, category=1))
    # class grid: row k draws category k, each column from one noise vector
    grid = gan.class_grid(per_class=2, seed=5)
    assert grid.shape == (6, 1, 28, 28)
    assert torch.allclose(grid[4], gan.generate(2, seed=5, category=2)[0], atol=1e-6)
    walk = gan.interpolate(3, 9, steps=4, category=0)
    assert torch.allclose(walk[0], gan.generate(1, seed=3, category=0)[0], atol=1e-5)
    assert torch.allclose(walk[-1], gan.generate(1, seed=9, category=0)[0], atol=1e-5)


def test_bad_categories_are_refused_by_name(coded_run, small_data, tiny, tmp_path):
    gan = digitgan.load(coded_run)
    for bad in (3, -1):
        with pytest.raises(ConfigError, match=f"--category {bad}: this model has 3 categories"):
            gan.generate(2, category=bad)
    for bad in (True, [1]):  # (a category in one piece is not given part by part)
        with pytest.raises(ConfigError, match="expected an integer from 0 to 2$"):
            gan.generate(2, category=bad)
    plain = tmp_path / "plain"  # hinge-sn without categories
    cfg = tiny("hinge-sn", train__iters=1, log__tb_every=0, log__sample_every=0)
    digitgan.train(cfg, plain, dataset=small_data, progress=False)
    with pytest.raises(ConfigError, match="--category: this model learnt no categories"):
        digitgan.load(plain).save_samples(tmp_path / "s.npy", 2, category=0)
    assert not (tmp_path / "s.npy").exists()


def test_sample_command_draws_a_category(coded_run, tmp_path, capsys):
    gan = digitgan.load(coded_run)
    npy = tmp_path / "c.npy"
    argv = ["sample", str(coded_run), "--n", "5", "--seed", "2", "--category", "2"]
    assert main([*argv, "--out", str(npy)]) == 0
    assert "wrote 5 samples of category 2 to" in capsys.readouterr().out
    assert np.array_equal(np.load(npy), gan.sample(5, 2, category=2)[:, 0])
    grid = tmp_path / "grid.png"
    assert main(["sample", str(coded_run), "--n", "2", "--class-grid", "--out", str(grid)]) == 0
    assert "wrote 3 categories x 2 samples to" in capsys.readouterr().out
    assert main([*argv, "--class-grid", "--out", str(tmp_path / "g.png")]) == 2
    assert "--category: not with --class-grid" in capsys.readouterr().err
    assert main([*argv[:-1], "7", "--out", str(tmp_path / "bad.npy")]) == 2
    err = capsys.readouterr().err
    assert "--category 7: this model has 3 categories: expected an integer from 0 to 2" in err
    assert not (tmp_path / "g.png").exists() and not (tmp_path / "bad.npy").exists()
