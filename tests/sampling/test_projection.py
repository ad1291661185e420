"""Finding images in a generator: Sampler.project recovers what the generator drew, a drawing
file is prepared as MNIST's digits are, bad images are refused in one line, and
`digitgan project` writes its results."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from helpers import png_header
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

import digitgan
from digitgan.cli import main
from digitgan.errors import ConfigError, ImageError, ImageTooLargeError
from digitgan.projection import (
    DIGIT_BOX,
    decode_image,
    nearest_training,
    read_image,
    training_digits,
)
from digitgan.sampling import Sampler

SHAPE = (1, 28, 28)
TOLERANCE = 0.02
"""The root mean squared pixel difference (in [0, 1] units) within which a projection must
reproduce an image the generator drew itself."""


@pytest.fixture(scope="module")
def seed_gan(tmp_path_factory, small_data, tiny, one_thread):
    """A tiny seed model (16 hidden units, 8 noise dimensions) trained for 20 iterations."""
    cfg = tiny("seed", train__iters=20, log__sample_every=0, log__tb_every=0)
    run = tmp_path_factory.mktemp("project") / "run"
    digitgan.train(cfg, run, dataset=small_data, progress=False)
    return digitgan.load(run)


def rms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root mean squared difference per pixel of each pair of images (broadcast)."""
    return (a - b).square().flatten(-3).mean(-1).sqrt()


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def seven(size=(200, 300), ink=0, paper=255, mode="L") -> Image.Image:
    """A hand-drawn-looking 7: a bar and a slanted stroke."""
    im = Image.new(mode, size, paper)
    w, h = size
    stroke = [(w * 0.2, h * 0.17), (w * 0.8, h * 0.17), (w * 0.45, h * 0.87)]
    ImageDraw.Draw(im).line(stroke, fill=ink, width=max(2, w // 11))
    return im


# --- the search ------------------------------------------------------------------------------


def test_projection_recovers_what_the_generator_drew(seed_gan):
    z_true = seed_gan.noise(3, seed=5)
    target = seed_gan.decode(z_true)
    found = seed_gan.project(target, restarts=4, steps=300, seed=0)
    assert found.noise.shape == z_true.shape and found.labels is None
    assert found.images.shape == target.shape and found.steps == 300
    assert not found.stopped_early
    # G(z_found) reproduces G(z_true) within the tolerance, far closer than random samples
    assert torch.allclose(found.distance, rms(found.images, target), atol=1e-5)
    assert found.distance.max() < TOLERANCE
    randoms = rms(seed_gan.generate(64, seed=7)[None], target[:, None]).min(dim=1).values
    assert (found.distance < randoms / 4).all(), (found.distance, randoms)
    # the noise found draws the images reported, and stays in the noise's range
    assert torch.allclose(seed_gan.decode(found.noise), found.images, atol=1e-6)
    assert found.noise.abs().max() <= 1


def test_projection_is_reproducible_and_takes_uint8_images(seed_gan):
    target = seed_gan.sample(2, seed=3)  # uint8 (2, 1, 28, 28)
    a = seed_gan.project(target, steps=20, seed=1)
    b = seed_gan.project(torch.from_numpy(target).float() / 255, steps=20, seed=1)
    assert torch.equal(a.noise, b.noise) and torch.equal(a.distance, b.distance)
    assert not torch.equal(a.noise, seed_gan.project(target, steps=20, seed=2).noise)


def test_the_best_restart_wins_and_a_time_limit_stops_the_search(seed_gan):
    target = seed_gan.generate(1, seed=11)
    found = seed_gan.project(target, restarts=5, steps=300, seed=4, time_limit=0)
    assert found.steps == 0 and found.stopped_early
    # no step taken: the answer is the best of the 5 starting points, the noise of seed 4
    start = seed_gan.decode(seed_gan.noise(5, seed=4))
    errors = rms(start, target[0])
    assert torch.allclose(found.distance, errors.min(), atol=1e-6)
    assert torch.equal(found.noise[0], seed_gan.noise(5, seed=4)[int(errors.argmin())])
    # more steps only get closer
    assert seed_gan.project(target, restarts=5, steps=50, seed=4).distance < found.distance


def test_a_conditional_model_is_searched_in_every_class_or_the_one_asked(cond_run, one_thread):
    gan = digitgan.load(cond_run)
    target = gan.generate(2, seed=3, labels=[7, 2])
    found = gan.project(target, restarts=1, steps=100, seed=0)
    assert found.labels.shape == (2,) and found.labels.dtype == torch.long
    assert 0 <= int(found.labels.min()) and int(found.labels.max()) <= 9
    assert found.distance.max() < TOLERANCE
    assert torch.allclose(gan.decode(found.noise, found.labels), found.images, atol=1e-5)
    # zero steps: the best start over all ten classes is as good as any one class's start
    every = gan.project(target, restarts=1, steps=0, seed=0)
    starts = gan.decode(gan.noise(20, seed=0), torch.arange(10).repeat(2))
    best = rms(starts.view(2, 10, *starts.shape[1:]), target[:, None]).min(dim=1)
    assert torch.allclose(every.distance, best.values, atol=1e-5)
    assert torch.equal(every.labels, best.indices)
    fixed = gan.project(target, labels=3, restarts=2, steps=10)
    assert fixed.labels.tolist() == [3, 3]
    with pytest.raises(ConfigError, match="label 10 is out of range 0..9"):
        gan.project(target, labels=10)


def test_a_search_over_every_class_goes_on_with_the_best_candidates(cond_run, one_thread):
    class Counting(Sampler):
        """The model, counting the images it draws at each call."""

        rows: list[int] = []

        def image_of(self, z, labels=None):
            self.rows.append(len(z))
            return super().image_of(z, labels)

    plain = digitgan.load(cond_run)
    gan = Counting(plain.generator, plain.config, plain.meta, plain.path, plain.ema)
    target = gan.generate(2, seed=3, labels=[7, 2])
    gan.rows = []
    found = gan.project(target, restarts=2, steps=8, seed=0)
    # 2 steps over 2 images x 10 classes x 2 restarts, the ranking, 6 steps over the best 2 of
    # each image's 20, the final ranking of those, the images of the 2 winners
    assert gan.rows == [40, 40, 40] + [4] * 6 + [4, 2]
    assert torch.allclose(plain.decode(found.noise, found.labels), found.images, atol=1e-5)
    assert torch.allclose(found.distance, rms(found.images, target), atol=1e-5)
    gan.rows = []
    gan.project(target, labels=[7, 2], restarts=2, steps=8, seed=0)  # one class: no narrowing
    assert gan.rows == [4] * 9 + [2]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"restarts": 0}, "--restarts 0: expected 1 to 64"),
        ({"steps": -1}, "--steps -1: expected 0 to 10,000"),
        ({"lr": float("nan")}, "--lr nan: expected a positive number"),
        ({"time_limit": -1}, "--time-limit -1: expected seconds >= 0"),
        ({"restarts": True}, "--restarts True"),
        ({"labels": 1}, "--label: this model is unconditional"),
    ],
)
def test_bad_search_settings_are_refused(seed_gan, options, message):
    with pytest.raises(ConfigError, match=message):
        seed_gan.project(seed_gan.sample(1), **options)


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((2, 1, 14, 14), np.uint8), r"shape \(2, 1, 14, 14\), expected \(N, 1, 28, 28\)"),
        (np.zeros((0, 1, 28, 28), np.uint8), r"shape \(0, 1, 28, 28\)"),
        (torch.full((1, 1, 28, 28), 2.0), r"float images must lie in \[0, 1\]"),
        (torch.full((1, 1, 28, 28), float("nan")), r"float images must lie in \[0, 1\]"),
    ],
)
def test_images_of_another_shape_or_range_are_refused(seed_gan, images, message):
    with pytest.raises(ConfigError, match=message):
        seed_gan.project(images)


