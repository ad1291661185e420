"""Checkpoints are untrusted input: read without pickle, every part checked against the model
its config describes; a damaged, tampered or foreign file is a CheckpointError that names it,
never an error from deep inside PyTorch, and never a huge allocation."""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import struct

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save as st_save

import digitgan
from digitgan.data import load_dataset
from digitgan.errors import CheckpointError
from digitgan.store.checkpoint import read_checkpoint
from digitgan.training.loop import make_step, restore_trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # hundreds of tiny models

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def original(trained_template):
    """(bytes, tensors, metadata) of a real checkpoint: a tiny model after 2 iterations."""
    path = trained_template / "checkpoints" / "latest.safetensors"
    tensors, meta = read_checkpoint(path)
    return Original(path.read_bytes(), tensors, meta)


@pytest.fixture(scope="module")
def dataset(tiny_data):
    """The run's dataset (64 images of 8x8), for restoring trainers."""
    return load_dataset(tiny_data)


class Original(tuple):
    """(bytes, tensors, metadata), with a short repr for hypothesis's reports."""

    def __new__(cls, *parts):
        return super().__new__(cls, parts)

    def __repr__(self):
        return "<the original checkpoint>"


def encode(tensors: dict, meta) -> bytes:
    """A safetensors file with ``meta`` as its digitgan metadata (no checks: may be tampered)."""
    return st_save(tensors, metadata={"digitgan": json.dumps(meta)})


