"""Several runs evaluated as one (``digitgan evaluate FOLDER``, ``evaluate_runs``): each run
scored as ``evaluate`` scores it alone, and every metric's median and range over them."""

import json
import statistics

import pytest

import digitgan
from digitgan.errors import CheckpointError, ConfigError
from digitgan.eval.classifier import SHIPPED
from digitgan.eval.evaluate import EvalReport
from digitgan.eval.runs import MAX_COLUMNS, RunsReport, evaluate_runs


def report(name: str, **metrics) -> EvalReport:
    names = tuple(str(i) for i in range(10))
    return EvalReport(name, "mnist20k", 100, "the test split", "shipped", metrics, [10] * 10, names)


def test_the_summary_is_each_metrics_median_and_range_over_the_runs():
    runs = RunsReport(
        "sweep",
        {
            "seed-0": report("a", fid=3.0, kid_std=0.5, classes_covered=10),
            "seed-1": report("b", fid=1.0, kid_std=0.1, classes_covered=9, recall=0.4),
            "seed-2": report("c", fid=2.5, kid_std=0.2, classes_covered=10),
        },
    )
    summary = runs.summary()
    assert list(summary) == ["fid", "kid_std", "classes_covered"]  # recall: one run only
    assert summary["fid"] == {"median": 2.5, "min": 1.0, "max": 3.0}
    assert summary["classes_covered"] == {"median": 10, "min": 9, "max": 10}
    lines = runs.table().splitlines()
    assert lines[0].startswith("sweep: 3 runs, 100 samples each vs the test split of mnist20k")
    assert lines[1].split() == ["metric", "median", "range", "seed-0", "seed-1", "seed-2"]
    assert lines[2].split() == ["fid", "2.5", "1", "-", "3", "3", "1", "2.5"]
    assert lines[3].split() == ["classes_covered", "10", "9", "-", "10", "10", "9", "10"]
    assert len(lines) == 4  # kid_std qualifies kid: in to_dict, not in the table
    assert runs.to_dict()["runs"]["seed-1"]["metrics"]["recall"] == 0.4
    many = RunsReport("many", {f"seed-{i}": report("x", fid=1.0) for i in range(MAX_COLUMNS + 1)})
    assert many.table().splitlines()[1].split() == ["metric", "median", "range"]
    assert many.table().splitlines()[2].split() == ["fid", "1", "1"]  # one value: no range


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny, small_data):
    """Three seeds of the shrunk seed model trained at once: a folder of seed-N runs."""
    folder = tmp_path_factory.mktemp("sweep") / "runs"
    cfg = tiny("seed", train__iters=4, log__tb_every=0, log__sample_every=0)
    digitgan.train(cfg, folder, dataset=small_data, progress=False, seeds=[0, 1, 2])
    return folder


def test_each_run_is_scored_as_alone_and_the_command_prints_the_spread(sweep, small_idx, cli):
    # a small idx: copy of the data keeps this fast; its classifier is given explicitly
    data = {"n": 100, "dataset": small_idx, "classifier": SHIPPED["mnist20k"].path}
    runs = evaluate_runs(sweep, **data)
    assert list(runs.reports) == ["seed-0", "seed-1", "seed-2"]
    alone = [digitgan.evaluate(sweep / name, **data).metrics for name in runs.reports]
    assert [r.metrics for r in runs.reports.values()] == alone
    fids = [m["fid"] for m in alone]
    assert len(set(fids)) == 3  # three different models
    want = {"median": statistics.median(fids), "min": min(fids), "max": max(fids)}
    assert runs.summary()["fid"] == want

    options = [f"--{k}={v}" for k, v in data.items()]
    code, out, err = cli("evaluate", sweep, *options, "--save")
    assert code == 0 and out.startswith(f"{sweep}: 3 runs, 100 samples each")
    assert f"evaluating {sweep / 'seed-2'}" in err
    for name, metrics in zip(runs.reports, alone, strict=True):
        assert f"wrote {sweep / name / 'eval.json'}" in out
        saved = json.loads((sweep / name / "eval.json").read_text())
        assert saved["metrics"]["fid"] == pytest.approx(metrics["fid"])
        assert saved["floor"]["fid"] > 0
    code, out, _ = cli("evaluate", sweep, *options, "--json")
    doc = json.loads(out)
    assert set(doc["runs"]) == {"seed-0", "seed-1", "seed-2"}
    assert doc["summary"]["fid"] == pytest.approx(want)


def test_a_folder_without_runs_is_refused_by_name(tmp_path, cli):
    with pytest.raises(CheckpointError, match="holds no runs"):
        evaluate_runs(tmp_path)
    code, _, err = cli("evaluate", tmp_path, "--n", 100)
    assert code == 2 and f"{tmp_path}: no checkpoint found" in err


def test_runs_on_different_datasets_are_not_summarised_together(
    tmp_path, tiny, small_data, small_idx
):
    cfg = tiny("seed", train__iters=2, log__tb_every=0, log__sample_every=0)
    digitgan.train(cfg, tmp_path / "a", dataset=small_data, progress=False)
    digitgan.train(cfg.replace(data__dataset=small_idx), tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match=f"b: scored on {small_idx}, .*a on mnist20k; the runs"):
        evaluate_runs(tmp_path, n=50, classifier=SHIPPED["mnist20k"].path)
