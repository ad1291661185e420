"""Several seeds trained at once (``train --seeds``): each run equals its one-seed run."""

from contextlib import nullcontext

import numpy as np
import pytest
import torch
from PIL import Image

import digitgan
from digitgan.cli import main
from digitgan.data import StackedOptions, load_stacked
from digitgan.errors import CheckpointError, ConfigError, DivergenceError, RunDirError
from digitgan.store.checkpoint import read_checkpoint
from digitgan.training.dense import DenseStep
from digitgan.training.hooks import Hook
from digitgan.training.loop import make_step
from digitgan.training.seeds import StackedTrainer
from digitgan.training.trainer import Trainer
from digitgan.viz import make_grid, plot_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

SEEDS = [4, 0, 9]


def _state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return trainer.state()[0]


def _compare(single: Trainer, stacked_run: Trainer, lr: float) -> None:
    """The same state: random streams and data order exactly; weights, EMA and Adam moments
    to float rounding. Adam divides by sqrt(v), so an element whose gradient is zero up to
    rounding (a bias before BatchNorm, a dead unit) may move by up to a learning rate per
    step on rounding alone: all elements within that, nearly all to rounding."""
    a, b = _state(single), _state(stacked_run)
    assert a.keys() == b.keys()
    close = []
    for key in a:
        if a[key].is_floating_point() and not key.startswith(("rng.", "data.")):
            assert (a[key] - b[key]).abs().max() <= 2 * lr * single.step_count, key
            close.append(torch.isclose(a[key], b[key], rtol=1e-4, atol=1e-6).flatten())
        else:
            assert torch.equal(a[key], b[key]), key
    assert torch.cat(close).float().mean() > 0.98


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("seed", {}),  # the MLP: the dense kernel, stacked against one run's
        ("seed", {"train__fast_step": False}),  # the MLP through the generic step
        ("dcgan", {}),  # BatchNorm's running statistics, EMA
        ("hinge-sn", {}),  # spectral norm's power iteration
        ("cdcgan", {}),  # class-conditional: labels drawn per run
        ("wgan-gp", {"train__d_steps": 2}),  # a penalty drawing its own randomness
        ("hinge-sn", {"model__categories": 3, "model__self_condition": True}),  # 2 outputs
        ("clusters", {"model__categories": 3}),  # each run's own clusters as D's labels
        # a code in 3 parts, D's projection the sum of its parts' rows, on stacked digits
        ("clusters", {"model__categories": 8, "model__code_parts": 3, "model__z_dim": 10}),
    ],
)
def test_each_stacked_run_equals_its_one_seed_run(tiny, small_data, name, overrides):
    cfg = tiny(name, **overrides)
    if cfg.model.code_parts > 1:
        small_data = load_stacked("mnist20k", None, StackedOptions(train_size=300, test_size=2))
    steps = 3
    singles = []
    for seed in SEEDS:
        trainer = Trainer(cfg.replace(train__seed=seed), small_data)
        step = make_step(trainer)
        first = step()
        for _ in range(steps - 1):
            step()
        singles.append((trainer, first))
    runs = [Trainer(cfg.replace(train__seed=s), small_data) for s in SEEDS]
    stacked = make_step(StackedTrainer(runs))
    assert isinstance(stacked, DenseStep) == (name == "seed" and cfg.train.fast_step)
    first = stacked()
    for _ in range(steps - 1):
        stacked()
    for i, ((single, one), run) in enumerate(zip(singles, runs, strict=True)):
        mine = first.run(i, len(SEEDS))
        for key, value in one.scalars().items():  # the first iteration: from the same weights
            assert mine.scalars()[key].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-6)
        assert run.step_count == steps
        _compare(single, run, cfg.optim.lr_d)


def test_stacked_runs_must_differ_only_in_their_seed(tiny, small_data):
    a = Trainer(tiny("seed"), small_data)
    b = Trainer(tiny("seed", optim__lr_d=5e-4, train__seed=1), small_data)
    with pytest.raises(ConfigError, match="every setting but train.seed"):
        StackedTrainer([a, b])


@pytest.mark.parametrize(
    "name, overrides, key",
    [
        ("dcgan", {"augment__mode": "diffaugment"}, "augment.mode: diffaugment"),
        (
            "selfcond",
            {"model__categories": 3, "loss__cluster_views": ["affine"]},
            "loss.cluster_views:",
        ),
    ],
)
def test_augmentation_is_refused_for_stacked_seeds(
    tiny, small_data, tmp_path, name, overrides, key
):
    cfg = tiny(name, **overrides, train__seeds_mode="stacked")
    with pytest.raises(ConfigError, match=f"{key} (is )?not available"):
        digitgan.train(cfg, tmp_path / "runs", dataset=small_data, progress=False, seeds=[0, 1])
    assert not (tmp_path / "runs").exists()