def test_too_many_searches_at_once_are_refused(cond_run):
    gan = digitgan.load(cond_run)
    with pytest.raises(ConfigError, match=r"50 images x 10 classes x 16 restarts = 8,000"):
        gan.project(torch.zeros(50, *SHAPE), restarts=16)


def test_a_walk_from_a_found_point_starts_there(seed_gan):
    found = seed_gan.project(seed_gan.generate(1, seed=2), steps=30)
    walk = seed_gan.walk(found.noise[0], seed_gan.noise(1, seed=9)[0], steps=6)
    assert walk.shape == (6, *SHAPE)
    assert torch.allclose(walk[0], found.images[0], atol=1e-6)
    assert torch.allclose(walk[-1], seed_gan.generate(1, seed=9)[0], atol=1e-6)


# --- the drawing -----------------------------------------------------------------------------


def test_a_drawing_is_prepared_as_mnist_digits_are():
    x = decode_image(png(seven()), SHAPE)
    assert x.shape == SHAPE and x.dtype == torch.float32
    assert float(x.max()) == pytest.approx(1.0) and float(x.min()) == 0.0  # light ink on black
    ink = torch.nonzero(x[0] > 0.1)
    height, width = (ink.max(dim=0).values - ink.min(dim=0).values + 1).tolist()
    assert max(height, width) == round(DIGIT_BOX * 28)  # the longer side fills 20 of 28
    mass = x[0] / x[0].sum()
    centre = [
        (mass.sum(dim=1) * torch.arange(28)).sum(),
        (mass.sum(dim=0) * torch.arange(28)).sum(),
    ]
    assert all(abs(float(c) - 13.5) <= 1 for c in centre)  # centred by mass
    # dark ink on paper, light ink on black, and either on a transparent background: the same
    light = decode_image(png(seven(ink=255, paper=0)), SHAPE)
    assert torch.allclose(x, light, atol=1 / 255)
    for ink_colour in ((0, 0, 0, 255), (255, 255, 255, 255)):
        clear = decode_image(png(seven(ink=ink_colour, paper=(0, 0, 0, 0), mode="RGBA")), SHAPE)
        assert torch.allclose(x, clear, atol=1 / 255)
    # the place and size on the page do not matter
    big = Image.new("L", (900, 600), 255)
    big.paste(seven((100, 150)), (700, 40))
    assert rms(decode_image(png(big), SHAPE), x) < 0.08


