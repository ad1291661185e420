"""The HTTP API, through Starlette's TestClient (no socket): every endpoint, every kind of bad
request, errors that leave the server serving, and generation under concurrent requests."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from starlette.testclient import TestClient

import digitgan
from digitgan.errors import ConfigError
from digitgan.serve import create_app
from digitgan.serve.app import MAX_BODY, MAX_N
from digitgan.viz import make_grid, to_uint8


@pytest.fixture(scope="module")
def client(gan):
    with TestClient(create_app(gan, hosts="testserver")) as c:
        yield c


@pytest.fixture(scope="module")
def cond_client(cond_gan):
    with TestClient(create_app(cond_gan, hosts="testserver")) as c:
        yield c


@pytest.fixture(scope="module")
def cat_client(cat_gan):
    with TestClient(create_app(cat_gan, hosts="testserver")) as c:
        yield c


JSON = {"content-type": "application/json"}


def png(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal images, up to one grey level: batches of different sizes round differently."""
    return a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1


def images(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    body = response.json()
    arr = np.array(body["images"], dtype=np.uint8)
    assert list(arr.shape) == body["shape"]
    return arr


# --- the page and its files ----------------------------------------------------------------


def test_page_and_static_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for ref in ("static/api.js", "static/app.js", "static/style.css"):
        assert f'"{ref}"' in page.text  # served locally: no CDN, no build step
        r = client.get(f"/{ref}")
        assert r.status_code == 200 and len(r.content) > 500
    assert "http" not in page.text.replace("http-equiv", "")  # nothing fetched from elsewhere


# --- /api/info -----------------------------------------------------------------------------


def test_info_describes_the_model_and_limits(client, gan):
    info = client.get("/api/info").json()
    assert info["checkpoint"] == str(gan.path)
    assert info["preset"] == "seed" and info["step"] == 3 and info["arch"] == "mlp"
    assert info["dataset"] == "mnist20k" and info["image_shape"] == [1, 28, 28]
    assert info["z_dim"] == 100 and info["noise"] == "uniform" and info["num_classes"] == 0
    assert info["class_names"] == []
    assert info["saved_at"] == gan.meta["saved_at"]
    assert info["metrics"] is None and info["floor"] is None  # no eval.json in the run
    assert info["limits"] == {
        "max_n": 256,
        "max_steps": 64,
        "max_seed": 2**32 - 1,
        "max_scale": 8,
        "max_image_bytes": 1024 * 1024,
        "max_image_pixels": 2048 * 2048,
        "max_restarts": 16,
        "max_project_steps": 1000,
        "project_seconds": 10.0,
    }


def test_info_reports_a_conditional_model(cond_client):
    cond = cond_client.get("/api/info").json()
    assert cond["num_classes"] == 10 and cond["class_names"] == [str(i) for i in range(10)]


def test_info_reads_metrics_and_floor_from_eval_json(tmp_path, gan):
    from digitgan.sampling import Sampler

    ckpt = tmp_path / "checkpoints" / "latest.safetensors"
    moved = Sampler(gan.generator, gan.config, gan.meta, ckpt)  # a run dir we can write to
    (tmp_path / "eval.json").write_text(
        json.dumps({"metrics": {"fid": 41.5, "kid": 0.03}, "floor": {"fid": 1.25}})
    )
    with TestClient(create_app(moved, hosts="testserver")) as c:
        info = c.get("/api/info").json()
    assert info["metrics"] == {"fid": 41.5, "kid": 0.03}
    assert info["floor"] == {"fid": 1.25}


def _in_run(tmp_path, gan):
    """``gan`` as if its checkpoint were in run directory ``tmp_path`` (which we can write to)."""
    from digitgan.sampling import Sampler

    return Sampler(gan.generator, gan.config, gan.meta, tmp_path / "checkpoints" / "x.safetensors")


def _info_within(app_of, seconds: float = 10) -> tuple[int, dict]:
    """(status, JSON) of GET /api/info on the app ``app_of()`` makes; fails after ``seconds``."""
    answer = {}

    def ask():
        with TestClient(app_of(), raise_server_exceptions=False) as c:
            r = c.get("/api/info")
            answer["got"] = r.status_code, r.json()

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(seconds)
    assert "got" in answer, f"no answer from /api/info within {seconds} s"
    return answer["got"]


def _sparse(path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


BAD_EVAL = {  # how to make RUN/eval.json bad, and words of the line logged about it
    "fifo": (lambda p: os.mkfifo(p), "not a regular file"),
    "dev-zero": (lambda p: p.symlink_to("/dev/zero"), "not a regular file"),
    "folder": (lambda p: p.mkdir(), "is a folder"),
    "too-large": (lambda p: _sparse(p, 2**30), "more than the 1,048,576"),
    "not-utf8": (lambda p: p.write_bytes(b'{"metrics": {"\xff": 1}}'), "not UTF-8"),
    "nested": (lambda p: p.write_text(_deep(100_000)), "nested too deeply"),
    "nested-metrics": (
        lambda p: p.write_text('{"metrics": {"fid": ' + _deep(50_000) + "}}"),
        "nested too deeply",
    ),
    "dangling-link": (lambda p: p.symlink_to(p.with_name("gone.json")), "no such file"),
}


@pytest.mark.parametrize("kind", BAD_EVAL)
def test_a_bad_eval_json_shows_no_scores_and_is_logged_in_one_line(tmp_path, gan, caplog, kind):
    make, words = BAD_EVAL[kind]
    path = tmp_path / "eval.json"
    make(path)
    try:
        with caplog.at_level(logging.WARNING, logger="digitgan.serve"):
            status, info = _info_within(
                lambda: create_app(_in_run(tmp_path, gan), hosts="testserver")
            )
    finally:
        if kind == "fifo":  # free a reader that waits for a writer, if one does
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    assert status == 200, info
    assert info["metrics"] is None and info["floor"] is None and info["step"] == 3
    logged = [r.getMessage() for r in caplog.records if r.name == "digitgan.serve"]
    assert len(logged) == 1 and "\n" not in logged[0], logged
    assert str(path) in logged[0] and words in logged[0] and "no scores" in logged[0]


def test_eval_json_is_read_once_when_the_server_starts(tmp_path, gan):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"metrics": {"fid": 7.5}}))
    with TestClient(create_app(_in_run(tmp_path, gan), hosts="testserver")) as c:
        assert c.get("/api/info").json()["metrics"] == {"fid": 7.5}
        path.unlink()
        os.mkfifo(path)  # read per request, this would wait for a writer
        assert _info_within(lambda: c.app)[1]["metrics"] == {"fid": 7.5}


