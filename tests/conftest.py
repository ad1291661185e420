import contextlib
import itertools
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Mirror, mirror_of
from hypothesis import strategies as st

from digitgan.config import preset
from digitgan.data import Dataset, Split, load_dataset


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module's tests: for tiny models on a busy machine, two threads
    make each op up to ~100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mnist20k() -> Dataset:
    return load_dataset("mnist20k")


@pytest.fixture(scope="session")
def small_data(mnist20k) -> Dataset:
    """600 real training digits and 200 test digits: enough for fast end-to-end runs."""
    t, v = mnist20k.train, mnist20k.test
    return Dataset(
        name="mnist20k",
        train=Split(np.ascontiguousarray(t.images[:600]), t.labels[:600].copy()),
        test=Split(np.ascontiguousarray(v.images[:200]), v.labels[:200].copy()),
        num_classes=10,
        class_names=mnist20k.class_names,
    )


@pytest.fixture
def tiny_cfg():
    """The seed model, shrunk: a few iterations with every output written."""
    return preset("seed").replace(
        data__batch_size=16,
        model__mlp__g_hidden=[32],
        model__mlp__d_hidden=[32],
        train__iters=6,
        train__device="cpu",
        log__sample_every=2,
        log__print_every=3,
        log__tb_every=2,
        log__ckpt_every=3,
        log__grid_rows=2,
    )


@pytest.fixture(scope="session")
def cond_run(tmp_path_factory, small_data) -> Path:
    """A real class-conditional run, shared read-only: 3 iterations of a small cdcgan."""
    import digitgan

    cfg = preset("cdcgan").replace(
        train__iters=3,
        data__batch_size=16,
        model__dcgan__g_channels=8,
        model__dcgan__d_channels=8,
        log__tb_every=0,
        log__sample_every=0,
        train__device="cpu",
        train__precision="fp32",
    )
    out = tmp_path_factory.mktemp("cond") / "run"
    digitgan.train(cfg, out, dataset=small_data, progress=False)
    return out


@pytest.fixture(scope="session")
def mutate() -> Callable[[st.DataObject, bytes], bytes]:
    """Return a function that damages bytes with a few random edits, drawn with hypothesis."""

    def mutate(data: st.DataObject, original: bytes) -> bytes:
        content = bytearray(original)
        for _ in range(data.draw(st.integers(1, 4))):
            where = data.draw(st.integers(0, max(len(content) - 1, 0)))
            operation = data.draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
            if operation == "set" and content:
                content[where] = data.draw(st.integers(0, 255))
            elif operation == "insert":
                content[where:where] = data.draw(st.binary(min_size=1, max_size=8))
            elif operation == "delete":
                del content[where : where + data.draw(st.integers(1, 8))]
            else:
                del content[where:]
        return bytes(content)

    return mutate


@pytest.fixture(scope="session")
def tiny():
    """A factory ``tiny(name, device="cpu", **overrides)``: preset ``name`` shrunk to a few
    small iterations (conv presets: 4 base channels, 3 categories), every output on."""
    return _shrink


def _shrink(name: str, device: str = "cpu", **overrides):
    cfg = preset(name)
    conv = {"model__dcgan__g_channels": 4, "model__dcgan__d_channels": 4} if name != "seed" else {}
    small = {"model__mlp__g_hidden": [16], "model__mlp__d_hidden": [16]} if name == "seed" else {}
    if cfg.model.categories:  # fewer than z's 8 entries; a code in parts: 2 values each
        small["model__categories"] = 3 if cfg.model.code_parts == 1 else 2**cfg.model.code_parts
    base = {
        "data__batch_size": 8,
        "model__z_dim": 8,
        "train__device": device,
        "train__precision": "fp32",  # the same arithmetic whether or not the CPU has bf16 units
        "train__iters": 4,
        "log__sample_every": 2,
        "log__tb_every": 2,
        "log__print_every": 0,
        "log__ckpt_every": 0,
        "log__grid_rows": 2,
    }
    return cfg.replace(**base | conv | small | overrides)


@pytest.fixture
def make_mirror(tmp_path: Path) -> Iterator[Callable[[], Mirror]]:
    """Return a function that starts a local HTTP mirror serving an empty temporary folder."""
    with contextlib.ExitStack() as stack:
        count = itertools.count()

        def make() -> Mirror:
            root = tmp_path / f"mirror{next(count)}"
            root.mkdir()
            return stack.enter_context(mirror_of(root))

        yield make


@pytest.fixture
def dead_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
