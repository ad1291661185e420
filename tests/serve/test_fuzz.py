"""The HTTP API fuzzed with hypothesis: any method, path, query, Host, Content-Type and body
(JSON of every type, nested up to 8000 deep, up to 48 KB, or random bytes) gets a 2xx for a
valid request and a 4xx with a JSON error otherwise; never a 5xx."""

from __future__ import annotations

import json
import string
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from digitgan.serve import create_app
from digitgan.serve.app import LOOPBACK_HOSTS, MAX_BODY

FIELDS = ["n", "seed", "label", "format", "scale", "seed_a", "seed_b", "steps", "truncation"]
ENDPOINTS = [("POST", "/api/samples")] * 8 + [("POST", "/api/interpolate")] * 6
ENDPOINTS += [(m, p) for m in ("GET", "HEAD") for p in ("/", "/api/info", "/static/app.js")]
ENDPOINTS += [("GET", "/api/samples"), ("POST", "/api/info"), ("PUT", "/api/interpolate")]
ENDPOINTS += [("DELETE", "/"), ("OPTIONS", "/api/samples"), ("GET", "/api/nothing")]
HOSTS = ["testserver", "localhost:8000", "[::1]", "evil.example", "127.0.0.1.evil.example"]
CONTENT_TYPES = [None, "text/plain", "application/json; charset=utf-8", "multipart/form-data"]
ASCII = string.ascii_letters + string.digits + string.punctuation + " "

text = st.text(st.characters(codec="utf-8"), max_size=12)  # for URLs and headers
strings = st.text(max_size=12)  # for JSON: lone surrogates (U+D800 ...) included
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-3, 300)  # often in range, so that some requests are valid
    | st.floats()  # NaN and infinities included
    | strings
    | st.sampled_from(["all", "png", "json"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strings, inner, max_size=4),
)


@st.composite
def nested(draw) -> str:
    """JSON text nested up to 8000 deep (in a field or not), sometimes cut short. (Hypothesis
    raises the recursion limit while it runs a test, so that depths of a few thousand are
    needed to reach it.)"""
    openers = draw(st.lists(st.sampled_from(["[", '{"n": ', '{"": ', "[1, "]), min_size=1))
    depth = draw(st.integers(1, 40) | st.integers(1, 8000) | st.sampled_from([1000, 3000, 7000]))
    opened = (openers * (depth // len(openers) + 1))[:depth]
    closers = "".join("]" if o.startswith("[") else "}" for o in reversed(opened))
    doc = "".join(opened) + json.dumps(draw(scalars)) + closers
    if draw(st.booleans()):
        doc = '{"' + draw(st.sampled_from(FIELDS)) + '": ' + doc + "}"
    if draw(st.booleans()):
        doc = doc[: draw(st.integers(0, len(doc)))]
    return doc


@st.composite
def bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["object"] * 3 + ["value", "nested", "bytes", "big", "big"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "nested":
        return draw(nested()).encode()
    if kind == "value":
        doc = draw(values)
    else:
        doc = draw(st.dictionaries(st.sampled_from(FIELDS) | strings, values, max_size=5))
        if kind == "big":  # around the size limit
            size = st.integers(MAX_BODY - 50, MAX_BODY + 50) | st.integers(0, 3 * MAX_BODY)
            doc[draw(st.sampled_from(FIELDS))] = "x" * draw(size)
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


@st.composite
def requests(draw) -> dict:
    method, path = draw(st.sampled_from(ENDPOINTS))
    if draw(st.integers(0, 19)) == 0:  # a file that may not be there
        path = "/static/" + quote(draw(text), safe="/")
    content_type = draw(st.sampled_from(["application/json"] * 6 + CONTENT_TYPES))
    if content_type is None:
        content_type = draw(st.none() | st.text(ASCII, max_size=30))
    headers = {"host": draw(st.sampled_from(["testserver"] * 6 + HOSTS))}
    if content_type is not None:
        headers["content-type"] = content_type
    return {
        "method": method,
        "url": path,
        "params": draw(st.dictionaries(text, text, max_size=3)),
        "headers": headers,
        "content": b"" if draw(st.integers(0, 7)) == 0 else draw(bodies()),
    }


@pytest.fixture(scope="module")
def clients(gan, cond_gan, one_thread):
    hosts = ["testserver", *LOOPBACK_HOSTS]
    with (
        TestClient(create_app(gan, hosts=hosts), raise_server_exceptions=False) as plain,
        TestClient(create_app(cond_gan, hosts=hosts), raise_server_exceptions=False) as cond,
    ):
        yield plain, cond


FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
JSON = {"host": "testserver", "content-type": "application/json"}
POST = st.sampled_from(["/api/samples", "/api/interpolate"])


def check(client, request: dict) -> None:
    """The answer to ``request``: never a 5xx; a 4xx is a JSON error; a 2xx to a POST is an
    image or JSON."""
    r = client.request(**request)
    event(f"{r.status_code}")
    what = f"{request['method']} {request['url']} -> {r.status_code}: {r.text[:300]}"
    assert r.status_code < 500, what
    if r.status_code >= 400 and request["method"] != "HEAD":
        assert isinstance(r.json()["error"], str), what
    if r.status_code < 300 and request["method"] == "POST":
        assert r.headers["content-type"] in ("image/png", "application/json"), what


@FUZZ
@given(path=POST, body=bodies(), query=st.dictionaries(text, text, max_size=3), cond=st.booleans())
def test_no_json_body_gets_a_5xx(clients, path, body, query, cond):
    request = {"method": "POST", "url": path, "params": query, "headers": JSON, "content": body}
    check(clients[cond], request)


@FUZZ
@given(path=POST, doc=nested(), cond=st.booleans())
def test_no_nesting_gets_a_5xx(clients, path, doc, cond):
    check(clients[cond], {"method": "POST", "url": path, "headers": JSON, "content": doc.encode()})


@FUZZ
@given(request=requests(), cond=st.booleans())
def test_no_request_gets_a_5xx(clients, request, cond):
    check(clients[cond], request)