# --- /api/samples --------------------------------------------------------------------------


def test_samples_png_is_the_grid_of_generate(client, gan):
    grid = png(client.post("/api/samples", json={"n": 10, "seed": 7}))
    assert np.array_equal(grid, make_grid(to_uint8(gan.generate(10, seed=7))))
    assert grid.shape == (2 + 3 * 30, 2 + 4 * 30)  # 10 images: 3 rows of ceil(sqrt(10)) = 4
    big = png(client.post("/api/samples", json={"n": 10, "seed": 7, "scale": 3}))
    assert np.array_equal(big, grid.repeat(3, 0).repeat(3, 1))


def test_samples_defaults_and_seeds(client, gan):
    default = png(client.post("/api/samples", headers=JSON))  # empty body: 16 of seed 0
    assert np.array_equal(default, make_grid(to_uint8(gan.generate(16, seed=0))))
    assert np.array_equal(default, png(client.post("/api/samples", json={})))
    assert not np.array_equal(default, png(client.post("/api/samples", json={"seed": 1})))


def test_samples_json_are_the_images_of_generate(client, gan):
    r = client.post("/api/samples", json={"n": 5, "seed": 3, "format": "json"})
    arr = images(r)
    assert arr.shape == (5, 1, 28, 28)
    assert np.array_equal(arr, to_uint8(gan.generate(5, seed=3)))
    assert r.json()["n"] == 5 and r.json()["seed"] == 3 and r.json()["label"] is None
    assert (
        images(client.post("/api/samples", json={"n": MAX_N, "format": "json"})).shape[0] == MAX_N
    )


