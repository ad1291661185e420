"""Helpers for the reliability tests: the command line in subprocesses, with tiny models."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import digitgan
from digitgan.cli import main

HERE = Path(__file__).parent

TINY = [
    "--batch-size",
    "16",
    "--set",
    "model.mlp.g_hidden=[16]",
    "--set",
    "model.mlp.d_hidden=[16]",
    "--set",
    "log.sample_every=0",
    "--set",
    "log.print_every=0",
    "--set",
    "log.histograms=false",
    "--no-progress",
]
"""Options for a tiny, fast model that still writes checkpoints and metrics."""


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A dataset spec for 64 random 8x8 images: checkpoints of ~50 KB, fast to write."""
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (64, 8, 8), dtype=np.uint8),
        y_train=np.arange(64, dtype=np.uint8) % 10,
    )
    return f"npz:{path}"


MEMORY_LIMIT = 6 * 2**30
"""The address space (RLIMIT_AS) a command gets in the memory tests: 6 GiB, far below what the
files claim. Measured on CPU-only PyTorch: `digitgan data info` needs under 0.2 GiB; importing
torch took about 0.6 GiB on an Intel Xeon and between 3 and 4 GiB on an AMD EPYC (where 1.5 GiB
failed to map libtorch_cpu.so)."""


def limit_memory(limit: int = MEMORY_LIMIT) -> Callable[[], None]:
    """A ``preexec_fn`` that caps the child's address space at ``limit`` bytes: allocating
    beyond it fails (MemoryError, or an allocation error from PyTorch) instead of swapping."""

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return preexec


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Check that a command failed as a user's mistake: status 2, one line on stderr starting
    with ``digitgan: error:`` and holding each of ``fragments``; return that line."""
    err = result.stderr
    assert result.returncode == 2, f"status {result.returncode}: {err[-3000:]}"
    assert err.count("\n") == 1 and err.startswith("digitgan: error: "), err[-3000:]
    for fragment in fragments:
        assert fragment in err, err
    return err


class CLI:
    """Runs ``python -m digitgan`` from this checkout in subprocesses, and stops them at exit."""

    tiny = TINY

    def __init__(self):
        self.env = {**os.environ, "PYTHONPATH": str(Path(digitgan.__file__).parents[1])}
        self.started: list[subprocess.Popen] = []

    def command(self, *args: str, slow_writes: bool = False, prefix=()) -> list[str]:
        """The command line; ``prefix`` runs it through a wrapper such as setpriv."""
        entry = [str(HERE / "slow_writer.py")] if slow_writes else ["-m", "digitgan"]
        return [*prefix, sys.executable, *entry, *map(str, args)]

    def run(self, *args: str, slow_writes=False, prefix=(), **kw) -> subprocess.CompletedProcess:
        kw.setdefault("timeout", 300)
        kw.setdefault("env", self.env)
        return subprocess.run(
            self.command(*args, slow_writes=slow_writes, prefix=prefix),
            capture_output=True,
            text=True,
            **kw,
        )

    def run_limited(self, *args: str, limit: int = MEMORY_LIMIT) -> subprocess.CompletedProcess:
        """Run a command with its address space capped at ``limit`` bytes (and one thread
        for PyTorch and OpenMP)."""
        env = {**self.env, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        return self.run(*args, env=env, preexec_fn=limit_memory(limit))

    def start(self, *args: str, slow_writes: bool = False, **kw) -> subprocess.Popen:
        proc = subprocess.Popen(
            self.command(*args, slow_writes=slow_writes),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            **kw,
        )
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture
def cli() -> Iterator[CLI]:
    runner = CLI()
    yield runner
    runner.stop_all()


@pytest.fixture
def wait_for() -> Callable[..., None]:
    """Return ``wait_for(condition, proc, timeout=120)``: poll until ``condition()`` holds,
    failing early (with the process's stderr) if ``proc`` ends first."""

    def wait(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"process ended (status {proc.returncode}) too early: {err}")
            if time.monotonic() > deadline:
                pytest.fail("timed out waiting")
            time.sleep(0.002)

    return wait


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory: pytest.TempPathFactory, tiny_data: str) -> Path:
    """A run trained for 2 iterations (in this process, through the command line), with a
    checkpoint at iteration 2. Do not change it: use ``trained_run`` for a copy to change."""
    run = tmp_path_factory.mktemp("trained") / "run"
    options = ["--iters", "2", "--dataset", tiny_data, "--set", "log.ckpt_every=2", *TINY]
    assert main(["train", "--out", str(run), *options]) == 0
    return run


@pytest.fixture
def trained_run(tmp_path: Path, trained_template: Path) -> Path:
    """A copy of ``trained_template`` of one's own."""
    return Path(shutil.copytree(trained_template, tmp_path / "run"))