def test_stacked_seeds_train_in_fp32_where_auto_takes_bf16_for_one(
    tiny, small_data, tmp_path, monkeypatch
):
    """bfloat16 autocast does not reach into vmap's batched convolutions (BatchNorm then met a
    bf16 input with float32 weights): on a CPU with bf16 units, auto trains one run in bf16
    and stacked seeds in fp32, and an explicit bf16 is refused for them by name."""
    from digitgan.training import step as step_module

    monkeypatch.setattr(step_module, "cpu_has_bf16_units", lambda: True)
    cfg = tiny("cdcgan", train__precision="auto", train__seeds_mode="stacked")
    assert make_step(Trainer(cfg, small_data)).autocast is not nullcontext  # one run: bf16
    runs = [Trainer(cfg.replace(train__seed=s), small_data) for s in (0, 1)]
    assert make_step(StackedTrainer(runs)).autocast is nullcontext
    results = digitgan.train(cfg, tmp_path / "a", dataset=small_data, progress=False, seeds=[0, 1])
    assert [r.step for r in results] == [cfg.train.iters] * 2
    with pytest.raises(ConfigError, match="train.precision: bf16 is not available for several"):
        bf16 = cfg.replace(train__precision="bf16")
        digitgan.train(bf16, tmp_path / "b", dataset=small_data, progress=False, seeds=[0, 1])
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize(("name", "stacked"), [("seed", True), ("dcgan", False)])
def test_auto_stacks_seeds_where_stacking_was_measured_faster(tiny, small_data, name, stacked):
    """On a CPU stacked convolutional models were slower than the same runs one after
    another; auto trains those one by one (each then equals its one-seed run exactly)."""
    from digitgan.training.loop import stacks_seeds

    assert stacks_seeds(Trainer(tiny(name), small_data)) is stacked  # on the CPU
    for mode, want in (("stacked", True), ("sequential", False)):
        trainer = Trainer(tiny(name, train__seeds_mode=mode), small_data)
        assert stacks_seeds(trainer) is want


def test_sequential_seeds_equal_their_one_seed_runs_and_stop_together(tiny, small_data, tmp_path):
    """One after another, each seed is its one-seed run bit for bit; a stop (Ctrl-C) in one
    stops the rest at once, each saving a checkpoint, and the folder continues them."""
    cfg = tiny("dcgan", train__iters=4, log__ckpt_every=2, augment__mode="diffaugment")
    assert cfg.train.seeds_mode == "auto"  # sequential for a conv model on the CPU
    results = digitgan.train(
        cfg, tmp_path / "runs", dataset=small_data, progress=False, seeds=[0, 1]
    )
    alone = digitgan.train(
        cfg.replace(train__seed=1), tmp_path / "one", dataset=small_data, progress=False
    )
    a = read_checkpoint(results[1].run_dir / "checkpoints" / "latest.safetensors")[0]
    b = read_checkpoint(alone.run_dir / "checkpoints" / "latest.safetensors")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    class _Stop(Hook):
        def after_step(self, loop, result):
            if loop.iteration == 1:
                loop.request_stop("interrupted")

    stopped = digitgan.train(
        cfg, tmp_path / "b", dataset=small_data, progress=False, seeds=[0, 1, 2], hooks=[_Stop()]
    )
    assert [(r.step, r.interrupted) for r in stopped] == [(2, True), (0, True), (0, True)]
    assert digitgan.load(stopped[2].run_dir).step == 0  # saved, so that the folder continues
    resumed = digitgan.resume(tmp_path / "b", dataset=small_data, progress=False)
    assert [r.step for r in resumed] == [4, 4, 4]


class _Poison(Hook):
    """Makes run ``seed``'s generator NaN after iteration ``at``."""

    def __init__(self, seed: int, at: int):
        self.seed, self.at = seed, at

    def after_step(self, loop, result):
        tr = loop.trainer
        if tr.cfg.train.seed == self.seed and loop.iteration == self.at:
            with torch.no_grad():
                next(tr.G.parameters()).fill_(float("nan"))


@pytest.mark.parametrize("mode", ["stacked", "sequential"])
def test_a_diverging_seed_stops_alone_and_keeps_its_last_good_checkpoint(
    tiny, small_data, tmp_path, mode
):
    cfg = tiny("seed", train__iters=8, log__print_every=1, log__ckpt_every=2)
    cfg = cfg.replace(train__seeds_mode=mode)
    results = digitgan.train(
        cfg,
        tmp_path / "runs",
        dataset=small_data,
        progress=False,
        seeds=[0, 1, 2],
        hooks=[_Poison(seed=1, at=4)],
    )
    ok = [r for r in results if r.error is None]
    assert [r.run_dir.name for r in ok] == ["seed-0", "seed-2"]
    assert all(r.step == 8 and not r.interrupted for r in ok)
    bad = results[1]
    assert isinstance(bad.error, DivergenceError) and "iteration 5" in str(bad.error)
    assert bad.step == 6  # stopped at the check after the poisoned iteration
    latest = digitgan.load(bad.run_dir)  # the last good checkpoint, iteration 4
    assert latest.step == 4
    assert torch.isfinite(latest.generate(4, seed=0)).all()
    for r in ok:
        assert torch.isfinite(digitgan.load(r.run_dir).generate(4, seed=0)).all()


