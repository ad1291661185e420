"""The classification accuracy score: a classifier trained on a conditional model's samples."""

import json
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from digitgan.config import preset
from digitgan.data import Dataset, Split
from digitgan.errors import ConfigError
from digitgan.eval.classifier import SHIPPED
from digitgan.eval.evaluate import CasRecipe, classification_accuracy, evaluate
from digitgan.eval.metrics import classification_accuracy_score
from digitgan.sampling import Sampler

pytestmark = pytest.mark.usefixtures("one_thread")  # small networks

RECIPE = CasRecipe(n=500, epochs=3, batch_size=32)  # about 1.5 s per classifier


class Drawer(nn.Module):
    """A stand-in conditional generator: for class y, a real digit of class ``y + shift``
    (chosen by the noise) from ``images``; with ``noise``, uniform noise images instead."""

    num_classes = 10
    out_range = (0.0, 1.0)

    def __init__(self, images, labels, shift: int = 0, noise: bool = False):
        super().__init__()
        self.images = torch.as_tensor(images).float() / 255
        self.labels = torch.as_tensor(labels).long()
        self.shift, self.noise = shift, noise
        self.unused = nn.Parameter(torch.zeros(1))  # a Sampler finds its device here
        # its own stream: drawn from the global one, the noise depended on the tests run before
        self.noise_gen = torch.Generator().manual_seed(0)

    def forward(self, z, y):
        if self.noise:
            return torch.rand((len(z), *self.images.shape[1:]), generator=self.noise_gen)
        out = []
        for zi, yi in zip(z, y, strict=True):
            (pool,) = torch.nonzero(self.labels == (yi + self.shift) % 10, as_tuple=True)
            out.append(self.images[pool[int(zi.abs().sum() * 1000) % len(pool)]])
        return torch.stack(out)


@pytest.fixture(scope="module")
def digits(mnist20k):
    """500 training digits and 1,000 test digits of mnist20k, and 5,000 other training digits
    for the stand-in generators to draw from."""
    t, v = mnist20k.train, mnist20k.test
    data = Dataset(
        "mnist20k",
        Split(t.images[:500], t.labels[:500]),
        Split(v.images[:1000], v.labels[:1000]),
        10,
        mnist20k.class_names,
    )
    return data, (t.images[5000:], t.labels[5000:])


def _sampler(module: nn.Module) -> Sampler:
    return Sampler(module, preset("cdcgan"), {"image_shape": [1, 28, 28], "step": 0}, None)


def test_real_digits_score_as_real_data_and_noise_as_chance(digits):
    data, (images, labels) = digits
    real, per_class = classification_accuracy(_sampler(Drawer(images, labels)), data, RECIPE)
    assert real["cas_samples"] == real["cas_real_samples"] == 500
    assert real["cas_real"] > 0.8  # 500 real digits, 3 epochs: 0.87-0.91 over seeds 0-2
    # other real digits of the asked classes train as good a classifier
    assert real["cas"] == pytest.approx(real["cas_real"], abs=0.06)
    # per class: the accuracy on each class's test digits, which they average to
    counts = np.bincount(data.test.labels, minlength=10)
    assert np.dot(per_class, counts) / counts.sum() == pytest.approx(real["cas"])
    noise, _ = classification_accuracy(_sampler(Drawer(images, labels, noise=True)), data, RECIPE)
    assert noise["cas"] < 0.2  # chance: 0.1
    assert noise["cas_real"] == real["cas_real"]  # the same recipe and seed: the same classifier


def test_perfect_digits_of_the_wrong_class_score_near_zero(digits):
    """What FID and precision cannot see: the samples are real digits, labelled wrongly."""
    data, (images, labels) = digits
    gan = _sampler(Drawer(images, labels, shift=1))
    asked = gan.labels(500)
    drawn = gan.generate(500, 0, asked)
    score = classification_accuracy_score(
        drawn, asked, data.test.images, data.test.labels, data.class_names, **RECIPE.training()
    )
    assert score["accuracy"] < 0.05


def test_evaluate_cas_of_a_conditional_run(cond_run, small_idx, tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(cond_run, run)
    cas = ["--cas", "--cas-n", "101", "--cas-epochs", "1", "--cas-batch-size", "50"]  # 50 + 50 + 1
    data = ["--dataset", small_idx, "--classifier", str(SHIPPED["mnist20k"].path), "--n", "50"]
    code, out, err = cli("evaluate", run, *cas, "--json", *data)
    assert code == 0, err
    doc = json.loads(out)
    m = doc["metrics"]
    assert 0 <= m["cas"] <= 1 and 0 <= m["cas_real"] <= 1
    assert m["cas_samples"] == m["cas_real_samples"] == 101
    assert doc["cas_recipe"] == {"n": 101, "epochs": 1, "batch_size": 50, "lr": 0.002}
    assert list(doc["cas_class_accuracy"]) == [str(i) for i in range(10)]
    assert "CAS, generated digits: epoch 1/1: loss" in err and "CAS, real digits: epoch 1/1" in err
    code, out, err = cli("evaluate", run, *cas, "--save", *data)
    assert code == 0, err
    assert "CAS" in out and "trained on 101 real training images" in out
    saved = json.loads((run / "eval.json").read_text())
    assert saved["metrics"]["cas"] == m["cas"]  # reproducible from the seed
    assert saved["floor"]["cas"] == m["cas_real"]  # its floor: the classifier of real digits
    # without --cas: no CAS keys, as before
    code, out, err = cli("evaluate", run, "--json", *data)
    assert code == 0, err
    doc = json.loads(out)
    assert "cas" not in doc["metrics"] and "cas_recipe" not in doc


def test_cas_mistakes_are_one_line_errors(tiny_run, small_data, tmp_path, cli):
    np.save(tmp_path / "s.npy", np.zeros((10, 28, 28), np.uint8))
    for args, message in [
        ([tiny_run, "--cas"], "--cas: this model is unconditional"),
        ([tmp_path / "s.npy", "--cas"], "--cas: only for a conditional model"),
        (["--real", "--cas"], "--cas: not with --real"),
        ([tiny_run, "--cas-n", "100"], "--cas-n: only with --cas"),
        ([tiny_run, "--cas", "--cas-epochs", "0"], "--cas-epochs 0: expected an integer from 1"),
        ([tiny_run, "--cas", "--cas-n", "1"], "--cas-n 1: expected an integer from 2 to 100,000"),
        ([tiny_run, "--cas", "--cas-lr", "nan"], "--cas-lr nan: expected a positive"),
        ([tiny_run, "--cas", "--cas-batch-size", "-3"], "--cas-batch-size -3: expected"),
    ]:
        code, _, err = cli("evaluate", *args)
        assert code == 2 and err.count("\n") == 1 and message in err, err
    with pytest.raises(ConfigError, match="--cas: this model is unconditional"):
        evaluate(tiny_run, n=20, dataset=small_data, cas=True)
    with pytest.raises(ConfigError, match="expected True, False or a CasRecipe"):
        evaluate(tiny_run, n=20, dataset=small_data, cas="yes")
