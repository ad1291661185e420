"""Every command-line mistake exits with status 2 and one line that names what is wrong; no
traceback unless --debug is given."""

import pytest
import torch

from digitgan.cli import main
from digitgan.errors import ConfigError

CASES = [
    (["train", "--preset", "nope"], "unknown preset 'nope'"),
    (["train", "--set", "train.iters=abc"], "train.iters: expected an integer, got 'abc'"),
    (["train", "--set", "optim.lr_d=-1"], "optim.lr_d: -1.0 is below the minimum 0.0"),
    (["train", "--set", "optim.lr_d=nan"], "optim.lr_d: nan is not a finite number"),
    (["train", "--set", "model.z_dim=10000000000"], "model.z_dim: 10000000000 is too large"),
    (["train", "--set", "nosuch.key=1"], "unknown config key 'nosuch.key'"),
    (["train", "--set", "novalue"], "--set 'novalue': expected section.key=value"),
    (["train", "--batch-size", "0"], "data.batch_size: 0 is below the minimum 1"),
    (["train", "--batch-size", "abc"], "argument --batch-size: invalid int value: 'abc'"),
    (["train", "--itres", "5"], "unrecognized arguments: --itres 5"),
    (["trian"], "invalid choice: 'trian'"),
    (["train", "--device", "tpu"], "train.device: 'tpu' is not one of"),
    (["train", "--config", "{tmp}/absent.toml"], "config file {tmp}/absent.toml: no such file"),
    (["train", "--config", "{tmp}/bad.toml"], "{tmp}/bad.toml: not valid TOML"),
    (["train", "--config", "{tmp}"], "config file {tmp}: is a folder, not a file"),
    (["train", "--dataset", "npz:{tmp}/absent.npz"], "not found: {tmp}/absent.npz"),
    (["train", "--dataset", "npz:{tmp}/bad.toml"], "{tmp}/bad.toml: not an .npz archive"),
    (["train", "--dataset", "nosuch"], "unknown dataset 'nosuch'"),
    (["train", "--out", "{tmp}/bad.toml"], "--out {tmp}/bad.toml: exists and is not a directory"),
    (["train", "--out", "{tmp}/bad.toml/run"], "--out {tmp}/bad.toml/run: cannot use it: "),
    (["train", "--resume", "{tmp}/absent"], "--resume {tmp}/absent: no such run directory"),
    (["train", "--resume", "{tmp}"], "--resume {tmp}: not a digitgan run"),
    (["train", "--resume", "{tmp}/fresh"], "the run has no checkpoint yet"),
    (["train", "--resume", "{run}", "--preset", "seed"], "--preset cannot be given with it"),
    (
        ["train", "--resume", "{run}", "--set", "model.g_hidden=[8]"],
        "--set model.mlp.g_hidden: cannot",
    ),
    (["train", "--resume", "{run}", "--set", "train.seed=3"], "--set train.seed: cannot change"),
    (["sample", "{tmp}/absent", "--out", "{tmp}/x.png"], "no such run directory or checkpoint"),
    (["sample", "{run}", "--out", "{tmp}/x.gif"], "--out {tmp}/x.gif: the file must end in"),
    (["sample", "{run}", "--out", "{tmp}/absent/x.png"], "folder {tmp}/absent does not exist"),
    (["sample", "{run}", "--n", "-1", "--out", "{tmp}/x.npy"], "--n -1: draw 0 to "),
    (["sample", "{tmp}/bad.toml", "--out", "{tmp}/x.png"], "{tmp}/bad.toml: not a safetensors"),
    (["train", "--dataset", "idx:{tmp}/absent"], "not found: {tmp}/absent (expected a folder"),
    (["data", "verify", "nosuch"], "unknown dataset 'nosuch'"),
    # numbers beyond what the work can take: refused before any work, with the limit
    (["sample", "{run}", "--n", "1000000000", "--out", "{tmp}/x.npy"], "--n 1000000000: draw 0"),
    (["sample", "{run}", "--n", "99999999999999999999", "--out", "{tmp}/x.npy"], "draw 0 to"),
    (["sample", "{run}", "--n", "20000", "--out", "{tmp}/x.png"], "draw 0 to 10,000 images"),
    (["sample", "{run}", "--walk", "3", "--n", "100000000", "--out", "{tmp}/x.png"], "0 to 10,000"),
    (["sample", "{run}", "--walk", "5", "--n", "1", "--out", "{tmp}/x.png"], "--n 1: a walk needs"),
    (["evaluate", "{run}", "--n", "1000000000"], "--n 1000000000: evaluate 2 to 100,000 samples"),
    (["sample", "{run}", "--seed", "9" * 23, "--out", "{tmp}/x.png"], "--seed: 9999"),
    (["sample", "{run}", "--walk", "9" * 23, "--out", "{tmp}/x.png"], "--walk: 9999"),
    (["evaluate", "{run}", "--seed", "-1"], "argument --seed: -1 is not in 0.."),
    (["sample", "{run}", "--device", "tpu", "--out", "{tmp}/x.png"], "--device tpu: not one of"),
    (["serve", "{run}", "--device", "tpu"], "--device tpu: not one of auto, cpu, cuda, cuda:N"),
    (["train", "--dry-run", "--set", "train.iters=" + "9" * 23], "train.iters: 9999"),
    (["sample", "{run}", "--truncation", "1.5", "--out", "{tmp}/x.png"], "--truncation 1.5: "),
    (["sample", "{run}", "--truncation", "-0.1", "--out", "{tmp}/x.npy"], "expected a number"),
    (["sample", "{run}", "--walk", "3", "--truncation", "nan", "--out", "{tmp}/x.png"], "nan"),
    (["sample", "{run}", "--truncation", "abc", "--out", "{tmp}/x.png"], "invalid float value"),
    (["evaluate", "{run}", "--truncation", "2"], "--truncation 2.0: expected a number from 0"),
    (["evaluate", "--real", "--truncation", "0.5"], "--truncation: not with --real"),
    (["evaluate", "{run}", "--save", "--truncation", "0.5"], "--truncation: not with --save"),
]
if not torch.cuda.is_available():
    CASES.append((["train", "--device", "cuda"], "--device cuda: CUDA is not available"))


