"""Every option of every command, fed random values: the command succeeds or says what is
wrong in one line; it never ends in a traceback."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digitgan.cli import main

NASTY = st.sampled_from(
    [
        "0",
        "-1",
        "1",
        "3",
        "2147483648",
        "9" * 30,
        "-" + "9" * 30,
        "1e400",
        "nan",
        "inf",
        "1.5",
        "",
        " ",
        "abc",
        "[]",
        "[0]",
        "[-5]",
        "{}",
        "true",
        "\u00e9\u6f22",
        "\x00",
        "/dev/zero",
        "/",
        "/nonexistent/x",
        "cuda:99",
        "tpu",
        "npz:/dev/null",
        "idx:/",
    ]
)
VALUES = st.one_of(NASTY, st.integers(-(10**25), 10**25).map(str), st.text(max_size=12))
SET_KEYS = st.sampled_from(
    [
        "train.iters",
        "data.batch_size",
        "model.z_dim",
        "model.mlp.g_hidden",
        "model.arch",
        "loss.objective",
        "loss.gp.weight",
        "optim.lr_d",
        "train.seed",
        "log.grid_rows",
        "train.device",
        "model.nosuch",
        "nosuch",
        "log.eval_every",
        "train.max_minutes",
    ]
)


def _call(argv, capsys) -> None:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert "Traceback" not in err, (argv, err)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        assert len(lines) == 1 and "error:" in lines[0], (argv, err)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sets=st.lists(st.tuples(SET_KEYS, VALUES), max_size=3),
    flags=st.lists(
        st.tuples(st.sampled_from(["--batch-size", "--seed", "--dataset", "--device"]), VALUES),
        max_size=2,
    ),
)
def test_train_options(sets, flags, tmp_path, capsys, tiny_data, one_thread):
    argv = ["train", "--dry-run", "--iters", "1", "--no-progress", "--dataset", tiny_data]
    argv += ["--out", str(tmp_path / f"run{abs(hash((tuple(sets), tuple(flags))))}")]
    argv += ["--set", "model.mlp.g_hidden=[8]", "--set", "model.mlp.d_hidden=[8]"]
    for key, value in sets:
        argv += ["--set", f"{key}={value}"]
    for flag, value in flags:
        argv += [flag, value]
    _call(argv, capsys)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    options=st.lists(
        st.tuples(
            st.sampled_from(["--n", "--seed", "--label", "--walk", "--device", "--out"]), VALUES
        ),
        max_size=3,
    ),
    grid=st.booleans(),
)
def test_sample_options(options, grid, trained_template, tmp_path, capsys):
    argv = ["sample", str(trained_template), "--out", str(tmp_path / "x.png")]
    for flag, value in options:
        argv += [flag, value]
    if grid:
        argv.append("--class-grid")
    _call(argv, capsys)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    command=st.sampled_from(
        [
            ["evaluate", "{value}"],
            ["evaluate", "{run}", "--n", "{value}"],
            ["evaluate", "{run}", "--seed", "{value}"],
            ["evaluate", "{run}", "--cas", "--cas-n", "{value}"],
            ["evaluate", "{run}", "--cas", "--cas-lr", "{value}"],
            ["evaluate", "--real", "--dataset", "{value}"],
            ["serve", "{value}"],
            ["serve", "/nonexistent", "--port", "{value}"],
            ["config", "--set", "{value}"],
            ["config", "--preset", "{value}"],
            ["config", "--config", "{value}"],
            ["data", "info", "{value}"],
            ["data", "verify", "{value}"],
            ["plot", "{value}"],
            ["classifier", "train", "--dataset", "{value}", "--out", "{tmp}/c.safetensors"],
            ["classifier", "train", "--dataset", "nosuch", "--out", "x", "--epochs", "{value}"],
            ["--plugin", "{value}", "presets"],
        ]
    ),
    value=VALUES,
)
def test_other_commands(command, value, trained_template, tmp_path, capsys):
    if "\x00" in value and command[0] in ("config", "data", "plot", "evaluate", "serve"):
        value = value.replace("\x00", "")  # (a NUL cannot reach a real command line either)
    argv = [a.format(value=value, run=trained_template, tmp=tmp_path) for a in command]
    _call(argv, capsys)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    options=st.lists(
        st.tuples(
            st.sampled_from(
                ["--label", "--restarts", "--seed", "--time-limit", "--walk-to", "--out", "--fit"]
            ),
            VALUES,
        ),
        max_size=3,
    ),
    image=st.sampled_from(["{tmp}/seven.png", "{value}", "/dev/zero", "/", "{tmp}"]),
    value=VALUES,
)
def test_project_options(options, image, value, trained_template, tmp_path_factory, capsys):
    from PIL import Image, ImageDraw

    tmp = tmp_path_factory.mktemp("project")
    drawing = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(drawing).line([(10, 10), (50, 10), (30, 55)], fill=0, width=6)
    drawing.save(tmp / "seven.png")
    image = image.format(tmp=tmp, value=value)
    argv = ["project", str(trained_template), image, "--out", str(tmp / "out"), "--steps", "2"]
    for flag, v in options:
        if flag == "--fit":
            argv.append("--no-fit")
        else:  # a folder of results inside tmp, never "/"
            argv += [flag, f"{tmp}/o{v}" if flag == "--out" else v]
    _call(argv, capsys)


@pytest.mark.parametrize("value", ["\x00", "a\x00b"])
def test_a_nul_in_a_path_is_one_line(value, capsys):
    _call(["sample", value, "--out", "x.png"], capsys)
