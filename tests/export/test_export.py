"""digitgan export: a model folder that loads back to the same samples, its model card, its
ONNX file checked against PyTorch, and folders that are refused (missing files, tampered
configs, folders that are not exports)."""

import json
import shlex
import shutil

import numpy as np
import pytest
import torch
import yaml

import digitgan
from digitgan import export as export_module
from digitgan.cli import main
from digitgan.errors import CheckpointError, ConfigError, MissingExtraError
from digitgan.export import export
from digitgan.store.exported import read_export, write_export_files

try:
    import onnxruntime
except ImportError:
    onnxruntime = None
needs_ort = pytest.mark.skipif(
    onnxruntime is None, reason="onnxruntime is not installed (pip install 'digitgan[export]')"
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, small_data, cond_run, tiny):
    """Tiny trained runs: the seed MLP, a DCGAN (with EMA), the conditional cdcgan and a
    hinge-sn with a categorical code (model.categories)."""
    out = {"cdcgan": cond_run}
    for name, preset_name, extra in (
        ("seed", "seed", {}),
        ("dcgan", "dcgan", {}),
        ("codes", "hinge-sn", {"model__categories": 3}),
    ):
        cfg = tiny(preset_name, train__iters=3, log__tb_every=0, log__sample_every=0, **extra)
        out[name] = tmp_path_factory.mktemp(name) / "run"
        digitgan.train(cfg, out[name], dataset=small_data, progress=False)
    return out


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """Each run exported once (without ONNX), shared read-only."""
    base = tmp_path_factory.mktemp("exported")
    return {name: export(run, base / name).path for name, run in runs.items()}


NAMES = ["seed", "dcgan", "cdcgan", "codes"]


@pytest.mark.parametrize("name", NAMES)
def test_an_exported_model_draws_the_same_samples(runs, exported, name):
    folder = exported[name]
    assert {p.name for p in folder.iterdir()} == {
        "model.safetensors",
        "config.json",
        "README.md",
        "samples.png",
    }
    run, model = digitgan.load(runs[name]), digitgan.load(folder)
    assert model.ema == run.ema == (name != "seed")
    assert np.array_equal(model.sample(12, seed=5), run.sample(12, seed=5))
    assert model.step == run.step and model.image_shape == run.image_shape
    assert model.num_classes == run.num_classes and model.class_names == run.class_names
    if name == "cdcgan":
        assert np.array_equal(model.sample(4, seed=1, labels=7), run.sample(4, seed=1, labels=7))
    config = json.loads((folder / "config.json").read_text())
    assert config["library"] == "digitgan" and config["architecture"] == run.config.model.arch
    assert config["noise"] == {"kind": run.config.model.noise, "z_dim": run.config.model.z_dim}
    assert config["num_classes"] == run.num_classes and config["image_shape"] == [1, 28, 28]
    assert config["output_range"] == list(run.generator.out_range)
    assert config["digitgan_version"] == digitgan.__version__


