"""The bundled classifier: pinned checksums, accuracy, reproducible training, clear errors."""

import json
import shutil

import numpy as np
import pytest
import torch

from digitgan.data import Dataset, Split
from digitgan.errors import CheckpointError, ConfigError
from digitgan.eval.classifier import (
    SHIPPED,
    accuracy,
    classifier_for,
    load_classifier,
    sha256_file,
    train_classifier,
)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_weights_match_their_pinned_checksums(name):
    shipped = SHIPPED[name]
    assert sha256_file(shipped.path) == shipped.sha256
    info = load_classifier(shipped.path, shipped.sha256).info
    assert info["dataset"] == name and info["command"].startswith("digitgan classifier train")


def test_shipped_mnist_classifier_is_accurate_on_a_test_slice(mnist20k):
    model = classifier_for("mnist20k")
    assert classifier_for("mnist") is model  # the same digits: the same classifier
    first = Split(mnist20k.test.images[:1000], mnist20k.test.labels[:1000])
    assert accuracy(model, first) >= 0.985
    assert model.info["test_accuracy"] >= 0.99  # recorded once, over all 10,000
    # the documented feature layer: 128 non-negative values per image
    feats = model.features(torch.from_numpy(first.images[:8]).float() / 255)
    assert feats.shape == (8, 128) and (feats >= 0).all()


def test_a_damaged_weights_file_is_refused(tmp_path):
    shipped = SHIPPED["mnist20k"]
    copy = tmp_path / "w.safetensors"
    shutil.copy(shipped.path, copy)
    data = bytearray(copy.read_bytes())
    data[-10] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"w\.safetensors is damaged: expected sha256"):
        load_classifier(copy, shipped.sha256)
    with pytest.raises(CheckpointError, match="not a digitgan-classifier file"):
        load_classifier(_checkpoint_like(tmp_path))


def _checkpoint_like(tmp_path):
    from digitgan.store.checkpoint import save_checkpoint

    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, {"a": torch.zeros(1)}, {"step": 1})
    return path


def test_no_classifier_for_a_custom_dataset_says_how_to_get_one():
    with pytest.raises(ConfigError, match="digitgan classifier train --dataset idx:/d"):
        classifier_for("idx:/d")


def test_training_is_reproducible_from_its_seed(tmp_path, small_data):
    data = Dataset(
        "mnist20k",
        Split(small_data.train.images[:300], small_data.train.labels[:300]),
        small_data.test,
        10,
        small_data.class_names,
    )
    lines = []
    kw = {"seed": 3, "epochs": 1, "val_size": 60, "log": lines.append}
    for sub in ("a", "b", "c"):
        (tmp_path / sub).mkdir()
    a = train_classifier(data, tmp_path / "a" / "w.safetensors", **kw)
    b = train_classifier(data, tmp_path / "b" / "w.safetensors", **kw)
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    c = train_classifier(data, tmp_path / "c" / "w.safetensors", **{**kw, "seed": 4})
    assert torch.equal(torch.rand(3), before)  # the caller's random state is left alone
    # the same command and seed: the same bytes; another seed: other weights
    assert a.sha256 == b.sha256 != c.sha256
    assert a.path.read_bytes() == b.path.read_bytes()
    assert len(lines) == 3 and lines[0].startswith("epoch 1/1: loss ")
    meta = json.loads((tmp_path / "a" / "w.json").read_text())
    assert meta["command"] == (
        "digitgan classifier train --dataset mnist20k --seed 3 --epochs 1 --out w.safetensors"
    )
    assert meta["test_accuracy"] == a.test_accuracy and meta["val_size"] == 60
    model = load_classifier(a.path)
    assert accuracy(model, data.test) == pytest.approx(a.test_accuracy, abs=0.01)
    assert np.isfinite(a.val_accuracy)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"out": "w.pt"}, "must end in .safetensors"),
        ({"out": "missing/w.safetensors"}, "does not exist"),
        ({"epochs": 0}, "--epochs 0"),
        ({"val_size": 600}, "val_size 600"),
        ({"val_size": 0}, "val_size 0: hold out at least 1"),
    ],
)
def test_training_options_are_checked_first(tmp_path, small_data, kw, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kw = {"out": "w.safetensors", **kw}
    with pytest.raises(ConfigError, match=message):
        train_classifier(small_data, **kw)
