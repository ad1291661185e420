"""`digitgan evaluate` on a tiny run, on .npy files, on real data, and during training."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import digitgan
from digitgan.errors import ConfigError, DataError
from digitgan.eval.classifier import SHIPPED, classifier_for
from digitgan.eval.evaluate import evaluate, evaluate_real
from digitgan.store.checkpoint import read_checkpoint

SCALARS = {
    "fid",
    "kid",
    "kid_std",
    "is",
    "is_std",
    "precision",
    "recall",
    "density",
    "coverage",
    "classes_covered",
    "kl_uniform",
    "class_share_min",
    "class_share_max",
    "mean_confidence",
    "memorised",
    "memorised_threshold",
    "memorised_quantile",
}


def test_evaluate_a_tiny_run_and_its_samples_as_npy(tiny_run, small_data, tmp_path):
    report = evaluate(tiny_run, n=300, dataset=small_data, seed=5)
    m = report.metrics
    assert set(m) == SCALARS and all(math.isfinite(v) for v in m.values())
    assert report.samples == 300 and sum(report.histogram) == 300
    assert report.class_accuracy is None  # unconditional: no label accuracy
    assert m["class_share_min"] == min(report.histogram) / 300
    assert m["class_share_max"] == max(report.histogram) / 300
    assert m["fid"] > 10  # 6 iterations of training: noise, far from digits
    assert 0 <= m["precision"] <= 1 and 0 <= m["coverage"] <= 1 and 1 <= m["is"] <= 10
    assert m["memorised"] == 0.0
    table = report.table()
    for label in ("FID", "KID", "Inception score", "precision", "recall", "density", "memorised"):
        assert label in table
    # the same samples saved by `digitgan sample` as uint8 score (almost) the same
    npy = tmp_path / "s.npy"
    digitgan.load(tiny_run).save_samples(npy, 300, seed=5)
    from_file = evaluate(npy, dataset=small_data)
    assert from_file.samples == 300
    assert np.abs(np.subtract(from_file.histogram, report.histogram)).sum() <= 6
    assert from_file.metrics["fid"] == pytest.approx(m["fid"], rel=0.01)
    assert evaluate(npy, n=100, dataset=small_data).samples == 100


def test_a_model_with_categories_is_scored_for_their_purity(tiny_cfg, small_data, tmp_path):
    cfg = tiny_cfg.replace(model__categories=4, log__tb_every=0, log__sample_every=0)
    digitgan.train(cfg, tmp_path / "run", dataset=small_data, progress=False)
    report = evaluate(tmp_path / "run", n=300, dataset=small_data)
    assert set(report.metrics) == SCALARS | {"category_purity"}
    # at least the largest class share: each category's commonest class is at least its share
    assert report.metrics["class_share_max"] <= report.metrics["category_purity"] <= 1
    assert "category purity" in report.table()


def test_evaluate_command_prints_json_and_a_table(tiny_run, small_idx, tmp_path, cli):
    # a small idx: copy of the data keeps this fast; its classifier is given explicitly
    weights = str(SHIPPED["mnist20k"].path)
    data = ["--dataset", small_idx, "--classifier", weights]
    code, out, err = cli("evaluate", tiny_run, "--n", "150", "--json", *data)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["dataset"] == small_idx and doc["samples"] == 150
    assert doc["reference"] == "the test split (200 images)"
    assert set(doc["metrics"]) == SCALARS and sum(doc["histogram"].values()) == 150
    assert doc["class_accuracy"] is None
    arr = (np.random.default_rng(0).random((50, 28, 28)) * 255).astype(np.uint8)
    np.save(tmp_path / "noise.npy", arr)
    code, out, err = cli("evaluate", tmp_path / "noise.npy", *data)
    assert code == 0, err
    assert f"50 samples vs the test split (200 images) of {small_idx}" in out
    assert "FID" in out and "memorised" in out
    code, out, err = cli("evaluate", "--real", "--n", "100", *data)
    assert code == 0, err
    assert f"real training images of {small_idx}: 100 samples" in out


@pytest.mark.parametrize(
    "array, message",
    [
        (
            np.zeros((4, 28, 28), np.float32),
            r"found float32 of shape \(4, 28, 28\); expected a uint8",
        ),
        (np.zeros((4, 784), np.uint8), r"found uint8 of shape \(4, 784\); expected a uint8 array"),
        (np.zeros((4, 28, 28, 7), np.uint8), r"shape \(4, 28, 28, 7\)"),
        (np.zeros((4, 32, 32), np.uint8), r"\(1, 32, 32\), but dataset mnist20k has \(1, 28, 28\)"),
    ],
)
def test_a_wrong_array_is_a_clear_error(tmp_path, small_data, array, message):
    path = tmp_path / "bad.npy"
    np.save(path, array)
    with pytest.raises(DataError, match=message) as e:
        evaluate(path, dataset=small_data)
    assert str(path) in str(e.value)


def test_evaluate_command_errors_are_one_line(tmp_path, cli):
    np.save(tmp_path / "f.npy", np.zeros((3, 28, 28), np.float64))
    for args, message in [
        (["evaluate", str(tmp_path / "f.npy")], "found float64 of shape (3, 28, 28)"),
        (["evaluate"], "give either RUN_OR_CHECKPOINT_OR_FILE.npy or --real"),
        (["evaluate", "--real", "--dataset", "idx:/nowhere"], "no classifier ships"),
        (["evaluate", str(tmp_path / "none.npy")], "no such file"),
    ]:
        code, _, err = cli(*args)
        assert code == 2 and err.count("\n") == 1 and message in err, err


def test_evaluate_command_takes_the_truncation(tiny_run, small_idx, cli):
    weights = str(SHIPPED["mnist20k"].path)
    data = ["--dataset", small_idx, "--classifier", weights, "--n", "40", "--json"]
    code, out, err = cli("evaluate", tiny_run, "--truncation", "0", *data)
    assert code == 0, err
    assert json.loads(out)["metrics"]["class_share_max"] == 1.0  # one image, 40 times
    code, out, err = cli("evaluate", tiny_run, "--truncation", "1", *data)
    assert code == 0, err
    assert (
        json.loads(out)["metrics"]
        == evaluate(tiny_run, n=40, dataset=small_idx, classifier=weights).metrics
    )


def test_evaluate_draws_with_the_truncation_asked_for(tiny_run, small_data, tmp_path):
    plain = evaluate(tiny_run, n=60, dataset=small_data)
    assert evaluate(tiny_run, n=60, dataset=small_data, truncation=1.0).metrics == plain.metrics
    at0 = evaluate(tiny_run, n=60, dataset=small_data, truncation=0.0)
    assert at0.metrics["class_share_max"] == 1.0  # one image, 60 times
    with pytest.raises(ConfigError, match="--truncation 1.2: expected a number from 0"):
        evaluate(tiny_run, n=60, dataset=small_data, truncation=1.2)
    npy = tmp_path / "s.npy"
    digitgan.load(tiny_run).save_samples(npy, 10)
    with pytest.raises(ConfigError, match="--truncation: only for a model"):
        evaluate(npy, dataset=small_data, truncation=0.5)


def test_real_training_data_is_the_floor(small_data, tiny_run):
    real = evaluate_real(small_data, n=300)
    assert real.samples == 300 and real.source == "real training images of mnist20k"
    assert real.metrics["memorised"] == 1.0  # training images are their own nearest neighbours
    assert real.metrics["classes_covered"] == 10 and real.metrics["mean_confidence"] > 0.95
    # labelled by their own labels: the classifier's accuracy, the ceiling of label accuracy
    assert real.metrics["label_accuracy"] > 0.95 and len(real.class_accuracy) == 10
    model = evaluate(tiny_run, n=300, dataset=small_data)
    assert real.metrics["fid"] < model.metrics["fid"] / 10
    assert real.metrics["precision"] > model.metrics["precision"]


def test_a_conditional_model_is_scored_for_the_classes_it_was_asked_for(
    cond_run, small_data, small_idx, tmp_path, cli
):
    from digitgan.eval.metrics import extract

    report = evaluate(cond_run, n=200, dataset=small_data, seed=3)
    m = report.metrics
    assert set(m) == SCALARS | {"label_accuracy"}
    # the classes in turn, 20 of each: accuracy = the share the classifier agrees with
    gan, clf = digitgan.load(cond_run), classifier_for("mnist20k")
    asked = torch.arange(200) % 10
    said = extract(clf.probs, gan.generate(200, 3, asked)).argmax(1)
    assert m["label_accuracy"] == pytest.approx(float((said == asked).double().mean()))
    per_class = [float((said[asked == c] == c).double().mean()) for c in range(10)]
    assert report.class_accuracy == pytest.approx(per_class)
    assert "label accuracy" in report.table() and "accuracy by class" in report.table()
    # its samples and their labels as .npy files score the same (uint8 rounding aside)
    gan.save_samples(tmp_path / "s.npy", 200, 3, asked)
    np.save(tmp_path / "labels.npy", asked.numpy())
    data = ["--dataset", small_idx, "--classifier", str(SHIPPED["mnist20k"].path)]
    labels = ["--labels", tmp_path / "labels.npy"]
    code, out, err = cli("evaluate", tmp_path / "s.npy", *labels, "--json", *data)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["metrics"]["label_accuracy"] == pytest.approx(m["label_accuracy"], abs=0.03)
    assert list(doc["class_accuracy"]) == list(small_data.class_names)
    np.save(tmp_path / "short.npy", asked.numpy()[:50])
    for args, message in [
        ([tmp_path / "s.npy", "--labels", tmp_path / "short.npy"], "expected an integer array"),
        ([cond_run, "--labels", tmp_path / "labels.npy"], "only for a .npy file"),
        (["--real", "--labels", tmp_path / "labels.npy"], "not with --real"),
    ]:
        code, _, err = cli("evaluate", *args)
        assert code == 2 and message in err, err


def _eval_cfg(tiny_cfg, **kw):
    defaults = {"log__eval_every": 3, "log__eval_samples": 64, "log__ckpt_every": 0}
    return tiny_cfg.replace(train__iters=9, **{**defaults, **kw})


def test_eval_every_logs_fid_and_keeps_the_best_checkpoint(tmp_path, tiny_cfg, small_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    digitgan.train(_eval_cfg(tiny_cfg), out, dataset=small_data, progress=False)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/fid" in r]
    assert [r["step"] for r in evals] == [3, 6, 9]
    assert all(r["eval/classes_covered"] <= 10 and r["eval/fid"] > 0 for r in evals)
    assert not any("eval/label_accuracy" in r for r in evals)  # unconditional: none
    walls = [r["wall_s"] for r in evals]  # when, and how long each evaluation took
    assert walls == sorted(walls) and all(0 < r["eval_s"] < r["wall_s"] for r in evals)
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("eval/fid")] == [3, 6, 9]
    assert "eval/kl_uniform" in acc.Tags()["scalars"]
    best = min(evals, key=lambda r: r["eval/fid"])
    _, meta = read_checkpoint(out / "checkpoints" / "best.safetensors")
    assert meta["step"] == best["step"] and meta["eval"]["fid"] == best["eval/fid"]
    assert (out / "checkpoints" / "best.json").is_file()
    assert digitgan.load(out / "checkpoints" / "best.safetensors").step == best["step"]
    # evaluating does not disturb training: the same weights as a run without it
    plain = tmp_path / "plain"
    digitgan.train(
        _eval_cfg(tiny_cfg, log__eval_every=0), plain, dataset=small_data, progress=False
    )
    a = load_file(out / "checkpoints" / "latest.safetensors")
    b = load_file(plain / "checkpoints" / "latest.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_eval_every_resumes_exactly_and_keeps_the_best_so_far(tmp_path, tiny_cfg, small_data):
    cfg = _eval_cfg(tiny_cfg)
    digitgan.train(cfg, tmp_path / "a", dataset=small_data, progress=False)
    digitgan.train(cfg.replace(train__iters=4), tmp_path / "b", dataset=small_data, progress=False)
    digitgan.resume(tmp_path / "b", iters=9, dataset=small_data, progress=False)
    for name in ("latest", "best"):
        a = load_file(tmp_path / "a" / "checkpoints" / f"{name}.safetensors")
        b = load_file(tmp_path / "b" / "checkpoints" / f"{name}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name

    def evals(run):  # the scores, without the times
        lines = (run / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(x) for x in lines if "eval/fid" in x]
        return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in records]

    assert evals(tmp_path / "a") == evals(tmp_path / "b")


def test_eval_every_without_a_classifier_fails_before_training(tmp_path, tiny_cfg, small_data):
    from digitgan.data import Dataset

    custom = Dataset("idx:/mine", small_data.train, small_data.test, 10, small_data.class_names)
    with pytest.raises(ConfigError, match="no classifier ships for dataset 'idx:/mine'"):
        digitgan.train(_eval_cfg(tiny_cfg), tmp_path / "run", dataset=custom, progress=False)
    assert not (tmp_path / "run").exists()
    no_test = Dataset("mnist20k", small_data.train, None, 10, small_data.class_names)
    with pytest.raises(DataError, match="has no test split"):
        digitgan.train(_eval_cfg(tiny_cfg), tmp_path / "run", dataset=no_test, progress=False)
    assert not (tmp_path / "run").exists()


def test_eval_every_scores_the_ema_generator_that_load_samples(tmp_path, tiny_cfg, small_data):
    """With EMA on, the FID logged in training is the averaged generator's, not the raw one's."""
    from digitgan.eval.evaluate import SampleScorer

    cfg = _eval_cfg(tiny_cfg, log__eval_every=9, train__ema_decay=0.9)
    out = tmp_path / "run"
    digitgan.train(cfg, out, dataset=small_data, progress=False)
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    (fid,) = [r["eval/fid"] for r in logged if "eval/fid" in r]

    scorer = SampleScorer(small_data, n=cfg.log.eval_samples, seed=cfg.train.seed)
    latest = out / "checkpoints" / "latest.safetensors"

    def fid_of(gan):
        from digitgan.eval.metrics import extract, fid_from_stats, gaussian_stats

        images = gan.generate(cfg.log.eval_samples, cfg.train.seed)
        feats = extract(scorer.classifier.features, images)
        return fid_from_stats(*scorer.test_stats, *gaussian_stats(feats))

    ema, raw = digitgan.load(latest), digitgan.load(latest, ema=False)
    assert ema.ema and not raw.ema
    assert fid == pytest.approx(fid_of(ema), rel=1e-6)
    assert fid == pytest.approx(scorer(ema)["fid"], rel=1e-6)
    assert fid != pytest.approx(fid_of(raw), rel=1e-4)  # the raw generator scores otherwise


def test_eval_every_logs_label_accuracy_of_a_conditional_model(tmp_path, tiny, small_data):
    """A conditional model is asked for its classes in turn; the logged label accuracy is the
    share the classifier names as asked, for the generator the run samples from."""
    from digitgan.eval.evaluate import SampleScorer
    from digitgan.eval.metrics import extract, label_accuracy

    cfg = tiny("cdcgan", train__iters=3, log__eval_every=3, log__eval_samples=50)
    out = tmp_path / "run"
    digitgan.train(cfg, out, dataset=small_data, progress=False)
    (record,) = [
        json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if "eval/" in x
    ]
    gan = digitgan.load(out)
    labels = torch.arange(50) % 10
    probs = extract(SampleScorer(small_data).classifier.probs, gan.generate(50, 0, labels))
    assert record["eval/label_accuracy"] == label_accuracy(probs, labels)["accuracy"]


def test_a_hook_can_stop_training_once_a_score_is_reached(tmp_path, tiny_cfg, small_data):
    class StopAtFid(digitgan.Hook):
        def after_step(self, loop, result):
            if loop.scores and loop.scores["fid"] < float("inf"):
                loop.request_stop("good enough")

    out = tmp_path / "run"
    result = digitgan.train(
        _eval_cfg(tiny_cfg), out, dataset=small_data, progress=False, hooks=[StopAtFid()]
    )
    assert result.step == 3 and not result.interrupted  # at the first evaluation