def test_samples_of_one_class(cond_client, cond_gan):
    arr = images(
        cond_client.post("/api/samples", json={"n": 6, "seed": 2, "label": 3, "format": "json"})
    )
    want = cond_gan.generate(6, seed=2, labels=torch.full((6,), 3))
    assert np.array_equal(arr, to_uint8(want))
    other = images(
        cond_client.post("/api/samples", json={"n": 6, "seed": 2, "label": 8, "format": "json"})
    )
    assert not np.array_equal(arr, other)


def test_class_by_sample_grid(cond_client):
    r = cond_client.post("/api/samples", json={"n": 4, "seed": 5, "label": "all", "format": "json"})
    arr = images(r)
    assert arr.shape == (40, 1, 28, 28) and r.json()["label"] == "all"
    for k in (0, 7):  # row k is the 4 samples of class k for the same seed
        row = images(
            cond_client.post("/api/samples", json={"n": 4, "seed": 5, "label": k, "format": "json"})
        )
        assert same(arr[4 * k : 4 * k + 4], row)
    grid = png(cond_client.post("/api/samples", json={"n": 4, "seed": 5, "label": "all"}))
    assert grid.shape == (2 + 10 * 30, 2 + 4 * 30)  # one row per class


def test_samples_of_one_learnt_category_and_a_grid_of_them_all(cat_client, cat_gan):
    info = cat_client.get("/api/info").json()
    assert info["categories"] == 4 and info["num_classes"] == 0
    r = cat_client.post("/api/samples", json={"n": 6, "seed": 2, "category": 3, "format": "json"})
    assert r.json()["category"] == 3 and r.json()["label"] is None
    assert np.array_equal(images(r), to_uint8(cat_gan.generate(6, seed=2, category=3)))
    assert not np.array_equal(images(r), to_uint8(cat_gan.generate(6, seed=2)))
    body = {"n": 3, "seed": 5, "category": "all", "truncation": 0.5, "format": "json"}
    grid = images(cat_client.post("/api/samples", json=body))
    assert np.array_equal(grid, to_uint8(cat_gan.class_grid(3, seed=5, truncation=0.5)))
    png_grid = png(cat_client.post("/api/samples", json={"n": 3, "category": "all"}))
    assert png_grid.shape == (2 + 4 * 30, 2 + 3 * 30)  # one row per category


def test_a_walk_within_one_learnt_category(cat_client, cat_gan):
    body = {"seed_a": 1, "seed_b": 2, "steps": 5, "category": 2, "format": "json"}
    r = cat_client.post("/api/interpolate", json=body)
    assert r.json()["category"] == 2
    want = cat_gan.interpolate(1, 2, steps=5, category=2)
    assert np.array_equal(images(r), to_uint8(want))


@pytest.mark.parametrize(
    "path, body, message",
    [
        (
            "/api/samples",
            {"category": 4},
            'category: expected an integer from 0 to 3 or "all", got 4',
        ),
        ("/api/samples", {"category": "2"}, "category: expected an integer from 0 to 3"),
        ("/api/samples", {"category": [2]}, 'from 0 to 3 or "all", got [2]'),  # one part
        ("/api/interpolate", {"category": "all"}, "category: expected an integer from 0 to 3, got"),
        ("/api/samples", {"category": "all", "n": 65}, "65 per category x 4 categories = 260"),
        ("/api/samples", {"label": 1}, "label: this model is unconditional"),
    ],
)
def test_bad_categories_get_a_clear_message(cat_client, path, body, message):
    r = cat_client.post(path, json=body)
    assert r.status_code in (413, 422) and message in r.json()["error"]


def test_a_code_in_parts_is_chosen_part_by_part(colour_run):
    """stacked's categories (here 8, 3 parts of 2): a value per part, null or "any" for any."""
    gan = digitgan.load(colour_run)
    with TestClient(create_app(gan, hosts="testserver")) as c:
        info = c.get("/api/info").json()
        assert info["categories"] == 8 and info["code_parts"] == 3
        body = {"n": 4, "seed": 1, "category": [1, None, "any"], "format": "json"}
        r = c.post("/api/samples", json=body)
        assert r.json()["category"] == [1, None, None]
        want = gan.generate(4, seed=1, category=[1, None, None])
        assert np.array_equal(images(r), to_uint8(want))
        body = {"seed_a": 2, "seed_b": 3, "steps": 4, "category": [None, 0, 1], "format": "json"}
        want = gan.interpolate(2, 3, steps=4, category=[None, 0, 1])
        assert np.array_equal(images(c.post("/api/interpolate", json=body)), to_uint8(want))
        r = c.post("/api/samples", json={"category": [1, 2, 0]})
        assert r.status_code == 422 and r.json()["error"] == (
            "category: expected an integer from 0 to 7 or 3 values (one per part, each 0 to 1 or "
            'any) or "all", got [1, 2, 0]'
        )


