"""Two training processes never share a run directory; a crashed one never leaves it locked."""

import os
import socket

import pytest

from digitgan.cli import main
from digitgan.errors import RunDirError
from digitgan.store.checkpoint import read_metadata
from digitgan.store.rundir import RunDir


def test_second_trainer_is_refused_and_a_killed_one_frees_the_run(
    tmp_path, cli, wait_for, capsys, tiny_data
):
    run = tmp_path / "run"
    latest = run / "checkpoints" / "latest.safetensors"
    options = ["--dataset", tiny_data, "--set", "log.ckpt_every=5", *cli.tiny]
    first = cli.start("train", "--out", run, "--iters", 10**6, *options)
    wait_for(latest.exists, first)
    holder = f"digitgan PID {first.pid} on host {socket.gethostname()}"

    # in this process, through the command line: a resume, and a replacement with --force
    for argv in (["--resume", str(run)], ["--out", str(run), "--force", *map(str, options)]):
        assert main(["train", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("digitgan: error: run directory ")
        assert f"is in use by {holder} since " in err
    assert first.poll() is None and latest.exists()  # nothing of the first run was touched

    first.kill()  # SIGKILL: the kernel releases the lock with the process
    first.communicate()
    step = read_metadata(latest)["step"]
    assert main(["train", "--resume", str(run), "--iters", str(step + 2)]) == 0
    assert read_metadata(latest)["step"] == step + 2


def test_lock_is_held_while_open_and_released_on_close(tmp_path):
    root = tmp_path / "run"
    with RunDir.create(root) as run:
        (run.config).write_text("")  # make it a run
        with pytest.raises(RunDirError, match=f"in use by digitgan PID {os.getpid()} on host"):
            RunDir.open(root)
        with pytest.raises(RunDirError, match="in use by"):
            RunDir.create(root, force=True)
        assert run.config.exists()  # --force deleted nothing
    with RunDir.open(root):
        pass
    with RunDir.create(root, force=True) as run:  # replaces the old run, keeps the lock file
        assert sorted(p.name for p in root.iterdir()) == [
            ".digitgan-run",
            ".lock",
            "checkpoints",
            "samples",
            "tb",
        ]


def test_stale_lock_file_of_a_dead_process_is_taken_over(tmp_path):
    root = tmp_path / "run"
    with RunDir.create(root) as run:
        run.config.write_text("")
    # what a crashed trainer leaves: the file, naming a process that no longer exists
    (root / ".lock").write_text("digitgan PID 999999999 on host elsewhere since 2020-01-01\n")
    with RunDir.open(root):
        assert f"PID {os.getpid()} " in (root / ".lock").read_text()


def test_half_written_files_of_a_killed_process_are_removed(tmp_path):
    root = tmp_path / "run"
    with RunDir.create(root) as run:
        run.config.write_text("")
    left = [
        root / "checkpoints" / ".latest.safetensors.0123456789ab.part",
        root / ".config.toml.ba9876543210.part",
    ]
    mine = root / "checkpoints" / "notes.part"  # not a digitgan temporary file: kept
    for p in [*left, mine]:
        p.write_bytes(b"half")
    with RunDir.open(root):
        assert not any(p.exists() for p in left) and mine.exists()
