"""The optional extras: without one, the command that needs it says in one line what to install."""

import sys

import pytest

from digitgan.cli import main


@pytest.mark.parametrize(
    "argv, hidden, extra",
    [
        (["plot", "{run}"], ["matplotlib"], "digitgan[plot]"),
        (["serve", "{run}", "--port", "0"], ["starlette", "uvicorn"], "digitgan[serve]"),
        (["export", "{run}", "--out", "{run}/m", "--onnx"], ["onnxruntime"], "digitgan[export]"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(argv, hidden, extra, monkeypatch, capsys, tmp_path):
    for name in hidden:  # None in sys.modules makes `import name` raise ImportError
        monkeypatch.setitem(sys.modules, name, None)
    for name in [m for m in sys.modules if m.startswith("digitgan.serve")]:
        monkeypatch.delitem(sys.modules, name)
    code = main([a.format(run=tmp_path) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"pip install '{extra}'" in err