def test_a_model_without_categories_refuses_one(client):
    r = client.post("/api/samples", json={"category": 0})
    assert r.status_code == 422
    assert r.json()["error"] == (
        "category: this model learnt no categories (its model.categories is 0)"
    )


@pytest.fixture(scope="module")
def sub_gan(tmp_path_factory, tiny, small_data):
    """A class-conditional model with 3 clusters within each class (model.clusters)."""
    out = tmp_path_factory.mktemp("serve-subclusters") / "run"
    cfg = tiny("cdcgan", model__categories=3, model__clusters=True, model__z_dim=12)
    digitgan.train(cfg, out, dataset=small_data, progress=False)
    return digitgan.load(out)


def test_a_conditional_model_draws_one_cluster_of_a_class_and_no_grid_of_them(sub_gan):
    with TestClient(create_app(sub_gan, hosts="testserver")) as c:
        info = c.get("/api/info").json()
        assert info["categories"] == 3 and info["num_classes"] == 10
        body = {"n": 4, "seed": 1, "label": 7, "category": 2, "format": "json"}
        want = sub_gan.generate(4, seed=1, labels=7, category=2)
        assert np.array_equal(images(c.post("/api/samples", json=body)), to_uint8(want))
        r = c.post("/api/samples", json={"label": 7, "category": "all"})
        assert r.status_code == 422
        assert 'category: expected an integer from 0 to 2, got "all"' in r.json()["error"]


# --- /api/interpolate ----------------------------------------------------------------------


def test_interpolation_runs_from_one_seed_to_the_other(client, gan):
    r = client.post(
        "/api/interpolate", json={"seed_a": 4, "seed_b": 9, "steps": 7, "format": "json"}
    )
    arr = images(r)
    assert arr.shape == (7, 1, 28, 28)
    assert r.json() == {**r.json(), "seed_a": 4, "seed_b": 9, "steps": 7, "label": None}
    assert same(arr[0], to_uint8(gan.generate(1, seed=4))[0])
    assert same(arr[-1], to_uint8(gan.generate(1, seed=9))[0])
    assert len({a.tobytes() for a in arr}) == 7  # every frame differs
    strip = png(client.post("/api/interpolate", json={"seed_a": 4, "seed_b": 9, "steps": 7}))
    assert strip.shape == (2 + 30, 2 + 7 * 30)  # one row
    defaults = images(client.post("/api/interpolate", json={"format": "json"}))
    assert defaults.shape[0] == 16


def test_interpolation_of_one_class(cond_client, cond_gan):
    arr = images(
        cond_client.post("/api/interpolate", json={"steps": 5, "label": 6, "format": "json"})
    )
    want = cond_gan.generate(1, seed=0, labels=torch.tensor([6]))
    assert same(arr[0], to_uint8(want)[0])


# --- truncation ----------------------------------------------------------------------------


def test_samples_and_walks_draw_with_the_truncation_asked_for(client, gan):
    plain = png(client.post("/api/samples", json={"n": 9, "seed": 4}))
    assert np.array_equal(
        plain, png(client.post("/api/samples", json={"n": 9, "seed": 4, "truncation": 1}))
    )
    r = client.post("/api/samples", json={"n": 9, "seed": 4, "truncation": 0.5, "format": "json"})
    assert r.json()["truncation"] == 0.5
    assert np.array_equal(images(r), to_uint8(gan.generate(9, seed=4, truncation=0.5)))
    assert not np.array_equal(images(r), to_uint8(gan.generate(9, seed=4)))
    at0 = images(client.post("/api/samples", json={"n": 9, "truncation": 0, "format": "json"}))
    assert len({a.tobytes() for a in at0}) == 1  # every sample is the mean noise's image
    r = client.post("/api/interpolate", json={"steps": 4, "truncation": 0.25, "format": "json"})
    assert r.json()["truncation"] == 0.25
    assert np.array_equal(images(r), to_uint8(gan.interpolate(0, 1, 4, truncation=0.25)))


