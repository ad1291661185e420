"""End-to-end training runs: every output, exact resume, refusal to overwrite, Ctrl-C."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import digitgan
from digitgan.errors import CheckpointError, RunDirError
from digitgan.store.checkpoint import read_checkpoint


def _event_tags(tb_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_the_result_holds_the_last_iterations_numbers(tmp_path, tiny_cfg, small_data):
    """Not those of the last logged iteration (4, of 0..5 here): those of the last one."""
    from digitgan.training.hooks import Hook

    class Last(Hook):
        def after_step(self, loop, result):
            self.step, self.stats = (
                loop.iteration,
                {k: float(v) for k, v in result.scalars().items()},
            )

    last = Last()
    result = digitgan.train(
        tiny_cfg, tmp_path / "run", dataset=small_data, progress=False, hooks=[last]
    )
    assert last.step == 5 and result.stats == pytest.approx(last.stats)
    more = digitgan.resume(tmp_path / "run", progress=False, dataset=small_data)  # no more to do
    assert more.step == 6 and more.stats == {}


def test_a_run_stopped_before_its_first_iteration_resumes(tmp_path, tiny, small_data):
    """Its checkpoint holds no optimiser state yet; reading it must not make empty entries
    (Adam's fused step then looked for moments that were not there)."""
    from digitgan.training.hooks import Hook

    class Stop(Hook):
        def start(self, loop):
            loop.request_stop("interrupted")

    cfg = tiny("dcgan")
    stopped = digitgan.train(
        cfg, tmp_path / "run", dataset=small_data, progress=False, hooks=[Stop()]
    )
    assert stopped.step == 0 and stopped.interrupted
    resumed = digitgan.resume(tmp_path / "run", dataset=small_data, progress=False)
    straight = digitgan.train(cfg, tmp_path / "straight", dataset=small_data, progress=False)
    assert resumed.step == straight.step == cfg.train.iters
    a, b = (
        read_checkpoint(r.run_dir / "checkpoints" / "latest.safetensors")[0]
        for r in (resumed, straight)
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_short_run_writes_every_output(tmp_path, tiny_cfg, small_data):
    out = tmp_path / "run"
    result = digitgan.train(tiny_cfg, out, dataset=small_data, progress=False)
    assert result.step == 6 and not result.interrupted
    assert set(result.stats) == {"D_loss", "G_loss", "D_real", "D_fake"}

    # config.toml: the complete resolved configuration, loadable again
    import tomllib

    assert digitgan.Config.from_dict(tomllib.loads((out / "config.toml").read_text())) == tiny_cfg

    # samples every 2 iterations (0, 2, 4, 6) from fixed noise, and the final grid
    names = sorted(p.name for p in (out / "samples").iterdir())
    assert names == ["000.png", "001.png", "002.png", "003.png", "final.png"]
    grid = np.asarray(Image.open(out / "samples" / "003.png"))
    assert grid.shape == (2 + 2 * 30, 2 + 2 * 30) and grid.dtype == np.uint8
    assert np.array_equal(grid, np.asarray(Image.open(out / "samples" / "final.png")))

    # metrics.jsonl: one line per logged step (0, 2, 4)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 2, 4]
    assert all(np.isfinite(r["D_loss"]) and 0 <= r["D_fake"] <= 1 for r in lines)

    # TensorBoard: scalars, histograms of all 8 tensors, the sample image, the graph
    acc = _event_tags(out / "tb")
    tags = acc.Tags()
    assert {"D_loss", "G_loss", "D_real", "D_fake"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("D_loss")] == [0, 2, 4]
    assert acc.Scalars("G_loss")[0].value == pytest.approx(lines[0]["G_loss"], rel=1e-6)
    hist = set(tags["histograms"])
    assert hist == {
        f"{m}/{layer}.{kind}"
        for m, layers in (("G", ("body.fc1", "body.fc2")), ("D", ("features.fc1", "head")))
        for layer in layers
        for kind in ("weight", "bias")
    }
    for tag, size in (("G/body.fc2.weight", 784 * 32), ("D/head.bias", 1)):
        h = acc.Histograms(tag)[-1].histogram_value
        assert h.num == size and sum(h.bucket) == size and h.min <= h.max
        assert h.bucket_limit[-1] == pytest.approx(h.max)
    assert "samples" in tags["images"]
    assert tags["graph"] is True

    # checkpoints every 3 iterations and at the end, latest at a fixed name, with JSON beside
    ck = out / "checkpoints"
    assert sorted(p.name for p in ck.glob("*.safetensors")) == [
        "latest.safetensors",
        "step-0000003.safetensors",
        "step-0000006.safetensors",
    ]
    for p in ck.glob("*.safetensors"):
        assert p.with_suffix(".json").is_file()
    _, meta = read_checkpoint(ck / "latest.safetensors")
    assert meta["step"] == 6 and meta["image_shape"] == [1, 28, 28]
    assert json.loads((ck / "latest.json").read_text()) == meta


def _weights(run: Path) -> dict:
    return load_file(run / "checkpoints" / "latest.safetensors")


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, tiny_cfg, small_data):
    cfg = tiny_cfg.replace(train__iters=9, log__ckpt_every=0)
    straight = digitgan.train(cfg, tmp_path / "a", dataset=small_data, progress=False)
    # stop at 4 (mid-epoch: 600 images / 16 per batch), then continue to 9
    part = digitgan.train(
        cfg.replace(train__iters=4), tmp_path / "b", dataset=small_data, progress=False
    )
    assert part.step == 4
    resumed = digitgan.resume(tmp_path / "b", iters=9, dataset=small_data, progress=False)
    assert straight.step == resumed.step == 9
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:  # weights, Adam moments, RNG states, data order: all identical
        assert torch.equal(a[k], b[k]), k
    # the resumed run's log and config read as one run
    steps = [
        json.loads(x)["step"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [0, 2, 4, 6, 8]
    assert "iters = 9" in (tmp_path / "b" / "config.toml").read_text()


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("dcgan", {}),
        ("selfcond", {"model__categories": 3}),  # D's code head
        ("selfcond", {"model__categories": 3, "loss__cluster_views": ["translation", "affine"]}),
        # the clusters, kept in the checkpoint (a constant learning rate: the decay's length
        # is train.iters, which differs between the runs)
        ("clusters", {"model__categories": 3, "optim__lr_end": 1.0}),
        # clusters within each class (3 per class): labels 0..29 for D, kept too
        ("cdcgan", {"model__categories": 3, "model__clusters": True, "optim__lr_end": 1.0}),
    ],
)
def test_resumed_conv_run_is_bit_identical(tmp_path, tiny, small_data, name, overrides):
    """Conv models train with channels-last weights on the CPU while checkpoints hold
    contiguous tensors: the Adam moments a resume loads must take the weights' layout, or
    the fused kernel pairs each weight with another's moments."""
    cfg = tiny(name, train__iters=6, **overrides)
    digitgan.train(cfg, tmp_path / "a", dataset=small_data, progress=False)
    digitgan.train(cfg.replace(train__iters=3), tmp_path / "b", dataset=small_data, progress=False)
    digitgan.resume(tmp_path / "b", iters=6, dataset=small_data, progress=False)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_max_minutes_stops_training_as_if_its_iterations_ended_there(
    tmp_path, tiny_cfg, small_data
):
    quiet = {f"log__{k}": 0 for k in ("sample_every", "print_every", "tb_every", "ckpt_every")}
    cfg = tiny_cfg.replace(train__iters=10**6, train__max_minutes=0.01, **quiet)  # 0.6 s
    out = tmp_path / "timed"
    result = digitgan.train(cfg, out, dataset=small_data, progress=False)
    assert result.out_of_time and not result.interrupted and 0 < result.step < 10**6
    assert 0.6 <= result.seconds < 30
    step = result.step
    assert (out / "samples" / "final.png").is_file()
    assert read_checkpoint(out / "checkpoints" / f"step-{step:07d}.safetensors")[1]["step"] == step
    # the same weights as a run told to stop at that iteration
    exact = tmp_path / "exact"
    plain = cfg.replace(train__iters=step, train__max_minutes=0.0)
    finished = digitgan.train(plain, exact, dataset=small_data, progress=False)
    assert finished.step == step and not finished.out_of_time
    a, b = _weights(out), _weights(exact)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a resume gets a budget of its own
    more = digitgan.resume(out, dataset=small_data, progress=False)
    assert more.out_of_time and more.step > step


def test_existing_run_is_never_overwritten(tmp_path, tiny_cfg, small_data):
    out = tmp_path / "run"
    digitgan.train(tiny_cfg.replace(train__iters=2), out, dataset=small_data, progress=False)
    before = _weights(out)
    with pytest.raises(RunDirError, match="already exists"):
        digitgan.train(tiny_cfg, out, dataset=small_data, progress=False)
    assert all(torch.equal(before[k], v) for k, v in _weights(out).items())
    # --force replaces a run, but never deletes a folder that is not a run
    digitgan.train(
        tiny_cfg.replace(train__iters=3), out, force=True, dataset=small_data, progress=False
    )
    assert read_checkpoint(out / "checkpoints" / "latest.safetensors")[1]["step"] == 3
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(RunDirError, match="not a digitgan run"):
        digitgan.train(tiny_cfg, other, force=True, dataset=small_data, progress=False)
    assert (other / "holiday.jpg").read_bytes() == b"precious"


def _cli(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(Path(digitgan.__file__).parents[1])}
    return subprocess.run(
        [sys.executable, "-m", "digitgan", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        **kw,
    )


def test_sample_command_png_and_npy(tmp_path, tiny_cfg, small_data):
    run = tmp_path / "run"
    digitgan.train(tiny_cfg, run, dataset=small_data, progress=False)
    r = _cli("sample", str(run), "--n", "10", "--out", str(tmp_path / "s.npy"), "--seed", "7")
    assert r.returncode == 0, r.stderr
    arr = np.load(tmp_path / "s.npy")
    assert arr.shape == (10, 28, 28) and arr.dtype == np.uint8
    # reproducible for a seed, from the run dir or the checkpoint file; other seeds differ
    gan = digitgan.load(run / "checkpoints" / "step-0000006.safetensors")
    assert np.array_equal(gan.sample(10, seed=7)[:, 0], arr)
    assert np.array_equal(gan.sample(4, seed=7), gan.sample(10, seed=7)[:4])
    assert not np.array_equal(gan.sample(10, seed=8)[:, 0], arr)
    r = _cli(
        "sample",
        str(run / "checkpoints" / "latest.json"),
        "--n",
        "9",
        "--out",
        str(tmp_path / "g.png"),
    )
    assert r.returncode == 0, r.stderr
    assert np.asarray(Image.open(tmp_path / "g.png")).shape == (2 + 3 * 30, 2 + 3 * 30)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--preset", "nope"], "unknown preset 'nope'"),
        (["train", "--set", "train.iters=abc"], "train.iters: expected an integer"),
        (["train", "--config", "/nonexistent.toml"], "config file /nonexistent.toml: no such file"),
        (["train", "--resume", "/nonexistent-run"], "no such run directory"),
        (["sample", "/nonexistent-run", "--out", "x.png"], "no such run directory or checkpoint"),
    ],
)
def test_cli_errors_are_one_line(args, message):
    r = _cli(*args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("digitgan: error: ")
    assert message in r.stderr


def test_a_model_that_cannot_be_built_leaves_no_run_directory(tmp_path, tiny_cfg, small_data):
    from digitgan.data import Dataset, Split

    odd = Dataset(
        "odd",
        Split(np.zeros((8, 1, 30, 30), np.uint8), np.zeros(8, np.int64)),
        None,
        1,
        ("0",),
    )
    with pytest.raises(digitgan.DigitganError, match="divisible by 4"):
        digitgan.train(tiny_cfg.replace(model__arch="dcgan"), tmp_path / "r", dataset=odd)
    assert not (tmp_path / "r").exists()


def test_a_checkpoint_with_damaged_clusters_is_refused(tmp_path, tiny, small_data):
    from safetensors import safe_open
    from safetensors.torch import save_file

    cfg = tiny("clusters", model__categories=3, train__iters=2)
    digitgan.train(cfg, tmp_path / "run", dataset=small_data, progress=False)
    path = tmp_path / "run" / "checkpoints" / "latest.safetensors"
    with safe_open(path, "pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    assert tensors["data.clusters"].shape == (600,)
    for damage, message in [(lambda t: t.fill_(3), r"lie in 0\.\.2"), (lambda t: t[:5], "600")]:
        save_file(
            {**tensors, "data.clusters": damage(tensors["data.clusters"].clone())},
            path,
            metadata=metadata,
        )
        with pytest.raises(
            CheckpointError, match=f"random or data-order state unusable: .*{message}"
        ):
            digitgan.resume(tmp_path / "run", iters=4, dataset=small_data, progress=False)


def test_a_resume_takes_its_clusters_from_the_checkpoint_without_finding_them_again(
    tmp_path, tiny, small_data, monkeypatch
):
    import digitgan.training.trainer as trainer_module

    cfg = tiny("clusters", model__categories=3, train__iters=2)
    digitgan.train(cfg, tmp_path / "run", dataset=small_data, progress=False)

    def refuse(*args):
        raise AssertionError("the clusters were found again")

    monkeypatch.setattr(trainer_module, "image_clusters", refuse)
    result = digitgan.resume(tmp_path / "run", iters=4, dataset=small_data, progress=False)
    assert result.step == 4