def test_commands_read_an_exported_folder(exported, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert main(["sample", str(exported["cdcgan"]), "--n", "3", "--out", str(out)]) == 0
    assert np.load(out).shape == (3, 28, 28)
    out2 = tmp_path / "m.safetensors.npy"
    model_file = exported["cdcgan"] / "model.safetensors"
    assert main(["sample", str(model_file), "--n", "3", "--out", str(out2)]) == 0
    assert np.array_equal(np.load(out), np.load(out2))


def _card(folder):
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(front), body


def test_the_model_card_describes_the_model_and_how_to_train_it(runs, exported):
    meta, body = _card(exported["dcgan"])
    assert meta["library_name"] == "digitgan"
    assert {"gan", "image-generation", "mnist"} <= set(meta["tags"])
    assert meta["datasets"] == ["mnist"] and "metrics" not in meta
    assert "digitgan train --preset dcgan" in body and "--iters 3" in body
    assert "No evaluation was saved" in body and "samples.png" in body
    assert "conditional-image-generation" in _card(exported["cdcgan"])[0]["tags"]


def test_the_model_card_names_the_saved_metrics_beside_the_floor(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["seed"], run)
    metrics = {"fid": 45.7, "kid": 0.05, "is": 3.88, "precision": 0.5, "recall": 0.4}
    floor = {"fid": 0.285, "kid": 0.0001, "is": 9.8, "precision": 0.9, "recall": 0.9}
    metrics["cas"], floor["cas"] = 0.95, 0.99  # evaluate --cas: the real digits' CAS is its floor
    doc = {"checkpoint": "x", "samples": 10000, "dataset": "mnist20k"}
    (run / "eval.json").write_text(json.dumps(doc | {"metrics": metrics, "floor": floor}))
    folder = export(run, tmp_path / "model").path
    meta, body = _card(folder)
    assert meta["metrics"] == ["fid", "kid", "inception_score", "precision", "recall", "accuracy"]
    (result,) = meta["model-index"][0]["results"]
    values = {m["name"]: m["value"] for m in result["metrics"]}
    assert values["FID"] == 45.7 and values["FID of real digits (floor)"] == 0.285
    assert values["Inception score"] == 3.88
    assert "| FID | 45.7 | 0.285 |" in body and "10,000 samples" in body
    assert "| Classification accuracy score | 0.95 | 0.99 |" in body
    assert json.loads((folder / "eval.json").read_text())["metrics"]["fid"] == 45.7


@pytest.mark.parametrize("text", ["{", '{"metrics": {"fid": "good"}}', "[1, 2]"])
def test_a_malformed_eval_json_leaves_the_card_without_metrics_and_says_so(runs, tmp_path, text):
    run = tmp_path / "run"
    shutil.copytree(runs["seed"], run)
    (run / "eval.json").write_text(text)
    result = export(run, tmp_path / "model")
    (note,) = result.notes
    assert "eval.json" in note and note.endswith("the model card has no metrics")
    assert "No evaluation was saved" in _card(result.path)[1]


@pytest.mark.parametrize("missing", ["model.safetensors", "config.json"])
def test_a_folder_missing_a_file_is_refused_in_one_line(exported, tmp_path, missing):
    folder = tmp_path / "m"
    shutil.copytree(exported["seed"], folder)
    (folder / missing).unlink()
    with pytest.raises(CheckpointError, match=f"{missing} missing") as e:
        digitgan.load(folder)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c["noise"].update(z_dim=c["noise"]["z_dim"] + 1),
        lambda c: c.update(num_classes=10),
        lambda c: c.update(output_range=[-1.0, 1.0]),
        lambda c: c.update(architecture="dcgan"),
    ],
)
def test_a_tampered_config_is_refused(exported, tmp_path, change):
    folder = tmp_path / "m"
    shutil.copytree(exported["seed"], folder)
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json disagrees with model.safetensors"):
        digitgan.load(folder)


def test_config_json_names_learnt_categories_and_older_folders_without_them_load(
    exported, tmp_path
):
    assert "categories" not in json.loads((exported["seed"] / "config.json").read_text())
    folder = tmp_path / "m"
    shutil.copytree(exported["codes"], folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["categories"] == 3
    del config["categories"]  # as exports wrote config.json before naming them
    (folder / "config.json").write_text(json.dumps(config))
    assert digitgan.load(folder).categories == 3
    config["categories"] = 5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"disagrees .*\(categories\)"):
        digitgan.load(folder)


