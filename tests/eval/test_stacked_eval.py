"""Stacked MNIST end to end: a colour run's grids and samples, its modes and their floor."""

import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import digitgan
from digitgan.cli import main
from digitgan.data import StackedOptions, load_stacked
from digitgan.errors import ConfigError
from digitgan.eval.evaluate import EVAL_FILE, evaluate, evaluate_real
from digitgan.export import export
from digitgan.viz import progress_gif

pytestmark = pytest.mark.usefixtures("one_thread")

OPTIONS = {"data__stacked-mnist20k__train_size": 2000, "data__stacked-mnist20k__test_size": 300}


@pytest.fixture(scope="module")
def stacked():
    return load_stacked("mnist20k", None, StackedOptions(train_size=2000, test_size=300))


@pytest.fixture(scope="module")
def stacked_run(tmp_path_factory, tiny):
    """A few iterations of the stacked preset, shrunk, scored during training too."""
    out = tmp_path_factory.mktemp("stacked") / "run"
    cfg = tiny("stacked", **OPTIONS, log__eval_every=2, log__eval_samples=50)
    digitgan.train(cfg, out, progress=False)
    return out


def test_one_mode_and_exactly_uniform_samples(stacked, tmp_path):
    digits = stacked.test.images[:, :1]  # real test digits, in the red channel
    one = np.repeat(digits[:1].repeat(3, axis=1), 400, axis=0)  # the same three digits
    np.save(tmp_path / "one.npy", one)
    report = evaluate(tmp_path / "one.npy", dataset=stacked)
    assert report.metrics["modes_covered"] == 1
    assert report.metrics["modes_kl"] == pytest.approx(math.log(1000))
    assert sum(report.histogram) == 400 and max(report.histogram) == 400
    assert report.floor["modes_covered"] > 300  # 400 real stacks: mostly distinct modes
    # real stacks asked for by their own labels: the classifier names nearly every channel
    np.save(tmp_path / "real.npy", stacked.test.images)
    np.save(tmp_path / "labels.npy", stacked.test.labels)
    real = evaluate(tmp_path / "real.npy", dataset=stacked, labels=tmp_path / "labels.npy")
    assert real.metrics["label_accuracy"] > 0.95
    assert abs(real.metrics["modes_covered"] - np.unique(stacked.test.labels).size) <= 10


def test_real_stacks_floor_defaults_to_26000_samples():
    report = evaluate_real("stacked-mnist20k")
    assert report.samples == 26_000
    assert 950 <= report.metrics["modes_covered"] <= 1000
    assert 0.015 < report.metrics["modes_kl"] < 0.06  # sampling alone gives about 999/52000


def test_a_colour_run_writes_colour_grids_and_samples_of_its_shape(stacked_run, tmp_path):
    with Image.open(stacked_run / "samples" / "final.png") as grid:
        assert grid.mode == "RGB"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(stacked_run / "tb"))
    events.Reload()
    logged = events.Images("samples")[-1].encoded_image_string
    assert Image.open(io.BytesIO(logged)).mode == "RGB"
    with Image.open(progress_gif(stacked_run, tmp_path / "progress.gif")) as gif:
        frame = np.asarray(gif.convert("RGB")).astype(int)
        assert (frame[..., 0] != frame[..., 1]).any()  # still in colour
    gan = digitgan.load(stacked_run)
    assert gan.image_shape == (3, 28, 28)
    gan.save_samples(tmp_path / "s.npy", 7)
    assert np.load(tmp_path / "s.npy").shape == (7, 3, 28, 28)
    logged = [json.loads(line) for line in (stacked_run / "metrics.jsonl").read_text().splitlines()]
    scored = [r for r in logged if "eval/modes_kl" in r]
    assert scored and all(0 <= r["eval/modes_kl"] <= math.log(1000) + 1e-9 for r in scored)
    assert all(1 <= r["eval/modes_covered"] <= 50 for r in scored)


def test_a_resume_keeps_the_stacks_it_trained_on(stacked_run):
    with pytest.raises(ConfigError, match="--set data.stacked-mnist20k.seed: cannot change"):
        digitgan.resume(stacked_run, iters=6, sets=["data.stacked-mnist20k.seed=5"])