def test_train_seeds_writes_one_ordinary_run_directory_per_seed(tiny, small_data, tmp_path, capsys):
    cfg = tiny("seed", train__iters=4, log__ckpt_every=2)
    results = digitgan.train(
        cfg, tmp_path / "runs", dataset=small_data, progress=False, seeds=[3, 5]
    )
    assert [r.run_dir for r in results] == [
        tmp_path / "runs" / "seed-3",
        tmp_path / "runs" / "seed-5",
    ]
    for r, seed in zip(results, [3, 5], strict=True):
        run = digitgan.load(r.run_dir)
        assert run.config.train.seed == seed and run.step == 4
        assert (r.run_dir / "samples" / "final.png").is_file()
    # a seed's run continues as any run does
    resumed = digitgan.resume(results[1].run_dir, iters=6, dataset=small_data, progress=False)
    assert resumed.step == 6
    # digitgan plot draws the runs' curves together, into the folder
    assert main(["plot", str(tmp_path / "runs")]) == 0
    with Image.open(tmp_path / "runs" / "plots" / "curves.png") as png:
        assert png.size[1] > 400  # two panels at least
    assert not (results[0].run_dir / "plots").exists()
    with pytest.raises(RunDirError, match="not a run directory \\(no metrics.jsonl\\)"):
        plot_metrics([results[0].run_dir, tmp_path])
    # digitgan sample draws a row per run, from the same noise
    grid = tmp_path / "seeds.png"
    assert main(["sample", str(tmp_path / "runs"), "--n", "3", "--out", str(grid)]) == 0
    rows = np.concatenate([digitgan.load(r.run_dir).sample(3, seed=0) for r in results])
    assert np.array_equal(np.asarray(Image.open(grid)), make_grid(rows, nrow=3))
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "runs"), "--walk", "2", "--out", str(grid)]) == 2
    assert "--walk: of one run; a folder of runs is drawn a row" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "runs"), "--out", str(tmp_path / "s.npy")]) == 2
    assert "s.npy: the file must end in .png" in capsys.readouterr().err
    # the folder itself is not a run: readers say which runs it holds
    with pytest.raises(CheckpointError, match=r"a folder of 2 runs \(seed-3, seed-5\), not a run"):
        digitgan.load(tmp_path / "runs")


def test_the_command_line_takes_seed_lists_and_refuses_bad_ones(tmp_path, capsys):
    out = tmp_path / "runs"
    code = main(["train", "--seeds", "0-1", "--dry-run", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0 and "seed-0: finished iteration 2" in printed and "seed-1:" in printed
    assert (out / "seed-1" / "checkpoints" / "latest.safetensors").is_file()
    for args, message in [
        (["--seeds", "3-1"], "the range is empty"),
        (["--seeds", "a"], "expected seeds such as 0-7"),
        (["--seeds", "0-5000"], "at most 1024 seeds"),
        (["--seeds", "1,1"], "1 given more than once"),
        (["--seeds", "1", "--seed", "2"], "--seed: not with --seeds"),
        (["--seeds", "0-1", "--resume", str(out / "seed-0")], "--seeds cannot be given"),
    ]:
        try:
            code = main(["train", *args, "--dry-run", "--out", str(tmp_path / "other")])
        except SystemExit as e:  # (an argument that does not parse)
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("mode", ["stacked", "sequential"])
def test_a_seeds_folder_resumes_exactly(tiny, small_data, tmp_path, mode):
    cfg = tiny("dcgan", train__iters=4, log__ckpt_every=2, train__seeds_mode=mode)
    straight = digitgan.train(cfg, tmp_path / "a", dataset=small_data, progress=False, seeds=[0, 1])
    digitgan.train(
        cfg.replace(train__iters=2),
        tmp_path / "b",
        dataset=small_data,
        progress=False,
        seeds=[0, 1],
    )
    resumed = digitgan.resume(tmp_path / "b", iters=4, dataset=small_data, progress=False)
    assert [r.step for r in resumed] == [4, 4] and [r.step for r in straight] == [4, 4]
    for seed in ("seed-0", "seed-1"):
        a = read_checkpoint(tmp_path / "a" / seed / "checkpoints" / "latest.safetensors")[0]
        b = read_checkpoint(tmp_path / "b" / seed / "checkpoints" / "latest.safetensors")[0]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), seed
    # runs of a folder at different iterations: one by one (sequential), not stacked
    digitgan.resume(tmp_path / "b" / "seed-1", iters=5, dataset=small_data, progress=False)
    if mode == "stacked":
        with pytest.raises(CheckpointError, match=r"different iterations \(seed-0 at 4, seed-1"):
            digitgan.resume(tmp_path / "b", iters=6, dataset=small_data, progress=False)
    else:
        again = digitgan.resume(tmp_path / "b", iters=6, dataset=small_data, progress=False)
        assert [r.step for r in again] == [6, 6]