def _run(argv):
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return e.code


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_mistake_is_one_line_without_traceback(argv, message, tmp_path, trained_template, capsys):
    (tmp_path / "bad.toml").write_text("this is [not toml\n")
    (tmp_path / "fresh").mkdir()  # a run killed before its first checkpoint
    (tmp_path / "fresh" / "config.toml").write_text("")
    where = {"tmp": tmp_path, "run": trained_template}
    assert _run([a.format(**where) for a in argv]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("digitgan") and ": error: " in err
    assert message.format(**where) in err


def test_debug_shows_the_traceback():
    with pytest.raises(ConfigError, match="unknown preset"):
        main(["--debug", "train", "--preset", "nope"])


def test_resume_to_fewer_iterations_than_done_says_so(trained_run, capsys):
    assert main(["train", "--resume", str(trained_run), "--iters", "1"]) == 0
    out = capsys.readouterr().out
    assert "Note: the run is at iteration 2, at or past the 1 asked for: nothing to train" in out


def test_a_truncated_class_grid_outside_0_1_is_refused(cond_run, tmp_path, capsys):
    out = tmp_path / "g.png"
    argv = ["sample", str(cond_run), "--class-grid", "--truncation", "-1", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--truncation -1.0: expected a number from 0" in err
    assert not out.exists()


def test_a_class_grid_of_zero_columns_is_refused(cond_run, tmp_path, capsys):
    assert (
        main(
            ["sample", str(cond_run), "--class-grid", "--n", "0", "--out", str(tmp_path / "g.png")]
        )
        == 2
    )
    assert "--n 0: a class grid needs at least one per class" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()
