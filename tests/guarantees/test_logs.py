"""A run whose log folder stops being writable ends with one line, no thread traceback."""

import shutil

import pytest

import digitgan
from digitgan.errors import RunDirError


class BreakTheLogs(digitgan.Hook):
    """Replaces the run's tb/ folder with a file after the third iteration."""

    def after_step(self, loop, result):
        if loop.iteration == 2:
            shutil.rmtree(loop.run.tb)
            loop.run.tb.write_text("not a folder")


def test_tensorboard_folder_replaced_by_a_file_mid_run(tmp_path, tiny_cfg, small_data, capfd):
    cfg = tiny_cfg.replace(train__iters=8, log__tb_every=1, log__histograms=False)
    with pytest.raises(RunDirError, match=r"cannot write the run's logs .*Not a directory"):
        digitgan.train(cfg, tmp_path / "run", dataset=small_data, hooks=[BreakTheLogs()])
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception in thread" not in err, err
