"""What digitgan reads or allocates is bounded before the work starts, and going past a bound
is one line, never a traceback or an exhausted machine. Memory is asserted by running the
command under an address-space limit (RLIMIT_AS)."""

import resource

import pytest

LIMIT_MB = 1500
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
    """A valid checkpoint followed by 3 GiB (sparse) is refused before it is read whole."""
    ckpt = trained_run / "checkpoints" / "latest.safetensors"
    size = ckpt.stat().st_size
    with ckpt.open("r+b") as f:
        f.truncate(size + (3 << 30))
    args = [a.format(ckpt=ckpt, tmp=tmp_path) for a in command]
    proc = cli.run(*args, preexec_fn=address_space())
    one_line_error(proc, "damaged checkpoint (followed by data that is not its own")