def test_a_class_grid_draws_with_the_truncation_asked_for(cond_client, cond_gan):
    body = {"n": 2, "seed": 3, "label": "all", "truncation": 0.6, "format": "json"}
    arr = images(cond_client.post("/api/samples", json=body))
    assert same(arr, to_uint8(cond_gan.class_grid(2, 3, truncation=0.6)))


# --- bad requests --------------------------------------------------------------------------

BAD = [
    # (endpoint, raw body, status, words in the message)
    ("/api/samples", b'{"n": 16', 400, "not valid JSON"),
    ("/api/samples", b"\xff\xfe{", 400, "not valid JSON"),
    ("/api/samples", b"[16]", 400, "must be a JSON object"),
    ("/api/samples", b'"n=16"', 400, "must be a JSON object"),
    ("/api/samples", b'{"count": 16}', 422, "unknown field 'count'"),
    ("/api/samples", b'{"n": 257}', 413, "n: 257 is above the maximum 256"),
    ("/api/samples", b'{"n": 0}', 422, "n: 0 is below the minimum 1"),
    ("/api/samples", b'{"n": "16"}', 422, 'n: expected an integer, got "16"'),
    ("/api/samples", b'{"n": 16.5}', 422, "n: expected an integer"),
    ("/api/samples", b'{"n": true}', 422, "n: expected an integer, got true"),
    ("/api/samples", b'{"seed": -1}', 422, "seed: -1 is below the minimum 0"),
    ("/api/samples", b'{"seed": 4294967296}', 422, "seed: 4294967296 is above the maximum"),
    ("/api/samples", b'{"label": 3}', 422, "label: this model is unconditional"),
    ("/api/samples", b'{"format": "gif"}', 422, "format: expected one of png, json"),
    ("/api/samples", b'{"scale": 9}', 422, "scale: 9 is above the maximum 8"),
    ("/api/interpolate", b'{"steps": 1}', 422, "steps: 1 is below the minimum 2"),
    ("/api/interpolate", b'{"steps": 65}', 413, "steps: 65 is above the maximum 64"),
    ("/api/interpolate", b'{"seed_b": "x"}', 422, "seed_b: expected an integer"),
    ("/api/interpolate", b'{"n": 3}', 422, "unknown field 'n'"),
    ("/api/samples", b'{"truncation": 1.5}', 422, "truncation: expected a number from 0 to 1"),
    ("/api/samples", b'{"truncation": -0.1}', 422, "truncation: expected a number from 0 to 1"),
    ("/api/samples", b'{"truncation": "0.5"}', 422, 'from 0 to 1, got "0.5"'),
    ("/api/samples", b'{"truncation": true}', 422, "from 0 to 1, got true"),
    ("/api/samples", b'{"truncation": null}', 422, "from 0 to 1, got null"),
    ("/api/samples", b'{"truncation": NaN}', 422, "from 0 to 1, got NaN"),
    ("/api/samples", b'{"truncation": 1e999}', 422, "from 0 to 1, got Infinity"),
    ("/api/samples", b'{"truncation": ' + b"9" * 400 + b"}", 422, "from 0 to 1, got 999"),
    ("/api/interpolate", b'{"truncation": 2}', 422, "truncation: expected a number from 0"),
    ("/api/interpolate", b'{"truncation": [0.5]}', 422, "from 0 to 1, got [0.5]"),
    ("/api/samples", b'{"seed": ' + b"1" * MAX_BODY + b"}", 413, "over the limit"),
    # nesting: checked before parsing, so no depth reaches the parser's recursion limit
    ("/api/samples", _deep(5000).encode(), 400, "nests arrays and objects deeper than 32"),
    ("/api/samples", b'{"n": ' + b'{"a": ' * 2000 + b"1" + b"}" * 2001, 400, "deeper than 32"),
    ("/api/interpolate", b'{"steps": ' + _deep(32).encode() + b"}", 400, "deeper than 32"),
    ("/api/samples", b'{"n": ' + _deep(31).encode() + b"}", 422, "n: expected an integer"),
    ("/api/samples", b'{"format": "' + b"[" * 100 + b'"}', 422, "format: expected one of"),
    ("/api/samples", b'{"n": ' + b"[" * 4000, 400, "deeper than 32"),
    ("/api/samples", b'{"n": ' + b"9" * 5000 + b"}", 400, "not valid JSON"),
]


