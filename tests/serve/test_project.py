"""POST /api/project: a drawing sent as a PNG is found in the model, with the nearest
training digits and a walk; bad drawings get a 4xx with a clear message, never a 5xx."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import torch
from helpers import png_header
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw
from starlette.testclient import TestClient

from digitgan.projection import decode_image, training_digits
from digitgan.serve import create_app
from digitgan.serve.app import MAX_IMAGE_BODY

HEADERS = {"host": "testserver", "content-type": "application/json"}


@pytest.fixture(scope="module")
def client(gan):
    with TestClient(create_app(gan, hosts="testserver"), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def cond_client(cond_gan):
    with TestClient(create_app(cond_gan, hosts="testserver")) as c:
        yield c


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def drawing(size: int = 280) -> bytes:
    """A 4 drawn in white on black, as the page's pad draws."""
    im = Image.new("L", (size, size), 0)
    s = size / 280
    strokes = [[(90, 40), (60, 170), (200, 170)], [(170, 60), (170, 250)]]
    for stroke in strokes:
        ImageDraw.Draw(im).line([(x * s, y * s) for x, y in stroke], fill=255, width=int(22 * s))
    return png_bytes(im)


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def test_a_drawing_is_found_in_the_model(client, gan):
    r = client.post("/api/project", json={"image": data_url(drawing()), "steps": 40, "walk_to": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["shape"] == [1, 28, 28] and body["label"] is None
    assert body["steps"] == 40 and body["walk_to"] == 5 and not body["stopped_early"]
    as_array = {k: np.array(body[k], dtype=np.uint8) for k in ("drawing", "projection", "walk")}
    # the drawing as the model saw it: the library's preparation of the same PNG
    prepared = decode_image(drawing(), (1, 28, 28))
    assert np.array_equal(as_array["drawing"], np.round(prepared.numpy() * 255).astype(np.uint8))
    # the projection is Sampler.project's, and its distance that of the two images
    found = gan.project(prepared[None], steps=40)
    assert body["distance"] == pytest.approx(float(found.distance[0]), abs=1e-5)
    assert np.abs(as_array["projection"] / 255 - found.images[0].numpy()).max() <= 0.5 / 255 + 1e-6
    assert body["noise"] == pytest.approx(found.noise[0].tolist(), abs=1e-5)
    # a walk of 10 frames from the found digit to seed 5's first sample
    assert as_array["walk"].shape == (10, 1, 28, 28)
    assert np.abs(as_array["walk"][0].astype(int) - as_array["projection"]).max() <= 1
    end = np.round(gan.generate(1, seed=5)[0].numpy() * 255)
    assert np.abs(as_array["walk"][-1] - end).max() <= 1
    # the three training digits nearest to the model's digit, as stored
    train = training_digits(gan)
    assert len(body["nearest"]) == len(body["nearest_images"]) == 3
    for near, image in zip(body["nearest"], body["nearest_images"], strict=True):
        assert np.array_equal(np.array(image, dtype=np.uint8), train.images[near["index"]])
        assert near["label"] == int(train.labels[near["index"]])
        mine = torch.from_numpy(train.images[near["index"]]).float() / 255
        assert near["distance"] == pytest.approx(
            float((mine - found.images[0]).square().mean().sqrt()), abs=1e-5
        )
    assert [n["distance"] for n in body["nearest"]] == sorted(
        n["distance"] for n in body["nearest"]
    )
    assert body["nearest_note"] is None


def test_plain_base64_and_other_formats_are_accepted(client):
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(drawing())).save(jpeg, format="JPEG")
    for data in (base64.b64encode(drawing()).decode(), data_url(jpeg.getvalue())):
        r = client.post("/api/project", json={"image": data, "steps": 1})
        assert r.status_code == 200, r.text


def test_a_conditional_model_finds_a_class_or_searches_the_one_asked(cond_client):
    r = cond_client.post("/api/project", json={"image": data_url(drawing()), "steps": 5})
    assert r.status_code == 200, r.text
    assert r.json()["label"] in range(10)
    r = cond_client.post(
        "/api/project", json={"image": data_url(drawing()), "label": 4, "steps": 5}
    )
    assert r.status_code == 200 and r.json()["label"] == 4
    r = cond_client.post("/api/project", json={"image": data_url(drawing()), "label": 10})
    assert r.status_code == 422 and "label: expected an integer from 0 to 9" in r.json()["error"]


def test_the_search_stops_at_the_time_limit(gan, monkeypatch):
    import digitgan.serve.app as app

    monkeypatch.setattr(app, "PROJECT_SECONDS", 0.0)
    with TestClient(create_app(gan, hosts="testserver")) as c:
        r = c.post("/api/project", json={"image": data_url(drawing()), "steps": 1000})
    assert r.status_code == 200, r.text
    assert r.json()["stopped_early"] and r.json()["steps"] == 0


def test_without_the_training_digits_the_projection_still_comes(gan, monkeypatch):
    import digitgan.serve.app as app

    monkeypatch.setattr(app, "training_digits_or_note", lambda g: (None, "no digits: why"))
    with TestClient(create_app(gan, hosts="testserver")) as c:
        r = c.post("/api/project", json={"image": data_url(drawing()), "steps": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["nearest"] == [] and body["nearest_images"] == []
    assert body["nearest_note"] == "no digits: why"


def _big_png() -> bytes:
    return png_bytes(Image.new("L", (2049, 2048)))


BAD = [
    ({}, 422, "image: required"),
    ({"image": 5}, 422, "image: expected a string"),
    ({"image": None}, 422, "image: expected a string"),
    ({"image": "not base64!"}, 422, "image: not base64"),
    ({"image": "data:text/plain;base64,aGk="}, 422, "image: not base64"),
    ({"image": base64.b64encode(b"hello").decode()}, 422, "image: not an image file"),
    ({"image": data_url(drawing()[:100])}, 422, "image: not a readable image"),
    ({"image": data_url(drawing(20))}, 422, "image: 20x20 pixels, smaller than the model's 28x28"),
    ({"image": data_url(png_bytes(Image.new("L", (64, 64))))}, 422, "image: blank"),
    ({"image": data_url(_big_png())}, 413, "image: 2049x2048 pixels, more than the 4,194,304"),
    ({"image": data_url(png_header(20000, 20000))}, 413, "more than the 4,194,304 pixels"),
    ({"image": "A" * MAX_IMAGE_BODY}, 413, "request body is over the limit of 1048576 bytes"),
    ({"image": data_url(drawing()), "steps": 1001}, 413, "steps: 1001 is above the maximum 1000"),
    ({"image": data_url(drawing()), "restarts": 17}, 413, "restarts: 17 is above the maximum 16"),
    ({"image": data_url(drawing()), "restarts": 0}, 422, "restarts: 0 is below the minimum 1"),
    ({"image": data_url(drawing()), "seed": -1}, 422, "seed: -1 is below the minimum 0"),
    ({"image": data_url(drawing()), "walk_to": "x"}, 422, "walk_to: expected an integer"),
    ({"image": data_url(drawing()), "label": 3}, 422, "label: this model is unconditional"),
    ({"image": data_url(drawing()), "fit": False}, 422, "unknown field 'fit'"),
]


@pytest.mark.parametrize("body, status, message", BAD, ids=lambda v: repr(v)[:40])
def test_bad_drawings_get_a_4xx_with_a_clear_message(client, body, status, message):
    r = client.post("/api/project", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert client.get("/api/info").status_code == 200


def test_a_drawing_must_be_sent_as_json(client):
    r = client.post("/api/project", content=drawing(), headers={"content-type": "image/png"})
    assert r.status_code == 415


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_drawing_gets_a_5xx(client, data, mutate):
    """Damaged PNGs, random bytes and strings, and odd field values: a 2xx or a 4xx."""
    kind = data.draw(st.sampled_from(["mutated", "bytes", "text"]))
    if kind == "mutated":
        image = data_url(mutate(data, drawing(56)))
    elif kind == "bytes":
        image = base64.b64encode(data.draw(st.binary(max_size=300))).decode()
    else:
        image = data.draw(st.text(max_size=40))
    body = {"image": image, "steps": data.draw(st.integers(-2, 3))}
    for field in data.draw(st.lists(st.sampled_from(["seed", "restarts", "walk_to", "label"]))):
        body[field] = data.draw(st.none() | st.integers(-3, 20) | st.floats() | st.text())
    r = client.post("/api/project", content=json.dumps(body).encode(), headers=HEADERS)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert isinstance(r.json()["error"], str)
