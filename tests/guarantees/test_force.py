"""``--force`` deletes only a run directory digitgan made, never a folder with other files."""

import pytest

import digitgan
from digitgan.cli import main
from digitgan.errors import RunDirError
from digitgan.store.rundir import MARKER_NAME


def test_force_refuses_a_project_folder_that_holds_a_config_toml(tmp_path, capsys):
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "config.toml").write_text("x=1\n")
    (proj / "data.txt").write_text("precious\n")
    code = main(["train", "--dry-run", "--out", str(proj), "--force", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "not a digitgan run directory (it holds data.txt, src/" in err
    assert (proj / "data.txt").read_text() == "precious\n" and (proj / "src").is_dir()
    assert (proj / "config.toml").read_text() == "x=1\n"


def test_force_refuses_a_run_with_a_foreign_file_and_names_it(tmp_path, tiny_cfg, small_data):
    out = tmp_path / "run"
    digitgan.train(tiny_cfg.replace(train__iters=1), out, dataset=small_data, progress=False)
    assert (out / MARKER_NAME).is_file()
    (out / "notes.md").write_text("mine")
    with pytest.raises(RunDirError, match=r"it holds notes\.md, which digitgan did not write"):
        digitgan.train(tiny_cfg, out, force=True, dataset=small_data, progress=False)
    assert (out / "notes.md").read_text() == "mine"
    (out / "notes.md").unlink()
    digitgan.train(tiny_cfg.replace(train__iters=2), out, force=True, dataset=small_data)
    assert digitgan.load(out).step == 2


def test_force_replaces_a_run_of_digitgan_0_1_0_which_has_no_marker(tmp_path, tiny_cfg, small_data):
    out = tmp_path / "old"
    digitgan.train(tiny_cfg.replace(train__iters=1), out, dataset=small_data, progress=False)
    (out / MARKER_NAME).unlink()  # as 0.1.0 left its runs
    digitgan.train(tiny_cfg.replace(train__iters=2), out, force=True, dataset=small_data)
    assert digitgan.load(out).step == 2


def test_force_refuses_a_folder_with_only_a_config_file(tmp_path, tiny_cfg, small_data):
    """A config.toml alone is a user's file, not a run: without the marker and a run's
    folders, --force keeps it."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.toml").write_text(tiny_cfg.to_toml())
    with pytest.raises(RunDirError, match=r"it holds config\.toml, which digitgan did not"):
        digitgan.train(tiny_cfg, mine, force=True, dataset=small_data, progress=False)
    assert (mine / "config.toml").read_text() == tiny_cfg.to_toml()