@pytest.mark.parametrize("path, body, status, message", BAD, ids=lambda v: repr(v)[:40])
def test_bad_requests_get_a_4xx_with_a_clear_message(client, path, body, status, message):
    r = client.post(path, content=body, headers=JSON)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert client.get("/api/info").status_code == 200  # and the server keeps serving


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
@pytest.mark.parametrize("body", [b"", b'{"n": 1}'])
@pytest.mark.parametrize("path", ["/api/samples", "/api/interpolate"])
def test_requests_must_be_sent_as_json(client, path, body, content_type):
    """A page elsewhere may POST text/plain or a form without asking (no CORS preflight);
    this server generates only for requests sent as application/json."""
    headers = {} if content_type is None else {"content-type": content_type}
    r = client.post(path, content=body, headers=headers)
    assert r.status_code == 415, r.text
    assert "Content-Type: application/json" in r.json()["error"]


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
def test_json_content_types_are_accepted(client, content_type):
    r = client.post("/api/samples", content=b'{"n": 1}', headers={"content-type": content_type})
    assert r.status_code == 200, r.text


def test_a_body_announced_over_the_limit_is_refused_before_it_is_read(client):
    headers = {**JSON, "content-length": str(10 * MAX_BODY)}
    r = client.post("/api/samples", content=b"{}", headers=headers)
    assert r.status_code == 413 and "over the limit" in r.json()["error"]


COND_BAD = [
    ("/api/samples", {"label": 10}, 422, 'label: expected an integer from 0 to 9 or "all", got 10'),
    ("/api/samples", {"label": -1}, 422, "label: expected an integer from 0 to 9"),
    ("/api/samples", {"label": "3"}, 422, 'got "3"'),
    ("/api/samples", {"label": "all", "n": 26}, 413, "26 per class x 10 classes = 260 images"),
    ("/api/interpolate", {"label": "all"}, 422, "label: expected an integer from 0 to 9, got"),
]


