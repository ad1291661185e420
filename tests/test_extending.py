"""docs/extending.md, run as written: an architecture, an objective, a penalty, a dataset and
a hook registered from outside the package, then trained, loaded and sampled together."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from digitgan.data import REGISTRY
from digitgan.losses import OBJECTIVES, PENALTIES
from digitgan.models import ARCHITECTURES

PAGE = Path(__file__).parents[1] / "docs" / "extending.md"


def code_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


@pytest.fixture
def registered(monkeypatch, tmp_path):
    """Runs the page's code in ``tmp_path`` (its runs/ land there); unregisters afterwards."""
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "extending_example"}
    yield namespace
    ARCHITECTURES.unregister("tiny")
    OBJECTIVES.unregister("sq-hinge")
    PENALTIES.unregister("drift")
    REGISTRY.pop("zeros-and-ones", None)


def test_the_page_registers_each_kind_and_trains_them(registered, one_thread, capsys):
    blocks = code_blocks()
    assert len(blocks) == 6
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), registered)
    result, history = registered["result"], registered["history"]
    assert result.step == 20 and not result.interrupted
    assert [row[0] for row in history.rows] == [0, 5, 10, 15]
    assert registered["images"].shape == (4, 1, 28, 28)
    saved = registered["digitgan"].load("runs/extended").config
    assert saved.model.arch == "tiny" and saved.model.tiny.width == 32
    assert saved.loss.objective == "sq-hinge" and saved.loss.penalties() == [("drift", 0.001)]
    assert saved.data.dataset == "zeros-and-ones"
    # the drift penalty was on: its value is one of the logged scalars
    assert "drift_penalty" in result.stats


def test_a_hook_can_stop_training(registered, one_thread):
    for block in code_blocks()[:5]:
        exec(compile(block, str(PAGE), "exec"), registered)
    digitgan, hook_cls = registered["digitgan"], registered["LossHistory"]

    class StopAtTen(hook_cls):
        def after_step(self, loop, result):
            if loop.iteration == 9:
                loop.request_stop("enough")

    cfg = digitgan.preset("seed").replace(model__arch="tiny", data__batch_size=16, train__iters=100)
    result = digitgan.train(cfg, "runs/stopped", hooks=[StopAtTen()])
    assert result.step == 10 and not result.out_of_time


def test_the_command_line_imports_a_plugin_module(tmp_path, one_thread):
    plugin = tmp_path / "tinyplugin.py"
    plugin.write_text("\n".join(code_blocks()[:4]))
    env_path = f"{tmp_path}"
    cmd = [sys.executable, "-m", "digitgan", "--plugin", "tinyplugin", "train", "--out"]
    cmd += [str(tmp_path / "run"), "--set", "model.arch=tiny", "--dataset", "zeros-and-ones"]
    cmd += ["--iters", "3", "--batch-size", "8", "--no-progress"]
    done = subprocess.run(
        cmd,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": env_path},
    )
    assert done.returncode == 0, done.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "digitgan", "--plugin", "nosuchplugin", "presets"],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        "digitgan: error: --plugin nosuchplugin: cannot import it (No module named 'nosuchplugin')"
    ]
