"""The page of ``digitgan export --web`` in a real headless browser (Playwright driving Debian's
Chromium), served by ``python -m http.server`` on 127.0.0.1, with the real ONNX Runtime Web.

The runtime comes from a folder of ``npm pack`` tarballs named by $DIGITGAN_TEST_NPM_PACKS
(.ci/run makes one), served here as a stand-in npm registry, so the export downloads and checks
it as it would from registry.npmjs.org. Screenshots go to test-artifacts/."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import download_grid, mirror_of
from PIL import Image

import digitgan
from digitgan.cli import main
from digitgan.export import export
from digitgan.store.exported import read_export, write_export_files
from digitgan.viz import make_grid
from digitgan.web import REGISTRY_ENV, RUNTIME

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install '.[test]')")
PACKS = "DIGITGAN_TEST_NPM_PACKS"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A stand-in npm registry on 127.0.0.1 that serves the pinned ONNX Runtime Web."""
    packs = Path(os.environ.get(PACKS, "/nonexistent"))
    if not (packs / RUNTIME.tarball).is_file():
        pytest.skip(
            f"no {RUNTIME.tarball}: run `npm pack {RUNTIME.name}@{RUNTIME.version} "
            f"--pack-destination DIR` and set {PACKS}=DIR to run the static page's tests"
        )
    root = tmp_path_factory.mktemp("registry")
    (root / RUNTIME.name / "-").mkdir(parents=True)
    (root / RUNTIME.name / "-" / RUNTIME.tarball).symlink_to(packs / RUNTIME.tarball)
    with mirror_of(root) as mirror:
        yield mirror.url


def vivid(source: Path, folder: Path) -> Path:
    """``source``'s generator exported to ``folder`` with its last layer's weights (and its
    label embedding) scaled up: a few iterations leave images near grey everywhere, in which
    equal-to-1/255 would hardly tell one seed from another; these vary from seed to seed and
    class to class over the whole range."""
    export(source, folder)
    tensors, meta = read_export(folder)
    state = {k.removeprefix("G."): v for k, v in tensors.items()}
    last = [k for k, v in state.items() if k.endswith("weight") and v.ndim >= 2][-1]
    state[last] = state[last] * 25
    if "embed.weight" in state:
        state["embed.weight"] = state["embed.weight"] * 4
    write_export_files(folder, state, {k: v for k, v in meta.items() if k != "format"})
    return folder