@pytest.mark.parametrize("path, body, status, message", COND_BAD)
def test_bad_labels_for_a_conditional_model(cond_client, path, body, status, message):
    r = cond_client.post(path, json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_wrong_paths_and_methods_answer_in_json(client):
    r = client.get("/api/nothing")
    assert r.status_code == 404 and r.json() == {"error": "GET /api/nothing: Not Found"}
    r = client.get("/api/samples")
    assert r.status_code == 405 and "POST" in r.headers["allow"]
    assert r.json()["error"] == "GET /api/samples: Method Not Allowed"
    assert client.post("/api/info").status_code == 405
    assert client.get("/static/nothing.js").status_code == 404


def test_a_failing_model_gets_a_500_and_the_server_keeps_serving(gan):
    class Broken:
        def __getattr__(self, name):
            return getattr(gan, name)

        def generate(self, n, seed=0, labels=None):
            raise RuntimeError("out of memory")

    with TestClient(create_app(Broken(), hosts="testserver"), raise_server_exceptions=False) as c:
        r = c.post("/api/samples", json={"n": 4})
        assert r.status_code == 500
        assert r.json() == {"error": "internal error: RuntimeError: out of memory"}
        assert c.get("/api/info").status_code == 200


# --- the Host header ------------------------------------------------------------------------


class Counting:
    """Delegates to ``gan``, counting the generations asked of it."""

    def __init__(self, gan):
        self.gan, self.calls = gan, 0

    def __getattr__(self, name):
        return getattr(self.gan, name)

    def generate(self, n, seed=0, labels=None):
        self.calls += 1
        return self.gan.generate(n, seed, labels)


@pytest.mark.parametrize(
    "base",
    ["http://127.0.0.1:8000", "http://localhost", "http://LocalHost:1234", "http://[::1]:80"],
)
def test_loopback_names_are_served_by_default(gan, base):
    with TestClient(create_app(gan), base_url=base) as c:
        assert c.get("/").status_code == 200
        assert c.get("/api/info").status_code == 200
        assert c.post("/api/samples", json={"n": 1}).status_code == 200


@pytest.mark.parametrize(
    "host",
    [
        "testserver",
        "evil.example",
        "evil.example:8000",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "192.168.1.5:8000",
        "[::2]",
        "localhost:80@evil.example",
        "localhost:8000:8000",
        "[localhost]",
    ],
)
def test_requests_for_other_hosts_get_a_400_and_generate_nothing(gan, host):
    """A page elsewhere that points a DNS name of its own at this machine (DNS rebinding)
    sends that name as the Host: it can neither read the API nor make it generate."""
    counting = Counting(gan)
    with TestClient(create_app(counting)) as c:
        for method, path in [("GET", "/"), ("GET", "/api/info"), ("POST", "/api/samples")]:
            r = c.request(method, path, json={"n": 1}, headers={"host": host})
            assert r.status_code == 400, (method, path, r.text)
            assert "this server does not answer to Host" in r.json()["error"]
    assert counting.calls == 0


def _asgi_status(app, headers: list[tuple[bytes, bytes]], method="GET", path="/api/info") -> int:
    """The status ``app`` answers a request with, given exactly these headers (no body)."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.0",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"]


def test_requests_without_exactly_one_host_header_get_a_400(gan):
    app = create_app(gan)
    assert _asgi_status(app, [(b"host", b"localhost")]) == 200
    assert _asgi_status(app, []) == 400  # HTTP/1.0 lets a client leave it out
    assert _asgi_status(app, [(b"host", b"localhost"), (b"host", b"evil.example")]) == 400


@pytest.mark.parametrize("length", [b"\xb2", b"-1", b"1e9", b" 99999", b"99999999999999999999"])
def test_odd_content_lengths_get_a_4xx(gan, length):
    """(uvicorn refuses these itself; other ASGI servers may pass them on.)"""
    headers = [(b"host", b"localhost"), (b"content-type", b"application/json")]
    status = _asgi_status(
        create_app(gan), [*headers, (b"content-length", length)], "POST", "/api/samples"
    )
    assert 400 <= status < 500 or status == 200


def test_the_hosts_served_can_be_chosen(gan):
    app = create_app(gan, hosts=["digits.lan", "::1", "192.168.1.5"])
    for host, status in [
        ("digits.lan:8000", 200),
        ("DIGITS.LAN.", 200),
        ("[::1]", 200),
        ("[0:0::1]:8000", 200),
        ("192.168.1.5", 200),
        ("localhost", 400),  # the list replaces the default
        ("other.lan", 400),
    ]:
        with TestClient(app, base_url="http://x") as c:
            assert c.get("/api/info", headers={"host": host}).status_code == status, host
    with TestClient(create_app(gan, hosts="*"), base_url="http://evil.example") as c:
        assert c.get("/api/info").status_code == 200  # "*": any Host
    with pytest.raises(ConfigError, match="'a b' is not a host name or IP address"):
        create_app(gan, hosts=["a b"])


# --- concurrency ---------------------------------------------------------------------------


def test_concurrent_requests_are_served_correctly_one_generation_at_a_time(gan):
    class Watched:
        """Delegates to ``gan``, recording how many generations overlap and in which threads."""

        def __init__(self):
            self.active = self.most = 0
            self.threads: set[int] = set()
            self.guard = threading.Lock()

        def __getattr__(self, name):
            return getattr(gan, name)

        def generate(self, n, seed=0, labels=None):
            with self.guard:
                self.active += 1
                self.most = max(self.most, self.active)
                self.threads.add(threading.get_ident())
            time.sleep(0.02)  # long enough for the other requests to arrive meanwhile
            try:
                return gan.generate(n, seed, labels)
            finally:
                with self.guard:
                    self.active -= 1

    watched = Watched()
    with TestClient(create_app(watched, hosts="testserver")) as c:

        def ask(seed):
            r = c.post("/api/samples", json={"n": 3, "seed": seed, "format": "json"})
            return seed, images(r)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(ask, range(16)))
    for seed, arr in results:  # every answer is the one for its own seed
        assert np.array_equal(arr, to_uint8(gan.generate(3, seed=seed)))
    assert len(watched.threads) > 1  # requests were handed to several worker threads ...
    assert watched.most == 1  # ... and the lock let one generation run at a time
