"""What digitgan reads or allocates is bounded before the work starts, and going past a bound
is one line, never a traceback or an exhausted machine. Memory is asserted by running the
command under an address-space limit (RLIMIT_AS)."""

import resource

import pytest

from digitgan.cli import main

LIMIT_MB = 6144  # what importing PyTorch needs differs by machine: 0.6 to 4 GiB seen
"""Address space for a command under test: a normal sample, evaluate or serve start fits."""


def address_space(mb: int = LIMIT_MB):
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))

    return limit


def one_line_error(proc, *fragments: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err)
    assert len(err.splitlines()) == 1 and err.startswith("digitgan: error: "), err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize(
    "command",
    [
        ["sample", "{ckpt}", "--out", "{tmp}/x.png"],
        ["evaluate", "{ckpt}", "--n", "10"],
        ["serve", "{ckpt}", "--port", "0"],
    ],
)
def test_a_checkpoint_is_read_no_further_than_its_header_declares(
    cli, trained_run, tmp_path, command
):
    """A valid checkpoint followed by 12 GiB (sparse) is refused before it is read whole."""
    ckpt = trained_run / "checkpoints" / "latest.safetensors"
    size = ckpt.stat().st_size
    with ckpt.open("r+b") as f:
        f.truncate(size + (12 << 30))
    args = [a.format(ckpt=ckpt, tmp=tmp_path) for a in command]
    proc = cli.run(*args, preexec_fn=address_space())
    one_line_error(proc, "damaged checkpoint (followed by data that is not its own")


@pytest.mark.parametrize(
    "options, message",
    [
        (["--batch-size", "100000000"], "data.batch_size: a batch of 100,000,000 images needs"),
        (["--set", "model.z_dim=100000000"], "model: G and D have 12,800,201,873 parameters"),
        # the noise of one iteration alone: 2 x 60,000 x 60,000 floats
        (["--batch-size", "60000", "--set", "model.z_dim=60000"], "a batch of 60,000 images"),
        (["--set", "model.mlp.g_hidden=[2000000000]"], "parameters, which need about"),
        (["--preset", "dcgan", "--set", "model.dcgan.g_channels=100000"], "use a smaller model"),
        # spectral norm (a layer that counts its outputs on the meta device too)
        (["--preset", "cdcgan", "--batch-size", "1000000"], "a batch of 1,000,000 images"),
    ],
)
def test_a_model_or_batch_too_large_for_the_machine_is_refused_before_any_work(
    tmp_path, capsys, options, message
):
    out = tmp_path / "run"
    code = main(["train", "--dry-run", "--out", str(out), *options])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert "GiB to train" in err and not out.exists()  # no run directory to --force away


def test_a_checkpoint_larger_than_memory_allows_is_refused_before_it_is_read(
    cli, trained_run, tmp_path
):
    """A consistent file (header and length agree) declaring a 16 GiB tensor, sparse on disk:
    reading it would take twice that."""
    import json

    from safetensors import safe_open

    with safe_open(trained_run / "checkpoints" / "latest.safetensors", "pt") as f:
        metadata = f.metadata()
    n = 4 << 30
    header = {
        "__metadata__": metadata,
        "G.x": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]},
    }
    raw = json.dumps(header).encode()
    path = tmp_path / "huge.safetensors"
    with path.open("wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + 4 * n)
    proc = cli.run("sample", path, "--out", tmp_path / "x.png", preexec_fn=address_space())
    one_line_error(proc, "more than this process's 6.0 GiB of memory can read")