def test_evaluate_command_on_a_stacked_run_saves_modes_and_floor(stacked_run, capsys, tmp_path):
    assert main(["evaluate", str(stacked_run), "--n", "300", "--save"]) == 0
    out = capsys.readouterr().out
    assert "modes covered" in out and "real data" in out
    saved = json.loads((stacked_run / EVAL_FILE).read_text())
    assert saved["samples"] == 300 and set(saved["floor"]) == {"modes_covered", "modes_kl"}
    assert {"modes_covered", "modes_kl", "mean_confidence"} <= set(saved["metrics"])
    # the run's own options made the floor's stacks: 300 real ones of its 2,000
    assert saved["floor"]["modes_covered"] <= 300
    # an exported model's card shows them
    card = (export(stacked_run, tmp_path / "model").path / "README.md").read_text()
    modes, floor = saved["metrics"]["modes_covered"], saved["floor"]["modes_covered"]
    assert f"| Modes covered (Stacked MNIST, of 1,000) | {modes} | {floor} |" in card


def test_channels_adds_the_usual_metrics_per_channel(stacked, tmp_path, capsys):
    np.save(tmp_path / "real.npy", stacked.test.images[:100])
    report = evaluate(tmp_path / "real.npy", dataset=stacked, channels=True)
    for channel in ("red", "green", "blue"):
        assert report.metrics[f"{channel}/classes_covered"] == 10
        assert report.metrics[f"{channel}/fid"] < 10  # real test digits against the test split
    assert main(["evaluate", "--real", "--channels", "--n", "5"]) == 2
    assert "--channels: only for a stacked dataset" in capsys.readouterr().err


def test_a_code_in_three_parts_takes_each_channels_cluster(tmp_path, tiny, stacked, capsys):
    """model.code_parts on Stacked MNIST: a category per channel's cluster, read in base k;
    the run resumes exactly and draws a chosen category, whose parts G's noise picks."""
    from safetensors.torch import load_file

    from digitgan.models.base import category_parts, code_of

    cfg = tiny(
        "clusters",
        **OPTIONS,
        data__dataset="stacked-mnist20k",
        model__categories=8,  # 2 clusters of each of the 3 channels
        model__code_parts=3,
        model__z_dim=10,
        optim__lr_end=1.0,  # a constant learning rate: the runs below differ in train.iters
        train__iters=4,
        log__ckpt_every=2,
    )
    digitgan.train(cfg, tmp_path / "a", progress=False)
    digitgan.train(cfg.replace(train__iters=2), tmp_path / "b", progress=False)
    digitgan.resume(tmp_path / "b", iters=4, progress=False)
    a, b = (load_file(tmp_path / r / "checkpoints" / "latest.safetensors") for r in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    parts = category_parts(a["data.clusters"], 8, 3)  # (2000, 3): each channel's cluster
    cluster_of = {}
    pictures = stacked.train.images.reshape(-1, 28 * 28)  # channel by channel, as parts
    for picture, part in zip(pictures, parts.flatten().tolist(), strict=True):
        assert cluster_of.setdefault(picture.tobytes(), part) == part  # one per picture
    assert set(cluster_of.values()) == {0, 1}

    gan = digitgan.load(tmp_path / "a")
    assert gan.categories == 8
    assert (code_of(gan.noise(50, seed=3, category=6), 8, 3) == 6).all()
    out = tmp_path / "six.npy"
    argv = ["sample", str(tmp_path / "a"), "--n", "4", "--category", "6", "--out", str(out)]
    assert main(argv) == 0
    assert np.array_equal(np.load(out), gan.sample(4, 0, category=6))  # (4, 3, 28, 28)
    # part by part: red's cluster 1, green's any, blue's 0
    assert main([*argv[:-3], "1,any,0", "--out", str(out)]) == 0
    assert "wrote 4 samples of category 1,any,0 to" in capsys.readouterr().out
    assert np.array_equal(np.load(out), gan.sample(4, 0, category=[1, None, 0]))
    picked = category_parts(code_of(gan.noise(50, seed=3, category=[1, None, 0]), 8, 3), 8, 3)
    assert (picked[:, 0] == 1).all() and (picked[:, 2] == 0).all()
    assert main([*argv[:-3], "1,2,0", "--out", str(tmp_path / "bad.npy")]) == 2
    err = capsys.readouterr().err
    assert (
        "--category 1,2,0: this model has 8 categories: expected an integer from 0 to 7 or 3 "
        in err
    )
    with pytest.raises(SystemExit, match="2"):  # argparse's own error
        main([*argv[:-3], "1,x,0", "--out", str(tmp_path / "bad.npy")])
    assert "argument --category: expected an integer, got 'x'" in capsys.readouterr().err
    assert not (tmp_path / "bad.npy").exists()


def test_a_code_in_parts_needs_as_many_parts_as_channels(tmp_path, tiny, small_data):
    cfg = tiny("clusters", model__categories=8, model__code_parts=3, model__z_dim=10)
    with pytest.raises(ConfigError, match="model.code_parts: 3 parts .* mnist20k has 1"):
        digitgan.train(cfg, tmp_path / "run", dataset=small_data, progress=False)
    assert not (tmp_path / "run").exists()
