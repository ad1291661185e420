"""NaN, infinite or exploding (beyond 1e6) losses or weights stop training with a message
that names the iteration, keep the last good checkpoint, and say how to go on with other
settings."""

import re

import pytest
import torch
from safetensors.torch import load_file

import digitgan
from digitgan.cli import main
from digitgan.errors import DivergenceError
from digitgan.store.checkpoint import read_checkpoint

EXPLODE = ["optim.lr_d=1e30", "optim.lr_g=1e30"]


def _all_finite(path):
    return all(bool(t.isfinite().all()) for t in load_file(path).values() if t.is_floating_point())


def test_divergence_stops_keeps_the_last_good_checkpoint_and_resume_recovers(
    tmp_path, tiny_cfg, small_data
):
    run = tmp_path / "run"
    digitgan.train(tiny_cfg.replace(train__iters=4), run, dataset=small_data, progress=False)
    with pytest.raises(DivergenceError) as caught:
        digitgan.resume(run, iters=40, sets=EXPLODE, dataset=small_data, progress=False)
    message = str(caught.value)
    diverged_at = int(re.search(r"diverged at iteration (\d+)", message)[1])
    kept = int(re.search(r"last good checkpoint \(.*, iteration (\d+)\) is kept", message)[1])
    latest = run / "checkpoints" / "latest.safetensors"
    assert read_checkpoint(latest)[1]["step"] == kept
    assert 4 <= kept <= diverged_at < 40
    for path in (run / "checkpoints").glob("*.safetensors"):  # no NaN ever saved
        assert _all_finite(path), path.name
    assert f"digitgan train --resume {run} --set optim.lr_d=5e+29 --set optim.lr_g=5e+29" in message

    # continuing with other settings, as the message says
    sane = ["optim.lr_d=2e-4", "optim.lr_g=2e-4"]
    result = digitgan.resume(run, iters=kept + 4, sets=sane, dataset=small_data, progress=False)
    assert result.step == kept + 4 and _all_finite(latest)
    meta = read_checkpoint(latest)[1]
    assert meta["config"]["optim"]["lr_d"] == 2e-4
    for group in meta["opt_d"]["param_groups"] + meta["opt_g"]["param_groups"]:
        assert group["lr"] == pytest.approx(2e-4, rel=1e-7)  # (as float32, as Adam applies it)


def test_divergence_before_any_checkpoint_on_the_command_line(tmp_path, capsys, tiny_data):
    run = tmp_path / "run"
    options = ["--dataset", tiny_data, "--iters", "50", "--set", "log.tb_every=1"]
    options += ["--set", "log.ckpt_every=0", "--no-progress"]
    code = main(["train", "--out", str(run), *options, *(f"--set={s}" for s in EXPLODE)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert re.search(r"^digitgan: error: training diverged( at iteration \d+)?: ", err)
    assert "no checkpoint was saved yet" in err and "start again with --force --set" in err
    assert not list((run / "checkpoints").iterdir())


def test_non_finite_weights_are_detected(tiny_cfg, small_data):
    trainer = digitgan.Trainer(tiny_cfg, small_data)
    trainer.check_weights()
    with torch.no_grad():
        trainer.D.head.bias.fill_(float("inf"))
    with pytest.raises(DivergenceError, match="discriminator's weights are NaN or infinite"):
        trainer.check_weights()


def test_finite_but_exploding_training_is_divergence(tmp_path, tiny_cfg, small_data):
    """A learning rate of 1e6 keeps every number finite (weights of 3e7, losses of 2e17) but
    is no training: past 1e6 in magnitude a loss or weight counts as diverged."""
    cfg = tiny_cfg.replace(optim__lr_d=1e6, optim__lr_g=1e6, train__iters=40)
    with pytest.raises(DivergenceError, match=r"training diverged at iteration \d+: "):
        digitgan.train(cfg, tmp_path / "run", dataset=small_data, progress=False)


def test_weights_beyond_the_bound_are_divergence(tiny_cfg, small_data):
    trainer = digitgan.Trainer(tiny_cfg, small_data)
    with torch.no_grad():
        trainer.G.body.fc1.weight[0, 0] = 3e7
    with pytest.raises(DivergenceError, match=r"generator's weights .* beyond 1e\+06"):
        trainer.check_weights()