@pytest.fixture(scope="module")
def site(registry, tmp_path_factory):
    """make(source) -> (the URL of its page served by python -m http.server, the model
    folder exported with it)."""
    servers = []

    def make(source: Path) -> tuple[str, Path]:
        base = tmp_path_factory.mktemp("site")
        model = vivid(source, base / "vivid")
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(REGISTRY_ENV, registry)
            mp.setenv("DIGITGAN_DATA", str(base / "cache"))
            export(model, base / "model", web=base / "web")
        assert (base / "cache" / RUNTIME.tarball).is_file()  # downloaded and kept
        proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1"],
            cwd=base / "web",
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        servers.append(proc)
        line = proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (http://...) ..."
        assert "port" in line, line
        return f"http://127.0.0.1:{line.split('port ')[1].split()[0]}/", base / "model"

    yield make
    for proc in servers:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def seed_site(site, tiny_run):
    return site(tiny_run)


@pytest.fixture(scope="module")
def cond_site(site, cond_run):
    return site(cond_run)


@pytest.fixture(scope="module")
def cat_site(site, cat_run):
    return site(cat_run)


@pytest.fixture(scope="module")
def sub_site(site, tmp_path_factory, tiny, small_data):
    """The page of a class-conditional model with 3 clusters within each class."""
    out = tmp_path_factory.mktemp("subclusters") / "run"
    cfg = tiny("cdcgan", model__categories=3, model__clusters=True, model__z_dim=12)
    digitgan.train(cfg, out, dataset=small_data, progress=False)
    return site(out)


@pytest.fixture(scope="module")
def colour_site(site, colour_run):
    return site(colour_run)


def test_a_page_draws_a_category_of_a_code_in_parts(page, colour_site, artifacts):
    """Stacked MNIST's code in 3 parts (here of 2 each), chosen channel by channel: the page
    makes each chosen part's block of the noise pick its value, as digitgan sample does, and
    leaves a part set to any to the noise."""
    from playwright.sync_api import expect

    model, grid = opened(page, colour_site, "unconditional, 8 learnt categories (3 parts of 2)")
    expect(page.locator("#digit")).to_be_hidden()  # no list of all 8: a select per channel
    red = page.get_by_label("category, red").first
    expect(red).to_have_attribute("title", "red")
    for i, value in enumerate("101"):
        page.select_option(f"#digit-part-{i}", value)
    expect(grid).to_have_attribute("data-category", "1,0,1")
    fives = shown(page, colour=True)[0]
    assert near(fives, drawn(model, "--n", 16, "--seed", 0, "--category", 5))  # 101 in base 2
    assert not near(fives, drawn(model, "--n", 16, "--seed", 0, "--category", 2))
    page.select_option("#digit-part-1", "any")
    expect(grid).to_have_attribute("data-category", "1,any,1")
    either = drawn(model, "--n", 16, "--seed", 0, "--category", "1,any,1")
    assert near(shown(page, colour=True)[0], either) and not near(either, fives)
    # the walk: any category, then blue's part fixed
    walk = ["--seed", 0, "--walk", 1, "--n", 24]
    expect(page.locator("#walk-frame")).to_have_attribute("data-seeds", "0-1")
    frame = page.locator("#walk-frame")
    expect(frame).to_have_attribute("data-category", "")
    assert walk_becomes(page, drawn(model, *walk), colour=True)
    page.select_option("#walk-digit-part-2", "0")
    expect(frame).to_have_attribute("data-category", "any,any,0")
    assert walk_becomes(page, drawn(model, *walk, "--category", "any,any,0"), colour=True)
    page.screenshot(path=artifacts / "web-page-code-in-parts.png", full_page=True)


def test_a_conditional_page_draws_one_cluster_and_refuses_a_grid_of_them(page, sub_site):
    """As the server: a category beside a label, but no "all" for a conditional model."""
    opened(page, sub_site, "10 (conditional)")
    got = page.evaluate(
        "async (body) => { try { await backend.grid(body); return 'drawn'; }"
        " catch (e) { return e.message; } }",
        {"label": 7, "category": "all"},
    )
    assert got == 'category: expected an integer from 0 to 2, got "all"'
    drawn = page.evaluate(
        "async (body) => { await backend.grid(body); return 'drawn'; }",
        {"label": 7, "category": 2, "seed": 1},
    )
    assert drawn == "drawn"


def shown(page, colour: bool = False) -> tuple[np.ndarray, dict, bytes]:
    """The grid the page shows, at its own size (a pixel per pixel: the page's upscaling
    undone, after checking that every pixel is a square of equal values), grey or (``colour``)
    RGB, its request, and the PNG's bytes."""
    data = page.locator("#grid").evaluate("img => ({...img.dataset})")
    png = bytes(
        page.evaluate(
            "async () => Array.from(new Uint8Array(await (await fetch("
            "document.getElementById('grid').src)).arrayBuffer()))"
        )
    )
    rgba = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))
    s = int(data["scale"])
    small = rgba[::s, ::s]
    assert np.array_equal(small.repeat(s, 0).repeat(s, 1), rgba)
    assert (small[..., 3] == 255).all()
    if colour:
        return small[..., :3], data, png
    assert (small[..., 0] == small[..., 1]).all()
    return small[..., 0], data, png


def walk_frames(page, colour: bool = False) -> np.ndarray:
    """The frames of the walk the page shows, (24, C, 28, 28) uint8: grey (their red, C = 1)
    or (``colour``) RGB."""
    frames = page.evaluate(
        "frames.map(f => Array.from(f.getContext('2d').getImageData(0, 0, f.width, f.height).data))"
    )
    rgba = np.array(frames, dtype=np.uint8).reshape(24, 28, 28, 4).transpose(0, 3, 1, 2)
    return rgba[:, :3] if colour else rgba[:, :1]


