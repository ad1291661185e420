"""A checkpoint write that fails (file too large, disk full, permission denied) is reported on
one line, and the checkpoint written before stays intact."""

import os
import resource
import shutil
import signal

import pytest

from digitgan.cli import main
from digitgan.store.checkpoint import read_checkpoint


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("digitgan: error: "), stderr
    return lines[0]


def _checkpoints(run):
    return {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}


def test_file_size_limit_during_a_checkpoint_write(trained_run, cli):
    before = _checkpoints(trained_run)
    limit = len(before["latest.safetensors"]) // 2

    def limit_file_size():  # in the child: a write past `limit` bytes fails with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = cli.run("train", "--resume", trained_run, "--iters", 4, preexec_fn=limit_file_size)
    assert r.returncode == 2
    line = _one_error_line(r.stderr)
    assert "cannot write checkpoint" in line and "latest.safetensors" in line
    assert os.strerror(27) in line  # "File too large"
    assert "last good checkpoint" in line and "iteration 2" in line
    assert f"digitgan train --resume {trained_run}" in line
    assert _checkpoints(trained_run) == before  # untouched, and no half-written file left

    assert main(["train", "--resume", str(trained_run), "--iters", "4"]) == 0  # room again
    assert read_checkpoint(trained_run / "checkpoints" / "latest.safetensors")[1]["step"] == 4


def _without_root_powers():
    """A prefix under which permission bits bind this process, or skip the test."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv(1): permission bits cannot be enforced")
    caps = "-dac_override,-dac_read_search"
    return (setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}")


def test_read_only_checkpoint_folder(trained_run, cli):
    before = _checkpoints(trained_run)
    folder = trained_run / "checkpoints"
    folder.chmod(0o555)
    try:
        r = cli.run("train", "--resume", trained_run, "--iters", 4, prefix=_without_root_powers())
    finally:
        folder.chmod(0o755)
    assert r.returncode == 2
    line = _one_error_line(r.stderr)
    assert "cannot write checkpoint" in line and os.strerror(13) in line  # Permission denied
    assert "iteration 2" in line
    assert _checkpoints(trained_run) == before


def test_a_disk_full_after_one_file_names_the_checkpoint_that_is_there(
    tmp_path, tiny_data, monkeypatch, capsys, cli
):
    """The disk fills up after the first checkpoint file of a run is written: the message
    names the checkpoint that exists (the run continues from it), never "none was saved",
    which would send the user to --force and delete it."""
    import errno

    from digitgan.store import checkpoint

    real, calls = checkpoint.atomic_write_bytes, []

    def fill_up(path, data):
        calls.append(path.name)
        if len(calls) > 2:  # one checkpoint file and its .json sidecar fit
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", fill_up)
    run = tmp_path / "run"
    options = ["--iters", "2", "--dataset", tiny_data, "--set", "log.ckpt_every=1"]
    assert main(["train", "--out", str(run), *options, *cli.tiny]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "no checkpoint was saved yet" not in line, line
    assert "(" + str(run / "checkpoints" / "latest.safetensors") + ", iteration 1)" in line
    assert read_checkpoint(run / "checkpoints" / "latest.safetensors")[1]["step"] == 1