@settings(max_examples=150, deadline=None)
@given(
    size=st.tuples(st.integers(28, 90), st.integers(28, 90)),
    mode=st.sampled_from(["L", "LA", "RGB", "RGBA", "P", "1", "I;16"]),
    pixels=st.sampled_from(["random", "dot", "line", "edge", "flat"]),
    seed=st.integers(0, 2**16),
    fit=st.booleans(),
)
def test_any_image_is_prepared_or_refused_in_one_line(size, mode, pixels, seed, fit):
    """Whatever it shows, an image comes out as the model's shape in [0, 1] with its ink at
    1, or as an ImageError."""
    w, h = size
    rng = np.random.default_rng(seed)
    grey = {
        "random": lambda: rng.integers(0, 256, (h, w)),
        "dot": lambda: np.pad([[255]], ((rng.integers(h), 0), (rng.integers(w), 0)))[:h, :w],
        "line": lambda: np.where(np.arange(w) == rng.integers(w), 255, 0)[None].repeat(h, 0),
        "edge": lambda: np.where(np.arange(h) < 2, 255, 0)[:, None].repeat(w, 1),
        "flat": lambda: np.full((h, w), rng.integers(0, 256)),
    }[pixels]()
    grey = np.pad(grey, ((0, max(0, h - len(grey))), (0, max(0, w - grey.shape[1]))))
    if mode == "I;16":  # 16-bit grey
        image = Image.fromarray(grey.astype(np.uint16) * 257)
    else:
        image = Image.fromarray(grey.astype(np.uint8)).convert(mode)
    try:
        x = decode_image(png(image), SHAPE, fit=fit, what="image x")
    except ImageError as e:
        assert str(e).startswith("image x: ") and "\n" not in str(e)
        return
    assert x.shape == SHAPE and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1 and float(x.max()) > 0


