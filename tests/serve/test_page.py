"""The page in a real headless browser (Playwright driving Debian's Chromium) against servers
started here on 127.0.0.1. Screenshots go to test-artifacts/ at the repository root."""

from __future__ import annotations

import io
import json
import urllib.request

import numpy as np
import pytest
from helpers import download_grid
from PIL import Image

import digitgan


def api_png(url: str, body: dict) -> bytes:
    data, headers = json.dumps(body).encode(), {"Content-Type": "application/json"}
    req = urllib.request.Request(f"{url}/api/samples", data, headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def shown_png(page) -> bytes:
    """The bytes of the PNG the page shows as its grid."""
    return bytes(
        page.evaluate(
            "async () => Array.from(new Uint8Array(await (await fetch("
            "document.getElementById('grid').src)).arrayBuffer()))"
        )
    )


def shown_request(page) -> dict:
    """The request the page made for the grid it shows (scale: the whole upscaling that fits)."""
    data = page.locator("#grid").evaluate("img => ({...img.dataset})")
    body = {"n": int(data["n"]), "seed": int(data["seed"]), "scale": int(data["scale"])}
    if data["label"]:
        body["label"] = data["label"] if data["label"] == "all" else int(data["label"])
    category = data["category"]  # a number, "all", or part by part, 3,any,7
    if category == "all":
        body["category"] = category
    elif "," in category:
        body["category"] = [None if v == "any" else int(v) for v in category.split(",")]
    elif category:
        body["category"] = int(category)
    if float(data["truncation"]) != 1:
        body["truncation"] = float(data["truncation"])
    return body


def frame_pixels(page) -> str:
    return page.evaluate("document.getElementById('walk-frame').toDataURL()")


def size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def test_page_draws_walks_and_downloads(page, cli_server, tmp_path, artifacts):
    from playwright.sync_api import expect

    url = cli_server
    page.goto(url)

    # it loads: the model's facts, and a first grid of 16 digits for seed 0
    expect(page.locator("#summary")).to_have_text("seed preset · 3 iterations · mlp on mnist20k")
    expect(page.locator("#facts")).to_contain_text("Iterations trained3")
    expect(page.locator("#no-metrics")).to_be_visible()
    expect(page.locator("#digit-field")).to_be_hidden()  # an unconditional model
    grid = page.locator("#grid")
    expect(grid).to_have_attribute("data-seed", "0")
    shown = shown_request(page)
    assert shown == {"n": 16, "seed": 0, "scale": shown["scale"]}
    assert shown_png(page) == api_png(url, shown)
    assert size(shown_png(page)) == (122 * shown["scale"], 122 * shown["scale"])
    assert shown["scale"] >= 3  # 16 digits are shown large

    # draw again: a new seed, written into the seed field, and its grid
    page.click("#again")
    expect(grid).not_to_have_attribute("data-seed", "0")
    seed = int(page.input_value("#seed"))
    expect(grid).to_have_attribute("data-seed", str(seed))
    assert shown_request(page)["seed"] == seed
    assert shown_png(page) == api_png(url, shown_request(page))

    # how many, and a seed typed in
    page.select_option("#count", "36")
    expect(grid).to_have_attribute("data-n", "36")
    page.fill("#seed", "1234")
    page.press("#seed", "Enter")
    expect(grid).to_have_attribute("data-seed", "1234")
    png = shown_png(page)
    shown = shown_request(page)
    assert shown["n"] == 36 and png == api_png(url, shown)
    assert size(png) == (182 * shown["scale"], 182 * shown["scale"])

    # the latent walk: moving the slider changes the picture
    frame = page.locator("#walk-frame")
    expect(frame).to_have_attribute("data-seeds", "0-1")
    first = frame_pixels(page)
    page.focus("#walk-slider")
    page.keyboard.press("End")
    expect(frame).to_have_attribute("data-frame", "23")
    expect(page.locator("#walk-position")).to_have_text("frame 24 of 24")
    assert frame_pixels(page) != first
    page.keyboard.press("Home")
    expect(frame).to_have_attribute("data-frame", "0")
    assert frame_pixels(page) == first
    # ... and so does the animation, until paused
    page.click("#walk-play")
    expect(frame).not_to_have_attribute("data-frame", "0")
    page.click("#walk-play")
    expect(page.locator("#walk-play")).to_have_text("Play")
    # other seeds make another walk
    page.fill("#seed-b", "77")
    page.press("#seed-b", "Enter")
    expect(frame).to_have_attribute("data-seeds", "0-77")

    # the truncation slider redraws the grid and the walk with the noise pulled to the mean
    expect(page.locator("#truncation")).to_have_value("1")
    plain, walk = shown_png(page), frame_pixels(page)
    page.fill("#truncation", "0")  # moves the slider: an input and a change event
    expect(grid).to_have_attribute("data-truncation", "0")
    expect(frame).to_have_attribute("data-truncation", "0")
    expect(page.locator("#truncation-value")).to_have_text("0.00")
    assert shown_request(page) == {**shown, "truncation": 0.0}
    assert shown_png(page) == api_png(url, shown_request(page)) != plain
    assert frame_pixels(page) != walk
    page.fill("#truncation", "1")
    expect(grid).to_have_attribute("data-truncation", "1")
    assert shown_png(page) == plain

    # download the current grid as PNG
    saved = download_grid(page, tmp_path)
    assert saved.name == "digitgan-seed1234-n36.png"
    assert saved.read_bytes() == png
    assert np.asarray(Image.open(saved)).shape == (182 * shown["scale"], 182 * shown["scale"])

    page.screenshot(path=artifacts / "serve-page.png", full_page=True)


def test_page_shows_the_servers_error_messages(page, page_errors, cli_server):
    from playwright.sync_api import expect

    url = cli_server
    page.goto(url)
    expect(page.locator("#grid")).to_have_attribute("data-seed", "0")
    page.fill("#seed", "-5")
    page.press("#seed", "Enter")
    error = page.locator("#samples-error")
    expect(error).to_have_text("seed: -5 is below the minimum 0")
    page.fill("#seed", "5")
    page.press("#seed", "Enter")
    expect(error).to_be_hidden()
    expect(page.locator("#grid")).to_have_attribute("data-seed", "5")
    # the browser logs the 422 response itself; that one was on purpose
    page_errors[:] = [e for e in page_errors if "status of 422" not in e]


def test_page_for_a_conditional_model(page, cond_url, artifacts):
    from playwright.sync_api import expect

    page.goto(cond_url)
    grid = page.locator("#grid")
    expect(grid).to_have_attribute("data-seed", "0")
    expect(page.locator("#facts")).to_contain_text("10 (conditional)")
    options = page.locator("#digit option").all_inner_texts()
    assert options == ["any", *map(str, range(10)), "all, one row each"]

    # choose a digit: the grid is redrawn as that digit
    before = shown_png(page)
    page.select_option("#digit", "3")
    expect(grid).to_have_attribute("data-label", "3")
    png = shown_png(page)
    assert png != before
    assert shown_request(page)["label"] == 3
    assert png == api_png(cond_url, shown_request(page))

    # the class-by-sample grid: one row per digit
    page.select_option("#digit", "all")
    expect(grid).to_have_attribute("data-label", "all")
    expect(page.locator("#digit-field")).to_be_visible()
    expect(page.locator("label", has=page.locator("#count"))).to_contain_text("Per digit")
    shown = shown_request(page)
    n, scale = shown["n"], shown["scale"]
    assert size(shown_png(page)) == ((2 + n * 30) * scale, (2 + 10 * 30) * scale)
    assert shown_png(page) == api_png(cond_url, shown)

    # the walk draws the digit chosen for it
    frame = page.locator("#walk-frame")
    expect(frame).to_have_attribute("data-seeds", "0-1")
    zero = page.evaluate("document.getElementById('walk-frame').toDataURL()")
    page.select_option("#walk-digit", "7")
    page.wait_for_function("z => document.getElementById('walk-frame').toDataURL() !== z", arg=zero)

    # a drawing searched in one chosen class is found as that digit
    assert page.locator("#draw-digit option").all_inner_texts() == ["any", *map(str, range(10))]
    page.select_option("#draw-digit", "4")
    draw_strokes(page, [[(90, 40), (60, 170), (200, 170)], [(170, 60), (170, 250)]])
    with page.expect_response("**/api/project") as answer:
        page.click("#draw-find")
    assert answer.value.json()["label"] == 4
    expect(page.locator("#draw-card")).to_have_attribute("data-label", "4")
    expect(page.locator("#found-caption")).to_have_text("The model's closest digit, drawn as a 4")
    page.screenshot(path=artifacts / "serve-page-conditional.png", full_page=True)


def rms(a: np.ndarray, b: np.ndarray) -> float:
    """Root mean squared difference per pixel of two uint8 images, in [0, 1] units."""
    return float(np.sqrt(np.mean((a.astype(float) / 255 - b.astype(float) / 255) ** 2)))


def draw_strokes(page, strokes) -> None:
    """Draw with the mouse on the pad: each stroke a list of (x, y) in pad pixels (280)."""
    page.locator("#pad").scroll_into_view_if_needed()
    box = page.locator("#pad").bounding_box()
    scale = box["width"] / 280
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * scale, box["y"] + y * scale)
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=8)
        page.mouse.up()