def opened(page, site: tuple[str, Path], classes: str):
    """(the model folder, the grid) of ``site``'s page, opened and drawn, whose facts describe
    the model's classes as ``classes``."""
    from playwright.sync_api import expect

    url, model = site
    page.goto(url)
    grid = page.locator("#grid")
    expect(grid).to_have_attribute("data-seed", "0")
    expect(page.locator("#facts")).to_contain_text(classes)
    return model, grid


def walk_becomes(page, want: np.ndarray, colour: bool = False) -> bool:
    """Whether the walk the page shows, as one row of frames, becomes ``want`` (to 1/255)
    within 5 seconds: a walk asked for is drawn a moment later."""
    for _ in range(100):
        if near(make_grid(walk_frames(page, colour), nrow=24), want):
            return True
        page.wait_for_timeout(50)
    return False


def near(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal to 1/255: what float rounding may change between two runtimes."""
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


def drawn(model: Path, *options) -> np.ndarray:
    """The pixels of the PNG that ``digitgan sample MODEL OPTIONS`` writes."""
    out = model.parent / "sample.png"
    assert main(["sample", str(model), *map(str, options), "--out", str(out)]) == 0
    return np.asarray(Image.open(out))


def test_the_page_draws_what_digitgan_sample_draws(page, seed_site, tmp_path, artifacts):
    from playwright.sync_api import expect

    url, model = seed_site
    page.goto(url)
    expect(page.locator("#summary")).to_have_text("seed preset · 3 iterations · mlp on mnist20k")
    expect(page.locator("#about")).to_contain_text(f"ONNX Runtime Web {RUNTIME.version}")
    expect(page.locator("#digit-field")).to_be_hidden()  # an unconditional model
    grid = page.locator("#grid")
    expect(grid).to_have_attribute("data-seed", "0")
    pixels, data, _ = shown(page)
    assert int(data["n"]) == 16 and int(data["scale"]) >= 3
    assert near(pixels, drawn(model, "--n", 16, "--seed", 0))
    assert not near(pixels, drawn(model, "--n", 16, "--seed", 1))  # another seed's are not

    page.select_option("#count", "36")
    page.fill("#seed", "4294967295")  # the largest seed
    page.press("#seed", "Enter")
    expect(grid).to_have_attribute("data-seed", "4294967295")
    expect(grid).to_have_attribute("data-n", "36")
    pixels, _, png = shown(page)
    assert near(pixels, drawn(model, "--n", 36, "--seed", 2**32 - 1))

    page.fill("#truncation", "0.5")
    expect(grid).to_have_attribute("data-truncation", "0.5")
    truncated, _, png = shown(page)
    assert near(truncated, drawn(model, "--n", 36, "--seed", 2**32 - 1, "--truncation", 0.5))
    assert not near(truncated, pixels)

    # the latent walk: every frame is digitgan's
    frame = page.locator("#walk-frame")
    expect(frame).to_have_attribute("data-truncation", "0.5")
    walk = drawn(model, "--seed", 0, "--walk", 1, "--n", 24, "--truncation", 0.5)
    assert near(make_grid(walk_frames(page), nrow=24), walk)
    page.focus("#walk-slider")
    page.keyboard.press("End")
    expect(frame).to_have_attribute("data-frame", "23")

    # download the grid as PNG: the picture shown
    saved = download_grid(page, tmp_path)
    assert saved.name == "digitgan-seed4294967295-n36-psi0.5.png"
    assert saved.read_bytes() == png
    page.screenshot(path=artifacts / "web-page.png", full_page=True)


def test_the_page_draws_pytorchs_noise(page, cond_site, cond_run):
    """The page's noise for a seed is torch's (normal: 16 numbers at a time), and a draw of n
    vectors is Sampler.noise's, whole blocks of 16 or not (z has 69 entries)."""
    page.goto(cond_site[0])
    page.locator("#grid[data-seed='0']").wait_for()
    sampler = digitgan.load(cond_run)
    for seed in (0, 7, 2**32 - 1):
        for size in (16, 32, 112, 1600):
            got = page.evaluate(
                "([size, seed]) => [Array.from(randn(size, new MersenneTwister(seed))),"
                " Array.from({length: size}, ((r) => () => r.float24())("
                "new MersenneTwister(seed)))]",
                [size, seed],
            )
            normal = torch.randn(size, generator=torch.Generator().manual_seed(seed))
            uniform = torch.rand(size, generator=torch.Generator().manual_seed(seed))
            assert np.abs(np.array(got[0], np.float32) - normal.numpy()).max() <= 1e-5
            assert np.array_equal(np.array(got[1], np.float32), uniform.numpy())
        for n in (1, 3, 8):
            got = page.evaluate("([n, seed]) => Array.from(noise(n, seed))", [n, seed])
            want = sampler.noise(n, seed).flatten().numpy()
            assert np.abs(np.array(got, np.float32) - want).max() <= 1e-5


def test_the_page_says_what_is_wrong_with_a_seed(page, seed_site):
    from playwright.sync_api import expect

    page.goto(seed_site[0])
    expect(page.locator("#grid")).to_have_attribute("data-seed", "0")
    for typed, message in [
        ("-5", "seed: -5 is below the minimum 0"),
        ("4294967296", "seed: 4294967296 is above the maximum 4294967295"),
    ]:
        page.fill("#seed", typed)
        page.press("#seed", "Enter")
        expect(page.locator("#samples-error")).to_have_text(message)
    page.fill("#seed", "5")
    page.press("#seed", "Enter")
    expect(page.locator("#samples-error")).to_be_hidden()


def test_the_page_of_a_conditional_model(page, cond_site, artifacts):
    from playwright.sync_api import expect

    model, grid = opened(page, cond_site, "10 (conditional)")
    assert near(shown(page)[0], drawn(model, "--n", 16, "--seed", 0))  # the classes in turn

    page.select_option("#digit", "3")
    expect(grid).to_have_attribute("data-label", "3")
    threes = shown(page)[0]
    assert near(threes, drawn(model, "--n", 16, "--seed", 0, "--label", 3))
    assert not near(threes, drawn(model, "--n", 16, "--seed", 0, "--label", 4))

    page.select_option("#digit", "all")
    expect(grid).to_have_attribute("data-label", "all")
    pixels, data, _ = shown(page)
    per = int(data["n"])
    assert near(pixels, drawn(model, "--class-grid", "--n", per, "--seed", 0))

    # the walk draws the digit chosen for it
    expect(page.locator("#walk-frame")).to_have_attribute("data-seeds", "0-1")
    walk = ["--seed", 0, "--walk", 1, "--n", 24, "--label"]
    assert near(make_grid(walk_frames(page), nrow=24), drawn(model, *walk, 0))
    page.select_option("#walk-digit", "7")
    assert walk_becomes(page, drawn(model, *walk, 7))
    page.screenshot(path=artifacts / "web-page-conditional.png", full_page=True)


def test_the_page_of_a_model_with_learnt_categories(page, cat_site, artifacts):
    from playwright.sync_api import expect

    model, grid = opened(page, cat_site, "unconditional, 4 learnt categories")
    expect(page.locator("#digit-field")).to_contain_text("Category")
    assert near(shown(page)[0], drawn(model, "--n", 16, "--seed", 0))  # any category

    page.select_option("#digit", "2")
    expect(grid).to_have_attribute("data-category", "2")
    twos = shown(page)[0]
    assert near(twos, drawn(model, "--n", 16, "--seed", 0, "--category", 2))
    assert not near(twos, drawn(model, "--n", 16, "--seed", 0))

    page.select_option("#digit", "all")
    expect(grid).to_have_attribute("data-category", "all")
    pixels, data, _ = shown(page)
    assert near(pixels, drawn(model, "--class-grid", "--n", int(data["n"]), "--seed", 0))

    # the walk: of any category, then within the category chosen for it
    walk = ["--seed", 0, "--walk", 1, "--n", 24]
    expect(page.locator("#walk-frame")).to_have_attribute("data-seeds", "0-1")
    assert near(make_grid(walk_frames(page), nrow=24), drawn(model, *walk))
    page.select_option("#walk-digit", "1")
    assert walk_becomes(page, drawn(model, *walk, "--category", 1))
    page.screenshot(path=artifacts / "web-page-categories.png", full_page=True)