def test_weights_of_the_wrong_shape_are_refused(exported, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(exported["seed"], folder)
    tensors, meta = read_export(folder)
    state = {k.removeprefix("G."): v for k, v in tensors.items()}
    first = next(iter(state))
    state[first] = torch.zeros(3, 3)
    write_export_files(folder, state, {k: v for k, v in meta.items() if k != "format"})
    read_export(folder)  # config.json and metadata agree ...
    with pytest.raises(CheckpointError, match="has shape"):  # ... but not with the weights
        digitgan.load(folder)
    (folder / "model.safetensors").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a safetensors checkpoint"):
        digitgan.load(folder)


def test_a_run_checkpoint_renamed_into_a_folder_is_refused(runs, exported, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(exported["seed"], folder)
    shutil.copy(runs["seed"] / "checkpoints" / "latest.safetensors", folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="not a digitgan-generator file"):
        digitgan.load(folder)


def test_an_existing_folder_is_not_overwritten(runs, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    for force in (False, True):
        with pytest.raises(ConfigError, match="--out"):
            export(runs["seed"], out, force=force)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    export(runs["seed"], empty)  # an empty folder is filled
    with pytest.raises(ConfigError, match="use --force"):
        export(runs["dcgan"], empty)
    assert digitgan.load(empty).config.model.arch == "mlp"
    export(runs["dcgan"], empty, force=True)  # an export is replaced with --force
    assert digitgan.load(empty).config.model.arch == "dcgan"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "model"]
    other = tmp_path / "other"  # a folder with files of those names that digitgan did not write
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "bert"}')
    (other / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(ConfigError, match="not a model folder digitgan exported"):
        export(runs["seed"], other, force=True)
    assert (other / "model.safetensors").read_bytes() == b"weights"


def test_a_failed_export_leaves_no_folder(runs, tmp_path, monkeypatch):
    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "_write_samples", fail)
    with pytest.raises(OSError, match="disk full"):
        export(runs["seed"], tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


def test_the_command_line_exports_and_refuses_in_one_line(runs, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["export", str(runs["cdcgan"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "exported README.md, config.json, model.safetensors, samples.png" in printed
    assert main(["export", str(runs["cdcgan"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("digitgan: error: --out") and err.count("\n") == 1
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "m2")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_onnx_without_the_extra_is_one_line(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'digitgan\[export\]'"):
        export(runs["seed"], tmp_path / "model", onnx=True)
    assert list(tmp_path.iterdir()) == []


@needs_ort
@pytest.mark.parametrize("name", NAMES)
def test_the_onnx_generator_draws_what_pytorch_draws(runs, tmp_path, name):
    result = export(runs[name], tmp_path / "model", onnx=True)
    assert result.onnx_max_diff is not None and result.onnx_max_diff <= 1e-4
    folder = result.path
    config = json.loads((folder / "config.json").read_text())
    assert config["onnx"]["opset"] == result.onnx_opset
    gan = digitgan.load(folder)
    session = onnxruntime.InferenceSession(
        str(folder / "generator.onnx"), providers=["CPUExecutionProvider"]
    )
    inputs = [i.name for i in session.get_inputs()]
    assert inputs == (["noise", "labels"] if name == "cdcgan" else ["noise"])
    for n in (1, 5):  # the batch axis is dynamic
        z = gan.noise(n, seed=11)
        feeds = {"noise": z.numpy()}
        labels = None
        if name == "cdcgan":
            labels = torch.arange(n) % 10
            feeds["labels"] = labels.numpy()
        (images,) = session.run(None, feeds)
        want = gan.decode(z, labels).numpy()
        assert images.shape == want.shape and float(np.abs(images - want).max()) <= 1e-4
        assert images.min() >= 0 and images.max() <= 1


@needs_ort
def test_an_onnx_file_that_disagrees_fails_and_leaves_no_folder(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "ONNX_TOLERANCE", -1.0)
    with pytest.raises(CheckpointError, match="differ from PyTorch's"):
        export(runs["seed"], tmp_path / "model", onnx=True)
    assert list(tmp_path.iterdir()) == []


def test_evaluate_and_serve_read_an_exported_folder(runs, tmp_path):
    folder = export(runs["cdcgan"], tmp_path / "model").path
    report = digitgan.evaluate(folder, n=100)
    assert report.samples == 100 and "label_accuracy" in report.metrics
    from digitgan.eval.evaluate import evaluate_real, save_evaluation

    floor = evaluate_real(n=100)
    assert save_evaluation(folder, report, floor) == folder / "eval.json"
    from digitgan.serve.model import model_info

    info = model_info(digitgan.load(folder))
    assert info["preset"] == "cdcgan" and info["num_classes"] == 10
    assert info["metrics"]["fid"] == report.metrics["fid"]
    export(folder, tmp_path / "again")  # an export of an export carries the saved scores
    assert "model-index" in _card(tmp_path / "again")[0]


@needs_ort
def test_the_command_line_prints_the_onnx_check(runs, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["export", str(runs["seed"]), "--out", str(out), "--onnx"]) == 0
    printed = capsys.readouterr().out
    assert "checked with ONNX Runtime on fresh noise: max abs difference from PyTorch" in printed
    assert (out / "generator.onnx").is_file()


def test_a_run_of_a_retired_preset_loads_and_its_card_rebuilds_it(small_data, tiny, tmp_path):
    """A run's config holds every value, so a run made from a preset since renamed or removed
    still loads, samples, resumes and exports; its card trains it again from the default."""
    cfg = tiny("hinge-sn", log__tb_every=0, log__sample_every=0, log__ckpt_every=2)
    cfg.preset = "retired-name"
    run = tmp_path / "run"
    digitgan.train(cfg, run, dataset=small_data, progress=False)
    gan = digitgan.load(run)
    assert gan.config.preset == "retired-name" and gan.sample(2).shape == (2, 1, 28, 28)
    assert digitgan.resume(run, iters=6, dataset=small_data, progress=False).step == 6
    command = export_module.reproduce_command(digitgan.load(run))
    assert command.startswith("digitgan train --preset seed ")
    args = shlex.split(command)
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    again = digitgan.build_config("seed", sets=sets, overrides={"train.iters": cfg.train.iters})
    skip = ("log.", "train.device", "data.data_dir")
    assert {k: v for k, v in again.flat().items() if not k.startswith(skip)} == {
        k: v for k, v in cfg.flat().items() if not k.startswith(skip)
    }
    for bad in ("", "../x", "a" * 65):
        with pytest.raises(ConfigError, match="preset: .* is not a preset name"):
            digitgan.Config.from_dict({**cfg.to_dict(), "preset": bad})
    with pytest.raises(ConfigError, match="preset must be a string, got 3"):
        digitgan.Config.from_dict({**cfg.to_dict(), "preset": 3})