def test_a_digit_drawn_on_the_page_is_found_in_the_model(page, cli_server, artifacts):
    from playwright.sync_api import expect

    url = cli_server
    page.goto(url)
    expect(page.locator("#grid")).to_have_attribute("data-seed", "0")
    find = page.locator("#draw-find")
    expect(find).to_be_disabled()  # nothing drawn yet
    draw_strokes(page, [[(190, 40), (110, 250)], [(70, 40), (200, 40)]])  # a 7
    expect(find).to_be_enabled()
    with page.expect_response("**/api/project") as answer:
        find.click()
    assert answer.value.status == 200
    found = answer.value.json()
    card = page.locator("#draw-card")
    expect(card).to_have_attribute("data-distance", str(found["distance"]))

    # the drawing reached the server: ink where the strokes were, and only there
    drawing = np.array(found["drawing"], dtype=np.uint8)[0]
    assert drawing.max() == 255 and (drawing > 0).mean() < 0.4
    assert drawing[:, :3].max() == 0 and drawing[:, -3:].max() == 0  # fitted into the box
    # the model's digit is closer to the drawing than random samples are
    projection = np.array(found["projection"], dtype=np.uint8)[0]
    assert found["distance"] == pytest.approx(rms(drawing, projection), abs=0.01)
    req = urllib.request.Request(
        f"{url}/api/samples",
        json.dumps({"n": 16, "seed": 4321, "format": "json"}).encode(),
        {"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        randoms = np.array(json.load(r)["images"], dtype=np.uint8)[:, 0]
    assert found["distance"] < min(rms(drawing, sample) for sample in randoms)

    # the page shows it: the distance, three nearest training digits, the walk
    expect(page.locator("#found-distance")).to_contain_text(f"{found['distance']:.3f}")
    expect(page.locator("#found-more")).to_be_visible()
    captions = page.locator("#nearest figcaption").all_inner_texts()
    assert len(captions) == 3
    for caption, near in zip(captions, found["nearest"], strict=True):
        a = "an" if near["label"] == 8 else "a"
        assert caption == f"#{near['index']}, {a} {near['label']}: {near['distance']:.3f}"
    said = page.evaluate("[7, 8, 11, 18, 80, 118, 1800, 18000].map(withArticle)")
    assert said == ["a 7", "an 8", "an 11", "an 18", "an 80", "a 118", "a 1800", "an 18000"]
    expect(page.locator("#nearest-hint")).to_contain_text("memorisation check")
    walk = page.locator("#found-walk")
    assert walk.evaluate("c => [c.width, c.height]") == [280, 28]
    page.screenshot(path=artifacts / "serve-page-drawing.png", full_page=True)

    # clearing the pad leaves nothing to find
    page.click("#draw-clear")
    expect(find).to_be_disabled()


def test_page_for_a_colour_model(page, running, colour_run, artifacts):
    from playwright.sync_api import expect

    from digitgan.serve import create_app

    with running(create_app(digitgan.load(colour_run))) as url:
        page.goto(url)
        grid = page.locator("#grid")
        expect(grid).to_have_attribute("data-seed", "0")
        expect(page.locator("#summary")).to_contain_text("dcgan on stacked-mnist20k")
        expect(page.locator("#facts")).to_contain_text("28\u00d728, 3 channels")
        png = shown_png(page)
        assert png == api_png(url, shown_request(page))
        assert Image.open(io.BytesIO(png)).mode == "RGB"
        # a category chosen channel by channel, as the server draws it
        page.select_option("#digit-part-0", "1")
        expect(grid).to_have_attribute("data-category", "1,any,any")
        assert shown_request(page)["category"] == [1, None, None]
        assert shown_png(page) == api_png(url, shown_request(page)) != png
        # the walk's frames in colour: somewhere red, green and blue differ
        frame = page.locator("#walk-frame")
        expect(frame).to_have_attribute("data-seeds", "0-1")
        colours = page.evaluate(
            "() => { const c = document.getElementById('walk-frame');"
            " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let n = 0; for (let i = 0; i < d.length; i += 4)"
            " if (d[i] !== d[i + 1] || d[i + 1] !== d[i + 2]) n++; return n; }"
        )
        assert colours > 0
        # eval.json's modes and their real-data floor, in the metrics table
        row = page.locator("#metrics tr", has_text="modes_covered")
        expect(row).to_be_visible()
        saved = json.loads((colour_run / "eval.json").read_text())
        floor = str(saved["floor"]["modes_covered"])
        expect(row.locator("td").nth(2)).to_have_text(floor)
        page.screenshot(path=artifacts / "serve-page-colour.png", full_page=True)


@pytest.mark.parametrize("max_n", [19, 20])
def test_page_offers_a_grid_of_every_class_only_where_it_fits(page, running, cond_gan, max_n):
    """Two samples of each of 10 classes are 20 images: under a server limit of 19 (as
    stacked's 1,000 categories against 256) the page leaves "all" out and draws the rest."""
    from playwright.sync_api import expect

    from digitgan.serve import create_app

    def with_limit(route):
        info = route.fetch().json()
        info["limits"]["max_n"] = max_n
        route.fulfill(json=info)

    with running(create_app(cond_gan)) as url:
        page.route("**/api/info", with_limit)
        page.goto(url)
        grid = page.locator("#grid")
        expect(grid).to_have_attribute("data-seed", "0")
        options = page.locator("#digit option").all_inner_texts()
        every = ["all, one row each"] if max_n == 20 else []
        assert options == ["any", *map(str, range(10)), *every]
        page.select_option("#digit", "3")
        expect(grid).to_have_attribute("data-label", "3")
        assert shown_png(page) == api_png(url, shown_request(page))
