"""Fixtures of the evaluation tests: a tiny run, a small idx: dataset and the command line."""

import numpy as np
import pytest

import digitgan


@pytest.fixture
def tiny_run(tmp_path, tiny_cfg, small_data):
    """A 6-iteration run of the shrunk seed model."""
    out = tmp_path / "run"
    cfg = tiny_cfg.replace(log__tb_every=0, log__sample_every=0, log__print_every=0)
    digitgan.train(cfg, out, dataset=small_data, progress=False)
    return out


@pytest.fixture(scope="module")
def small_idx(tmp_path_factory, small_data):
    """``small_data`` as an idx: dataset spec (600 training and 200 test digits)."""
    from digitgan.data import IDX_NAMES, write_idx

    folder = tmp_path_factory.mktemp("idx")
    for name, arr in zip(
        IDX_NAMES,
        (
            small_data.train.images[:, 0],
            small_data.train.labels.astype(np.uint8),
            small_data.test.images[:, 0],
            small_data.test.labels.astype(np.uint8),
        ),
        strict=True,
    ):
        write_idx(folder / name, arr)
    return f"idx:{folder}"


@pytest.fixture
def cli(capsys):
    """Run the command line in this process: (exit status, stdout, stderr)."""
    from digitgan.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
