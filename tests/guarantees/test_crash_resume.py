"""SIGKILL at random moments, also in the middle of a checkpoint write, loses nothing; Ctrl-C
saves a checkpoint.

A training subprocess is killed several times (at moments drawn from a seeded generator,
half of them while a checkpoint is being written, made slow for that by slow_writer.py);
after each kill the last complete checkpoint must read back, and ``--resume`` must finally
produce exactly the run an uninterrupted process produces.
"""

import json
import random
import signal
import time

import torch
from safetensors.torch import load_file

from digitgan.cli import main
from digitgan.store.checkpoint import read_checkpoint, read_metadata

ITERS = 16


def _partial_checkpoints(run):
    """Checkpoint files whose writing was begun and never finished."""
    return list((run / "checkpoints").glob(".*.safetensors.*.part"))


def _metric_steps(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_at_random_moments_then_resume_equals_an_uninterrupted_run(
    tmp_path, cli, wait_for, tiny_data
):
    options = ["--iters", ITERS, "--dataset", tiny_data, *cli.tiny]
    options += ["--set", "log.ckpt_every=1", "--set", "log.tb_every=3"]
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert main(["train", "--out", str(straight), *map(str, options)]) == 0

    latest = run / "checkpoints" / "latest.safetensors"
    rng = random.Random(20240611)
    command, steps = ["train", "--out", run, *options], [0]
    for mid_write in (True, False, True):
        proc = cli.start(*command, slow_writes=True)
        # wait until this process has saved a checkpoint of its own
        wait_for(lambda: latest.exists() and read_metadata(latest)["step"] > steps[-1], proc)
        if mid_write:
            wait_for(lambda: _partial_checkpoints(run), proc)
            time.sleep(rng.uniform(0.0, 0.05))  # a write of ~50 KB takes > 100 ms here
        else:
            time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        proc.communicate()
        if mid_write:
            assert _partial_checkpoints(run), "the kill did not land in a checkpoint write"
        _, meta = read_checkpoint(latest)  # the last complete checkpoint reads back
        steps.append(meta["step"])
        command = ["train", "--resume", run]
    assert steps == sorted(steps) and steps[-1] < ITERS, steps

    done = cli.run(*command)
    assert done.returncode == 0, done.stderr
    assert not _partial_checkpoints(run)  # the resume cleared what the kills left
    a, b = load_file(straight / "checkpoints" / "latest.safetensors"), load_file(latest)
    assert a.keys() == b.keys()
    for key in a:  # weights, Adam moments, random states, data order
        assert torch.equal(a[key], b[key]), key
    assert _metric_steps(run) == _metric_steps(straight)  # no record lost or repeated


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tmp_path, cli, tiny_data):
    run = tmp_path / "run"
    options = ["--iters", 10**6, "--dataset", tiny_data, *cli.tiny, "--set", "log.print_every=100"]
    proc = cli.start("train", "--out", run, *options)
    # Wait for the first loss line: the loop (and its Ctrl-C handler) is running. (A SIGINT
    # that comes earlier, while PyTorch is being imported, can be lost inside that import.)
    first_line = proc.stdout.readline()
    assert first_line.startswith("Iter: 0 "), first_line + proc.stderr.read()
    time.sleep(0.5)  # let it train a little
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Interrupted: checkpoint saved at iteration" in stdout
    latest = run / "checkpoints" / "latest.safetensors"
    step = read_metadata(latest)["step"]
    assert 0 < step < 10**6
    assert main(["train", "--resume", str(run), "--iters", str(step + 5)]) == 0
    assert read_metadata(latest)["step"] == step + 5