def test_a_16_bit_drawing_keeps_its_grey_levels():
    grey = seven(ink=60, paper=220)  # grey ink on grey paper
    sixteen = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)  # the same, 16 bits
    assert sixteen.mode == "I;16"
    assert torch.allclose(decode_image(png(sixteen), SHAPE), decode_image(png(grey), SHAPE))


def test_without_fit_an_mnist_digit_is_read_back_exactly(mnist20k, tmp_path):
    digit = mnist20k.train.images[0]  # (1, 28, 28) uint8
    path = tmp_path / "digit.png"
    Image.fromarray(digit[0]).save(path)
    x = read_image(path, SHAPE, fit=False)
    assert digit.max() == 255  # (else its ink would be scaled to 255)
    assert np.array_equal(np.round(x.numpy() * 255).astype(np.uint8), digit)


def test_the_nearest_training_digits_are_found(mnist20k):
    train = mnist20k.train
    images = torch.from_numpy(train.images[[5, 17]]).float() / 255
    distance, index = nearest_training(images, train, k=3)
    assert index[:, 0].tolist() == [5, 17]
    # a digit's distance to itself: 0 up to the rounding of the expanded squares (2e-4 seen
    # on an AMD EPYC, exactly 0 on an Intel Xeon)
    assert distance[:, 0].abs().max() < 1e-3
    flat = train.images.reshape(len(train.images), -1).astype(np.float64) / 255
    brute = np.sqrt(((flat[None] - images.flatten(1).numpy()[:, None]) ** 2).mean(axis=2))
    assert np.array_equal(index.numpy(), np.argsort(brute, axis=1, kind="stable")[:, :3])
    assert np.allclose(distance.numpy(), np.sort(brute, axis=1)[:, :3], atol=1e-3)


def test_the_training_digits_are_the_runs_dataset(seed_gan, mnist20k):
    assert np.array_equal(training_digits(seed_gan).images, mnist20k.train.images)


def _bomb_header() -> bytes:
    """A valid PNG of 5000 x 5000 black pixels (small to send, large to decode)."""
    return png(Image.new("L", (5000, 5000)))


@pytest.mark.parametrize(
    "data, error, message",
    [
        (b"hello, not an image", ImageError, "not an image file (expected one of PNG"),
        (png(seven())[:60], ImageError, "not a readable image"),
        (png(Image.new("L", (20, 20), 0)), ImageError, "20x20 pixels, smaller than the model's"),
        (png(Image.new("L", (50, 50), 200)), ImageError, "blank (no stroke stands out"),
        (png(Image.new("RGBA", (50, 50), (0, 0, 0, 0))), ImageError, "blank"),
        (_bomb_header(), ImageTooLargeError, "5000x5000 pixels, more than the 16,777,216"),
        (png_header(30, 10**6), ImageTooLargeError, "30x1000000 pixels, more than the"),
        (png_header(10**4, 10**4), ImageTooLargeError, "more than the 16,777,216 pixels"),
        (png_header(20000, 20000), ImageTooLargeError, "more than the 16,777,216 pixels"),
    ],
    ids=[
        "not-an-image",
        "truncated",
        "too-small",
        "blank",
        "transparent",
        "too-many-pixels",
        "tall",
        "pillow-warns",
        "pillow-refuses",
    ],
)
def test_bad_images_are_refused_in_one_line(data, error, message):
    with pytest.raises(error) as e:
        decode_image(data, SHAPE, what="image x.png")
    assert str(e.value).startswith("image x.png: ") and message in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "n, said",
    [(7, "a 7"), (8, "an 8"), (11, "an 11"), (18, "an 18"), (80, "an 80"), (118, "a 118")]
    + [(1800, "a 1800"), (18000, "an 18000"), (11000000, "an 11000000")],
)
def test_numbers_in_messages_take_the_article_they_are_read_with(n, said):
    from digitgan.cli import _a

    assert _a(n) == said