class Evil:
    """Unpickling this creates a file: proof that a loader ran pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _header_edit(data: bytes, old: bytes, new: bytes) -> bytes:
    n = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + n].replace(old, new, 1)
    return len(header).to_bytes(8, "little") + header + data[8 + n :]


def _tensor(tensors, meta, name, value):
    return encode({**tensors, name: value}, meta)


def _without(tensors, meta, name):
    return encode({k: v for k, v in tensors.items() if k != name}, meta)


def _meta(tensors, meta, path, value):
    meta = copy.deepcopy(meta)
    *parents, last = path
    target = meta
    for key in parents:
        target = target[key]
    if value is None:
        del target[last]
    else:
        target[last] = value
    return encode(tensors, meta)


W = "G.body.fc1.weight"  # (16, 100)

# name -> (how to damage (bytes, tensors, meta) -> bytes, expected message, sampling too?)
DAMAGE = {
    "empty": (lambda d, t, m: b"", "not a safetensors checkpoint", True),
    "cut-in-header": (lambda d, t, m: d[:40], "not a safetensors checkpoint", True),
    "cut-in-tensors": (lambda d, t, m: d[:-100], "damaged checkpoint", True),
    "huge-header-length": (
        lambda d, t, m: struct.pack("<Q", 10**12) + d[8:],
        "not a safetensors checkpoint",
        True,
    ),
    "header-not-json": (lambda d, t, m: d[:8] + b"x" + d[9:], "not a digitgan checkpoint", True),
    "offsets-past-the-end": (
        lambda d, t, m: _header_edit(d, b'"data_offsets":[0,', b'"data_offsets":[9,'),
        "damaged checkpoint",
        True,
    ),
    "another-program": (lambda d, t, m: st_save(t), "not a digitgan checkpoint", True),
    "torch-save-renamed": (
        lambda d, t, m: (torch.save(t, buf := io.BytesIO()), buf.getvalue())[1],
        "not a safetensors checkpoint",
        True,
    ),
    "future-version": (
        lambda d, t, m: encode(t, {**m, "version": 2}),
        "format version 2, this digitgan reads version 1",
        True,
    ),
    "step-negative": (lambda d, t, m: _meta(t, m, ["step"], -1), "field 'step'", True),
    "image-shape": (lambda d, t, m: _meta(t, m, ["image_shape"], [1, 28]), "'image_shape'", True),
    "no-config": (lambda d, t, m: _meta(t, m, ["config"], None), "field 'config'", True),
    "config-invalid": (
        lambda d, t, m: _meta(t, m, ["config", "optim", "lr_g"], "fast"),
        "the config it holds is invalid: optim.lr_g: expected a number",
        True,
    ),
    "config-other-model": (
        lambda d, t, m: _meta(t, m, ["config", "model", "g_hidden"], [32]),
        "G.body.fc1.weight has shape (16, 100) torch.float32, the model expects (32, 100)",
        True,
    ),
    "config-huge-model": (  # would need 400 GB if it were built before the check
        lambda d, t, m: _meta(t, m, ["config", "model", "g_hidden"], [10**9]),
        "the model expects (1000000000, 100)",
        True,
    ),
    "wrong-dtype": (
        lambda d, t, m: _tensor(t, m, W, t[W].double()),
        f"{W} has shape (16, 100) torch.float64",
        True,
    ),
    "wrong-shape": (
        lambda d, t, m: _tensor(t, m, W, t[W][:, :99].contiguous()),
        f"{W} has shape (16, 99)",
        True,
    ),
    "missing-tensor": (lambda d, t, m: _without(t, m, W), "missing body.fc1.weight", True),
    "extra-tensor": (
        lambda d, t, m: _tensor(t, m, "G.body.fc9.weight", torch.zeros(2)),
        "unexpected body.fc9.weight",
        True,
    ),
    "nan-weight": (
        lambda d, t, m: _tensor(t, m, W, torch.full_like(t[W], float("nan"))),
        f"G.{W[2:]} holds NaN or infinite values",
        True,
    ),
    # training state: sampling does not need it, resuming does
    "adam-state-shape": (
        lambda d, t, m: _tensor(t, m, "opt_d.0.exp_avg", torch.zeros(3)),
        "optimizer state opt_d does not match: 0.exp_avg is not a tensor of shape (16, 64)",
        False,
    ),
    "adam-state-missing": (
        lambda d, t, m: _without(t, m, "opt_g.1.exp_avg_sq"),
        "optimizer state opt_g does not match: parameter 1 has state ['exp_avg', 'step']",
        False,
    ),
    "adam-state-for-no-parameter": (
        lambda d, t, m: _tensor(t, m, "opt_g.7.step", torch.tensor(1.0)),
        "state for parameter 7, the model has 4",
        False,
    ),
    "no-optimizer-state": (
        lambda d, t, m: _meta(t, m, ["opt_g"], None),
        "holds no training state (opt_g missing)",
        False,
    ),
    "data-order-not-a-permutation": (
        lambda d, t, m: _tensor(t, m, "data.perm", torch.zeros_like(t["data.perm"])),
        "data order is not a permutation",
        False,
    ),
    "data-position": (lambda d, t, m: _meta(t, m, ["data_pos"], 10**9), "not in 0..64", False),
    "random-state": (
        lambda d, t, m: _tensor(t, m, "rng.noise", torch.zeros(3, dtype=torch.uint8)),
        "random or data-order state unusable",
        False,
    ),
}


@pytest.mark.parametrize("name", DAMAGE)
def test_damaged_checkpoint_is_refused_clearly(name, original, dataset, tmp_path):
    damage, message, for_sampling = DAMAGE[name]
    path = tmp_path / "ckpt.safetensors"
    path.write_bytes(damage(*original))
    with pytest.raises(CheckpointError) as caught:
        restore_trainer(path, dataset=dataset)
    assert str(path) in str(caught.value) and message in str(caught.value)
    if for_sampling:
        with pytest.raises(CheckpointError) as caught:
            digitgan.load(path)
        assert str(path) in str(caught.value) and message in str(caught.value)
    else:  # the generator is intact: it can still be sampled from
        assert digitgan.load(path).sample(2).shape == (2, 1, 8, 8)


def test_pickle_is_never_run(original, dataset, tmp_path):
    marker = tmp_path / "pickle-was-run"
    path = tmp_path / "evil.safetensors"
    for payload in (pickle.dumps(Evil(marker)), encode(original[1], "x") + pickle.dumps(1)):
        path.write_bytes(payload)
        with pytest.raises(CheckpointError, match="not a|damaged checkpoint"):
            digitgan.load(path)
        with pytest.raises(CheckpointError):
            restore_trainer(path, dataset=dataset)
    assert not marker.exists()


def test_special_files_are_refused(tmp_path):
    fifo = tmp_path / "fifo.safetensors"
    os.mkfifo(fifo)  # opening it for reading would wait forever for a writer
    with pytest.raises(CheckpointError, match=f"{fifo}: not a regular file"):
        digitgan.load(fifo)


def _accepted_checkpoint_works(path, dataset):
    """Load ``path`` for sampling and for training; CheckpointError is the only acceptable
    failure, and what is accepted must then work."""
    try:
        digitgan.load(path).generate(2)
    except CheckpointError:
        pass
    try:
        trainer, _ = restore_trainer(path, dataset=dataset)
    except CheckpointError:
        return
    make_step(trainer)()


@FUZZ
@given(data=st.data())
def test_fuzz_damaged_bytes(original, dataset, tmp_path, mutate, data):
    content = mutate(data, original[0])
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(content)
    _accepted_checkpoint_works(path, dataset)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


def _paths(value, prefix=()):
    """Every key path into a JSON value."""
    if isinstance(value, dict):
        for key, sub in value.items():
            yield (*prefix, key)
            yield from _paths(sub, (*prefix, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield (*prefix, i)
            yield from _paths(sub, (*prefix, i))


@FUZZ
@given(data=st.data())
def test_fuzz_tampered_metadata(original, dataset, tmp_path, data):
    _, tensors, meta = original
    meta = copy.deepcopy(meta)
    for _ in range(data.draw(st.integers(1, 3))):
        *parents, last = data.draw(st.sampled_from(sorted(_paths(meta), key=str)))
        target = meta
        for key in parents:
            target = target[key]
        if data.draw(st.booleans()) and isinstance(target, dict):
            del target[last]
        else:
            target[last] = data.draw(JSON)
        if not any(True for _ in _paths(meta)):
            break
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(encode(tensors, meta))
    _accepted_checkpoint_works(path, dataset)


DTYPES = [torch.float32, torch.float64, torch.float16, torch.int64, torch.uint8, torch.bool]


@FUZZ
@given(data=st.data())
def test_fuzz_tampered_tensors(original, dataset, tmp_path, data):
    _, tensors, meta = original
    tensors = dict(tensors)
    for _ in range(data.draw(st.integers(1, 3))):
        name = data.draw(st.sampled_from(sorted(tensors)) | st.text(min_size=1, max_size=12))
        if name in tensors and data.draw(st.booleans()):
            del tensors[name]
            continue
        shape = data.draw(st.lists(st.integers(0, 4), max_size=3))
        dtype = data.draw(st.sampled_from(DTYPES))
        tensors[name] = torch.randint(0, 3, shape).to(dtype)
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(encode(tensors, meta))
    _accepted_checkpoint_works(path, dataset)


def test_nan_in_the_optimizer_state_is_refused_at_load(trained_run):
    """A NaN Adam moment would otherwise be taken in, and the run's divergence message would
    then name this checkpoint as the last good one."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = trained_run / "checkpoints" / "latest.safetensors"
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    key = next(k for k in tensors if k.startswith("opt_d.") and k.endswith("exp_avg"))
    tensors[key].view(-1)[0] = float("nan")
    save_file(tensors, path, metadata=metadata)
    with pytest.raises(CheckpointError, match=r"optimizer state opt_d .* NaN or infinite"):
        restore_trainer(path)


def test_a_step_beyond_2_to_the_31_is_refused(trained_run):
    """A step of 10^30 in the metadata would be taken in and fail later in TensorBoard."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    path = trained_run / "checkpoints" / "latest.safetensors"
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    meta = json.loads(metadata["digitgan"])
    meta["step"] = 10**30
    save_file(tensors, path, metadata={"digitgan": json.dumps(meta)})
    with pytest.raises(CheckpointError, match=r"metadata field 'step' is missing or not an int"):
        digitgan.load(path)
    with pytest.raises(CheckpointError, match="metadata field 'step'"):
        restore_trainer(path)
