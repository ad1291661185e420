"""Every file reader, fed random bytes and damaged copies of valid files through the command
line: the command succeeds, or prints exactly one line starting with ``digitgan: error:``
and exits with status 2. Never a traceback.

The readers: IDX files (plain and gzipped), .npz archives, the .npy samples and labels and
the classifier weights of ``digitgan evaluate``, TOML config files, and a run's metrics.jsonl
(read by ``digitgan plot`` and ``digitgan train --resume``). The commands run in this process
(``digitgan.cli.main``), so that each example costs milliseconds; the byte-level fuzz tests of
the readers themselves are in tests/data/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digitgan.cli import main
from digitgan.config import preset
from digitgan.data import write_idx
from digitgan.data.datasets import IDX_NAMES
from digitgan.eval.classifier import SHIPPED

pytestmark = pytest.mark.usefixtures("one_thread")

FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def run_cli(capsys: pytest.CaptureFixture, argv: list[str]) -> None:
    """Run a command: success, or status 2 with one ``digitgan: error:`` line on stderr."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors: none expected here
        code = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    if code != 0:
        assert code == 2, (code, err)
        assert err.count("\n") == 1 and err.startswith("digitgan: error: "), err


def damaged(data: st.DataObject, mutate, valid: bytes) -> bytes:
    """Random bytes, or ``valid`` with a few random edits."""
    if data.draw(st.booleans(), label="random bytes"):
        return data.draw(st.binary(max_size=400), label="bytes")
    return mutate(data, valid)


class Files(dict):
    """The valid files, by name; shown short in hypothesis's reports."""

    def __repr__(self) -> str:
        return f"Files({', '.join(self)})"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    """The bytes of a valid file of each kind, and a small dataset (``tiny``) to evaluate
    against."""
    folder = tmp_path_factory.mktemp("valid")
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (6, 8, 8), dtype=np.uint8),
        "y_train": (np.arange(6) % 3).astype(np.uint8),
        "x_test": rng.integers(0, 256, (4, 8, 8), dtype=np.uint8),
        "y_test": (np.arange(4) % 3).astype(np.uint8),
    }
    np.savez(folder / "tiny.npz", **arrays)
    np.savez_compressed(folder / "packed.npz", **arrays)
    write_idx(folder / "images", arrays["x_train"])
    write_idx(folder / "images.gz", arrays["x_train"])
    write_idx(folder / "labels.gz", arrays["y_train"])
    colour = rng.integers(0, 256, (6, 3, 8, 8), dtype=np.uint8)  # (N, C, H, W)
    write_idx(folder / "images4d", colour)
    write_idx(folder / "images4d.gz", colour)
    np.save(folder / "samples.npy", arrays["x_test"])
    np.save(folder / "labels.npy", arrays["y_test"].astype(np.int64))
    (folder / "config.toml").write_text(preset("dcgan").to_toml())
    names = ["tiny.npz", "packed.npz", "images", "images.gz", "images4d", "images4d.gz"]
    names += ["labels.gz", "samples.npy"]
    names += ["labels.npy", "config.toml"]
    valid = {name: (folder / name).read_bytes() for name in names}
    return Files(valid, classifier=SHIPPED["mnist20k"].path.read_bytes(), tiny=folder)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(
    which=st.sampled_from(["images", "images.gz", "labels.gz"]),
    dims=st.sampled_from(["", "4d"]),  # (N, H, W) or (N, C, H, W) images
    data=st.data(),
)
def test_fuzz_idx_folder(capsys, scratch, files, mutate, which, dims, data):
    folder = scratch / "idx"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    gz = ".gz" if which == "images.gz" else ""
    images = IDX_NAMES[0] + gz
    (folder / images).write_bytes(files[f"images{dims}{gz}"])
    (folder / f"{IDX_NAMES[1]}.gz").write_bytes(files["labels.gz"])
    valid = files[f"images{dims}{gz}" if which != "labels.gz" else which]
    target = folder / (f"{IDX_NAMES[1]}.gz" if which == "labels.gz" else images)
    target.write_bytes(damaged(data, mutate, valid))
    run_cli(capsys, ["data", "info", f"idx:{folder}"])


@FUZZ
@given(which=st.sampled_from(["tiny.npz", "packed.npz"]), data=st.data())
def test_fuzz_npz(capsys, scratch, files, mutate, which, data):
    path = scratch / "fuzz.npz"
    path.write_bytes(damaged(data, mutate, files[which]))
    run_cli(capsys, ["data", "info", f"npz:{path}"])


@FUZZ
@given(which=st.sampled_from(["samples.npy", "labels.npy"]), data=st.data())
def test_fuzz_npy_samples_and_labels(capsys, scratch, files, mutate, which, data):
    samples, labels = scratch / "samples.npy", scratch / "labels.npy"
    samples.write_bytes(files["samples.npy"])
    labels.write_bytes(files["labels.npy"])
    (scratch / which).write_bytes(damaged(data, mutate, files[which]))
    tiny = f"npz:{files['tiny'] / 'tiny.npz'}"
    classifier = SHIPPED["mnist20k"].path
    argv = ["evaluate", samples, "--labels", labels, "--dataset", tiny, "--classifier", classifier]
    run_cli(capsys, argv)


@FUZZ
@given(data=st.data())
def test_fuzz_classifier_weights(capsys, scratch, files, mutate, data):
    weights = scratch / "classifier.safetensors"
    weights.write_bytes(damaged(data, mutate, files["classifier"]))
    samples = scratch / "valid-samples.npy"
    samples.write_bytes(files["samples.npy"])
    tiny = f"npz:{files['tiny'] / 'tiny.npz'}"
    run_cli(capsys, ["evaluate", samples, "--dataset", tiny, "--classifier", weights])


@FUZZ
@given(text=st.none() | st.text(max_size=200), data=st.data())
def test_fuzz_config_file(capsys, scratch, files, mutate, text, data):
    path = scratch / "config.toml"
    if text is None:
        path.write_bytes(damaged(data, mutate, files["config.toml"]))
    else:
        path.write_text(text)
    run_cli(capsys, ["config", "--config", path])


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory, trained_template) -> Path:
    return Path(shutil.copytree(trained_template, tmp_path_factory.mktemp("fuzz-run") / "run"))


@settings(FUZZ, max_examples=20)
@given(command=st.sampled_from(["plot", "resume"]), data=st.data())
def test_fuzz_metrics_file(capsys, fuzz_run, trained_template, mutate, command, data):
    valid = (trained_template / "metrics.jsonl").read_bytes()
    (fuzz_run / "metrics.jsonl").write_bytes(damaged(data, mutate, valid))
    if command == "plot":
        run_cli(capsys, ["plot", fuzz_run])
    else:
        run_cli(capsys, ["train", "--resume", fuzz_run, "--iters", "2", "--no-progress"])