# --- digitgan project ------------------------------------------------------------------------


def test_digitgan_project_writes_the_pictures_and_numbers(seed_gan, tmp_path, capsys):
    drawing = tmp_path / "seven.png"
    seven().save(drawing)
    out = tmp_path / "found"
    argv = ["project", str(seed_gan.path), str(drawing), "--out", str(out), "--steps", "50"]
    assert main([*argv, "--walk-to", "4"]) == 0
    printed = capsys.readouterr().out
    assert "after 50 steps" in printed and "nearest training digits" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "projection.json",
        "projection.png",
        "walk.png",
    ]
    doc = json.loads((out / "projection.json").read_text())
    assert doc["image"] == str(drawing) and doc["steps"] == 50 and doc["walk_to"] == 4
    assert doc["label"] is None and len(doc["noise"]) == seed_gan.config.model.z_dim
    # the numbers are those of the library call
    again = seed_gan.project(read_image(drawing, SHAPE), steps=50)
    assert doc["distance"] == pytest.approx(float(again.distance[0]), abs=1e-6)
    near = [d["distance"] for d in doc["nearest"]]
    assert len(near) == 3 and near == sorted(near)
    for d in doc["nearest"]:  # "#5046 (an 8, 0.2420)"
        a = "an" if d["label"] == 8 else "a"
        assert f"#{d['index']} ({a} {d['label']}, {d['distance']:.4f})" in printed
    # one row: the drawing, the model's digit, three training digits; a walk of 10 frames
    assert Image.open(out / "projection.png").size == (2 + 5 * 30, 32)
    assert Image.open(out / "walk.png").size == (2 + 10 * 30, 32)


@pytest.mark.parametrize(
    "make, args, message",
    [
        (lambda p: p.write_text("not an image"), [], "image {img}: not an image file"),
        (lambda p: None, [], "image {img}: no such file"),
        (lambda p: p.mkdir(), [], "image {img}: is a folder, not a file"),
        (lambda p: None, ["--out", "{tmp}/a\x00b"], "not a folder name (it holds a NUL"),
        (lambda p: seven((20, 20)).save(p, "PNG"), [], "20x20 pixels, smaller than"),
        (lambda p: seven().save(p, "PNG"), ["--label", "3"], "this model is unconditional"),
        (lambda p: seven().save(p, "PNG"), ["--time-limit", "nan"], "--time-limit nan: expected"),
        (lambda p: seven().save(p, "PNG"), ["--out", "{tmp}/no/such"], "folder {tmp}/no does not"),
    ],
    ids=["not-an-image", "missing", "folder", "nul", "too-small", "label", "time-limit", "out"],
)
def test_digitgan_project_mistakes_are_one_line(seed_gan, tmp_path, capsys, make, args, message):
    img = tmp_path / "drawing.png"
    make(img)
    out = tmp_path / "found"
    argv = ["project", str(seed_gan.path), str(img), "--out", str(out)]
    argv += [a.format(tmp=tmp_path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(img=img, tmp=tmp_path) in err, err
    assert not out.exists()  # nothing written


def test_a_nul_in_the_image_name_is_one_line(seed_gan, tmp_path, capsys):
    argv = ["project", str(seed_gan.path), "a\x00b.png", "--out", str(tmp_path / "found")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a file name (it holds a NUL character)" in err


def test_an_exported_model_folder_is_projected_too(seed_gan, tmp_path):
    from digitgan.export import export
    from digitgan.sampling import project_file

    model = export(seed_gan.path, tmp_path / "model").path
    seven().save(tmp_path / "seven.png")
    found = project_file(model, tmp_path / "seven.png", tmp_path / "found", steps=20)
    direct = project_file(seed_gan.path, tmp_path / "seven.png", tmp_path / "direct", steps=20)
    assert torch.equal(found.projection.noise, direct.projection.noise)
    assert torch.equal(found.nearest_index, direct.nearest_index)  # the run's dataset, too
