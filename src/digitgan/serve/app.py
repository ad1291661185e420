"""The web server: a Starlette app over one trained model, with a page and a JSON/PNG API.

Routes (README-serve.md documents them with examples):

    GET  /                  the page (static/index.html, app.js, style.css; no build step)
    GET  /api/info          the model's facts and the request limits, as JSON
    POST /api/samples       a grid of samples (PNG) or the images themselves (JSON)
    POST /api/interpolate   a latent walk between two seeds, as a PNG strip or JSON frames
    POST /api/project       a drawing (a PNG as base64) found in the model, as JSON

Both POST routes take ``truncation``, the truncation trick's psi (a number from 0 to 1;
default 1, plain sampling; see ``digitgan.sampling.Sampler``), and for a model with learnt
categories (``model.categories``, as the ``clusters`` preset) ``category``: the samples or the
walk drawn from that category, or (samples) ``"all"`` for one row per category; categories
that are a code in parts (``stacked``'s, one per channel) may also be given part by part,
``[3, null, 7]``, null (or ``"any"``) for a part left to the noise.

Request bodies are JSON objects sent as ``Content-Type: application/json`` (an empty body
means all defaults). Every error is a JSON object ``{"error": "..."}`` with a 4xx status that
says whose fault it is: 400 for a body that is not a JSON object (or nests deeper than
MAX_DEPTH), 413 for asking too much (a body over MAX_BODY bytes, more than MAX_N images or
MAX_STEPS frames, a drawing over MAX_IMAGE_BODY bytes or MAX_IMAGE_PIXELS pixels), 415 for a
body not sent as JSON, 422 for a field of the wrong type or
range, 404/405 for a wrong path or method; an unexpected failure is a 500 with a JSON body,
and the server keeps serving.

Bounds (docs/serving.md, "Limits"): the app answers only to the Host names it is given
(HostCheck; a 400 otherwise, against DNS rebinding), and ``make_server`` gives uvicorn
deadlines for slow clients, a cap on open connections and on request heads; eval.json is
read once, when the app is made.

Concurrency: the server is asynchronous, and generation (CPU-bound PyTorch) runs in a worker
thread so that the page and the API stay responsive while a grid is drawn. One lock lets one
generation run at a time: a single batch already uses every core, so running two at once
would only make both slower and hold the memory of both; further requests wait their turn.
The generator is in eval mode and every call runs under ``torch.no_grad`` (per thread), so
the lock guards against contention, not against shared mutable state.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import re
import socket
import threading
from collections.abc import Iterable
from pathlib import Path

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import ConfigError, ImageError, ImageTooLargeError
from ..models.base import category_choice
from ..projection import decode_image, find_drawing, training_digits_or_note
from ..sampling import load
from ..viz import make_grid, png_bytes, to_uint8
from .model import (
    class_grid,
    code_parts,
    model_info,
    num_categories,
    num_classes,
    samples,
    walk,
)

MAX_N = 256  # images per request (for a class grid: classes x per-class count)
MAX_STEPS = 64  # frames of a latent walk
MAX_SEED = 2**32 - 1  # seeds are 0 .. MAX_SEED (exact in JavaScript numbers)
MAX_SCALE = 8  # PNG upscaling factor
MAX_BODY = 16 * 1024  # bytes of a request body
MAX_DEPTH = 32  # nesting of arrays and objects in a request body (a valid one has 1)
REQUEST_TIMEOUT = 10  # seconds to send a whole request (line, headers, body); to read on
KEEP_ALIVE = 5  # seconds an idle connection stays open for another request
MAX_CONNECTIONS = 64  # open connections; beyond, requests get a 503 until some close
MAX_HEAD = 16 * 1024  # bytes of a request's line and headers
_HEAD_PIECE = 1024  # bytes of a request's head h11 is given at a time
MAX_IMAGE_BODY = 1024 * 1024  # bytes of a request body carrying a drawing (/api/project)
MAX_IMAGE_PIXELS = 2048 * 2048  # pixels of a drawing
MAX_RESTARTS = 16  # restarts of a projection (per class)
MAX_PROJECT_STEPS = 1000  # optimiser steps of a projection
PROJECT_SECONDS = 10.0  # a projection's search stops after this long, keeping what it found
LIMITS = {
    "max_n": MAX_N,
    "max_steps": MAX_STEPS,
    "max_seed": MAX_SEED,
    "max_scale": MAX_SCALE,
    "max_image_bytes": MAX_IMAGE_BODY,
    "max_image_pixels": MAX_IMAGE_PIXELS,
    "max_restarts": MAX_RESTARTS,
    "max_project_steps": MAX_PROJECT_STEPS,
    "project_seconds": PROJECT_SECONDS,
}
FORMATS = ("png", "json")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")  # the Host names create_app accepts by default
STATIC = Path(__file__).with_name("static")


class BadRequest(Exception):
    """A request the client must change; answered as ``{"error": message}`` with ``status``."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


# --- reading request bodies ----------------------------------------------------------------


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)  # a JSON string, escapes included


def _depth(raw: bytes) -> int:
    """How deeply the arrays and objects of JSON text ``raw`` nest (brackets inside strings
    do not count); checked before parsing, so no document can exhaust the parser's stack."""
    depth = most = 0
    for byte in _STRING.sub(b"", raw):
        if byte in b"[{":
            depth += 1
            most = max(most, depth)
        elif byte in b"]}":
            depth -= 1
    return most


async def _json_body(request: Request, fields: tuple[str, ...], limit: int = MAX_BODY) -> dict:
    """The request's JSON object: sent as application/json, at most ``limit`` bytes, nested
    at most MAX_DEPTH deep, with no field outside ``fields``."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise BadRequest(
            "request body must be sent with Content-Type: application/json"
            + (f", not {media_type[:100]}" if media_type else ""),
            415,
        )
    length = request.headers.get("content-length", "")
    too_large = BadRequest(f"request body is over the limit of {limit} bytes", 413)
    if re.fullmatch(r"[0-9]+", length) and int(length) > limit:
        raise too_large
    raw = bytearray()
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise too_large
    except ClientDisconnect:  # nobody is left to answer
        raise BadRequest("the client went away before sending the whole body", 400) from None
    if not raw.strip():
        return {}
    if _depth(raw) > MAX_DEPTH:
        raise BadRequest(
            f"request body nests arrays and objects deeper than {MAX_DEPTH} levels", 400
        )
    try:
        body = json.loads(bytes(raw))
    except (ValueError, RecursionError) as e:
        raise BadRequest(f"request body is not valid JSON: {e}", 400) from None
    if not isinstance(body, dict):
        raise BadRequest('request body must be a JSON object, e.g. {"n": 16}', 400)
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}; this endpoint takes {', '.join(fields)}")
    return body


def _int(body: dict, name: str, default: int, lo: int, hi: int, over: int = 422) -> int:
    """Field ``name`` as an integer in [lo, hi]; a value above ``hi`` is answered with ``over``."""
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name}: expected an integer, got {json.dumps(value)}")
    if value < lo:
        raise BadRequest(f"{name}: {value} is below the minimum {lo}")
    if value > hi:
        raise BadRequest(f"{name}: {value} is above the maximum {hi}", over)
    return value


def _unit(body: dict, name: str, default: float) -> float:
    """Field ``name`` as a number (integer or not) from 0 to 1."""
    value = body.get(name, default)
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and 0 <= value <= 1):  # NaN and Infinity (which json reads) fail too
        raise BadRequest(f"{name}: expected a number from 0 to 1, got {json.dumps(value)[:100]}")
    return float(value)


def _choice(body: dict, name: str, choices: tuple[str, ...]) -> str:
    value = body.get(name, choices[0])
    if value not in choices:
        raise BadRequest(f"{name}: expected one of {', '.join(choices)}, got {json.dumps(value)}")
    return value


def _class_index(
    body: dict, classes: int, allow_all: bool, name: str = "label", parts: int = 1
) -> int | str | list | None:
    """The optional class ``label`` (or, with ``name="category"``, a learnt category): an index
    below ``classes`` (or "all" where allowed), or for a code in ``parts`` parts one value per
    part, null (or "any") for any (:func:`~digitgan.models.base.category_choice`); None when
    absent."""
    value = body.get(name)
    if value is None:
        return None
    if classes == 0:
        raise BadRequest(
            "label: this model is unconditional (trained without labels)"
            if name == "label"
            else "category: this model learnt no categories (its model.categories is 0)"
        )
    if allow_all and value == "all":
        return value
    try:
        chosen = category_choice(value, classes, parts)
    except ValueError as e:
        also = ' or "all"' if allow_all else ""
        raise BadRequest(f"{name}: {e}{also}, got {json.dumps(value)[:100]}") from None
    return value if isinstance(value, int) else chosen


_DATA_URL = re.compile(r"data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)


def _drawing(body: dict, image_shape):
    """The ``image`` field: an image file (PNG, JPEG, ...) as base64, or as a data: URL such
    as a canvas's ``toDataURL()``, prepared for the model (digitgan.projection.decode_image)."""
    value = body.get("image")
    if not isinstance(value, str):
        raise BadRequest(
            "image: expected a string, an image file (PNG) as base64 or a data:image/png;base64 "
            f"URL, got {json.dumps(value)[:100]}"
        )
    if match := _DATA_URL.match(value):
        value = value[match.end() :]
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("image: not base64 (nor a data:image/...;base64, URL)") from None
    try:
        return decode_image(data, image_shape, what="image", max_pixels=MAX_IMAGE_PIXELS)
    except ImageTooLargeError as e:
        raise BadRequest(str(e), 413) from None
    except ImageError as e:
        raise BadRequest(str(e)) from None


# --- the Host header ------------------------------------------------------------------------

_HOST_HEADER = re.compile(r"(\[[^\]]*\]|[^:\[\]]+)(?::[0-9]*)?")  # host, then an optional port


def _host_key(host: str) -> str | None:
    """``host`` (a name, an IPv4 address, an IPv6 address with or without brackets) spelled
    one way, so that equal hosts compare equal; None if it is none of these."""
    host = host.strip().lower()
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        if bare != host or not re.fullmatch(r"[a-z0-9._-]+", host):
            return None
        return host.removesuffix(".")  # "localhost." is "localhost"
    return f"[{ip.compressed}]" if ip.version == 6 else ip.compressed


class HostCheck:
    """ASGI middleware: a request whose Host header names none of ``hosts`` (any port) gets a
    400. A page of another site can make the browser send requests here through a DNS name
    of its own that it points at this machine (DNS rebinding); their Host is that name."""

    def __init__(self, app, hosts: frozenset[str]):
        self.app = app
        self.hosts = hosts

    def _allowed(self, scope) -> tuple[bool, str]:
        values = [v.decode("latin-1") for k, v in scope["headers"] if k == b"host"]
        if len(values) != 1:
            return False, f"{len(values)} Host headers"
        match = _HOST_HEADER.fullmatch(values[0])
        key = _host_key(match[1]) if match else None
        return key is not None and key in self.hosts, f"Host {values[0][:100]!r}"

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            ok, what = self._allowed(scope)
            if not ok:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                served = ", ".join(sorted(self.hosts))
                message = f"this server does not answer to {what}; it answers to {served}"
                await _error(400, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _hosts(hosts) -> frozenset[str] | None:
    """The keys of ``hosts`` (None for "*": any host), or a ConfigError."""
    if isinstance(hosts, str):
        hosts = [hosts]
    keys = set()
    for host in hosts:
        if host == "*":
            return None
        key = _host_key(host)
        if key is None:
            raise ConfigError(f"hosts: {host!r} is not a host name or IP address")
        keys.add(key)
    return frozenset(keys)


# --- answers -------------------------------------------------------------------------------


def _encode(images, fmt: str, scale: int, nrow: int | None, echo: dict) -> Response:
    """Images (N, C, H, W) in [0, 1] as one PNG grid, or as JSON uint8 arrays."""
    pixels = to_uint8(images)
    if fmt == "png":
        return Response(png_bytes(make_grid(pixels, nrow), scale), media_type="image/png")
    return JSONResponse({**echo, "shape": list(pixels.shape), "images": pixels.tolist()})


def _error(status: int, message: str, headers=None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(gan, hosts: Iterable[str] | str = LOOPBACK_HOSTS) -> Starlette:
    """The Starlette app serving ``gan`` (a :class:`digitgan.sampling.Sampler`, or an object
    with the same interface).

    ``hosts``: the names it answers to in the Host header, with any port (IPv6 addresses in
    brackets or not); other requests get a 400. The default is this machine's loopback
    names; ``"*"`` accepts any Host (for a server that something else shields, e.g. a
    proxy that checks the Host itself).
    """
    allowed = _hosts(hosts)
    lock = threading.Lock()
    classes, categories, parts = num_classes(gan), num_categories(gan), code_parts(gan)

    def locked(work):
        with lock:
            return work()

    async def generate(work) -> Response:
        return await run_in_threadpool(locked, work)

    facts = {**model_info(gan), "limits": LIMITS}  # eval.json is read here, once

    async def info(request: Request) -> JSONResponse:
        return JSONResponse(facts)

    async def samples_endpoint(request: Request) -> Response:
        body = await _json_body(
            request, ("n", "seed", "label", "category", "format", "scale", "truncation")
        )
        label = _class_index(body, classes, allow_all=True)
        # "all": a row per category, of a model whose categories stand in for classes
        category = _class_index(body, categories, not classes, "category", parts)
        n = _int(body, "n", 16, 1, MAX_N, over=413)
        rows = classes if label == "all" else categories if category == "all" else 1
        if rows > 1 and n * rows > MAX_N:
            one, kind = ("class", "classes") if label == "all" else ("category", "categories")
            raise BadRequest(
                f"n: {n} per {one} x {rows} {kind} = {n * rows} images is above the maximum "
                f"{MAX_N}",
                413,
            )
        seed = _int(body, "seed", 0, 0, MAX_SEED)
        fmt = _choice(body, "format", FORMATS)
        scale = _int(body, "scale", 1, 1, MAX_SCALE)
        psi = _unit(body, "truncation", 1.0)
        echo = {"n": n, "seed": seed, "label": label, "category": category, "truncation": psi}
        if "all" in (label, category):
            return await generate(
                lambda: _encode(class_grid(gan, n, seed, psi), fmt, scale, n, echo)
            )
        return await generate(
            lambda: _encode(samples(gan, n, seed, label, psi, category), fmt, scale, None, echo)
        )

    async def interpolate_endpoint(request: Request) -> Response:
        body = await _json_body(
            request,
            ("seed_a", "seed_b", "steps", "label", "category", "format", "scale", "truncation"),
        )
        label = _class_index(body, classes, allow_all=False)
        category = _class_index(body, categories, False, "category", parts)
        seed_a = _int(body, "seed_a", 0, 0, MAX_SEED)
        seed_b = _int(body, "seed_b", 1, 0, MAX_SEED)
        steps = _int(body, "steps", 16, 2, MAX_STEPS, over=413)
        fmt = _choice(body, "format", FORMATS)
        scale = _int(body, "scale", 1, 1, MAX_SCALE)
        psi = _unit(body, "truncation", 1.0)
        echo = {"seed_a": seed_a, "seed_b": seed_b, "steps": steps, "label": label}
        echo |= {"category": category, "truncation": psi}
        return await generate(
            lambda: _encode(
                walk(gan, seed_a, seed_b, steps, label, psi, category), fmt, scale, steps, echo
            )
        )

    digits = []  # the training digits (or why there are none), loaded by the first projection

    def find(drawing, options: dict) -> JSONResponse:
        if not digits:
            digits.extend(training_digits_or_note(gan))
        found = find_drawing(gan, drawing, *digits, time_limit=PROJECT_SECONDS, **options)
        nearest = [] if found.nearest is None else to_uint8(found.nearest).tolist()
        return JSONResponse(
            {
                **found.summary(),
                "shape": list(gan.image_shape),
                "drawing": to_uint8(found.drawing[None])[0].tolist(),
                "projection": to_uint8(found.projection.images)[0].tolist(),
                "nearest_images": nearest,
                "walk": to_uint8(found.walk).tolist(),
            }
        )

    async def project_endpoint(request: Request) -> Response:
        body = await _json_body(
            request,
            ("image", "label", "seed", "restarts", "steps", "walk_to"),
            limit=MAX_IMAGE_BODY,
        )
        label = _class_index(body, classes, allow_all=False)
        options = {
            "label": label,
            "seed": _int(body, "seed", 0, 0, MAX_SEED),
            "walk_to": _int(body, "walk_to", 1, 0, MAX_SEED),
            "restarts": _int(body, "restarts", 4, 1, MAX_RESTARTS, over=413),
            "steps": _int(body, "steps", 300, 0, MAX_PROJECT_STEPS, over=413),
        }
        if "image" not in body:
            raise BadRequest("image: required, the drawing (a PNG file as base64 or data: URL)")
        return await generate(lambda: find(_drawing(body, gan.image_shape), options))

    def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html")

    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return _error(exc.status, str(exc))

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(
            exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", exc.headers
        )

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/info", info, methods=["GET"]),
            Route("/api/samples", samples_endpoint, methods=["POST"]),
            Route("/api/interpolate", interpolate_endpoint, methods=["POST"]),
            Route("/api/project", project_endpoint, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={
            BadRequest: bad_request,
            HTTPException: http_error,
            Exception: server_error,
        },
        middleware=[] if allowed is None else [Middleware(HostCheck, hosts=allowed)],
    )


# --- running it ----------------------------------------------------------------------------


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port), or a ConfigError."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: must be from 0 to 65535 (0 = any free port)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError as e:
        raise ConfigError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"--host {host} --port {port}: cannot listen there ({e.strerror}); "
            "choose another --port"
        ) from None
    return sock


def _served_hosts(host: str, addr: str) -> list[str]:
    """The Host names a server given ``--host host`` and bound to ``addr`` answers to: any
    ("*") on a wildcard address, else the loopback names, ``host`` and ``addr``."""
    if ipaddress.ip_address(addr.split("%")[0]).is_unspecified:
        return ["*"]
    keys = (_host_key(h) for h in (*LOOPBACK_HOSTS, host, addr.split("%")[0]))
    return list(dict.fromkeys(k for k in keys if k))


def _note(host: str, addr: str) -> str | None:
    """What to tell the user about who can reach a server bound to ``addr``, if anything."""
    ip = ipaddress.ip_address(addr.split("%")[0])
    if ip.is_loopback:
        return None
    if ip.is_unspecified:
        return (
            f"note: {addr} is reachable from other machines, the server has no "
            "authentication, and it answers to any Host name (give --host this machine's "
            "address or name to answer to that one only)"
        )
    return (
        f"note: {addr} is reachable from other machines, and the server has no "
        f"authentication; it answers to the Host names {', '.join(_served_hosts(host, addr))}"
    )


class TimedH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with deadlines for slow clients. From the moment a
    connection opens, or a later request's first byte arrives, the client has
    ``request_timeout`` seconds to send the whole request; and while it leaves an answer
    unread (the send buffer full), it has ``request_timeout`` seconds to read on. Past either,
    the connection is closed. (uvicorn itself times out only connections idle between
    requests: a client that sends nothing, a byte now and then, or never reads would keep a
    connection, and the answer's memory, forever.)"""

    request_timeout: float = REQUEST_TIMEOUT
    _deadline: asyncio.TimerHandle | None = None  # for the request under way
    _unread: asyncio.TimerHandle | None = None  # for the answer to be read on

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        # h11 bounds only a head that is still incomplete, so a head awaited is fed to it in
        # pieces: a complete head over MAX_HEAD is refused too (400), however it arrives
        while data and not self.transport.is_closing():
            n = _HEAD_PIECE if self.conn.their_state is h11.IDLE else len(data)
            super().data_received(data[:n])
            data = data[n:]
        self._watch()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._unread is None:
            self._unread = self.loop.call_later(self.request_timeout, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._unread is not None:
            self._unread.cancel()
            self._unread = None

    def connection_lost(self, exc) -> None:
        for timer in (self._deadline, self._unread):
            if timer is not None:
                timer.cancel()
        self._deadline = self._unread = None
        super().connection_lost(exc)

    def _client_sending(self) -> bool:
        """Whether a request is awaited or under way (rather than complete)."""
        return self.conn.their_state in (h11.IDLE, h11.SEND_BODY)

    def _watch(self) -> None:
        if not self._client_sending():
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self.request_timeout, self._too_slow)

    def _too_slow(self) -> None:
        self._deadline = None
        if self._client_sending() and not self.transport.is_closing():
            self.transport.close()


def make_server(
    app,
    *,
    request_timeout: float = REQUEST_TIMEOUT,
    keep_alive: float = KEEP_ALIVE,
    max_connections: int = MAX_CONNECTIONS,
) -> uvicorn.Server:
    """A uvicorn server for ``app`` (run it with ``.run(sockets=[sock])``) with bounds on
    slow and idle clients: a request must arrive whole within ``request_timeout`` seconds,
    an answer left unread that long is dropped, an idle connection is closed after
    ``keep_alive`` seconds, a request's line and headers are at most MAX_HEAD bytes, and with
    ``max_connections`` connections open further requests get a 503. HTTP/1.1 only (h11), no
    WebSocket upgrades."""
    protocol = type("TimedH11Protocol", (TimedH11Protocol,), {"request_timeout": request_timeout})
    config = uvicorn.Config(
        app,
        http=protocol,
        ws="none",
        log_level="warning",
        timeout_keep_alive=keep_alive,
        limit_concurrency=max_connections,
        h11_max_incomplete_event_size=MAX_HEAD - _HEAD_PIECE,
    )
    return uvicorn.Server(config)


def serve(path, host: str = "127.0.0.1", port: int = 8000, device: str = "cpu") -> None:
    """Serve the model of a run directory or checkpoint on http://host:port/ until Ctrl-C.

    Prints the address (the real port when ``port`` is 0) as soon as it accepts connections.
    The server answers to the loopback names and ``host`` in the Host header, or to any
    name when ``host`` is a wildcard address (0.0.0.0, ::).
    """
    gan = load(path, device=device)
    sock = _listen(host, port)
    addr, real_port = sock.getsockname()[:2]
    shown = f"[{addr}]" if ":" in addr else addr
    try:  # a Ctrl-C at any point from here on stops the server quietly
        app = create_app(gan, hosts=_served_hosts(host, addr))
        print(
            f"serving {gan.path} ({gan.config.preset} preset, {gan.step} iterations) "
            f"at http://{shown}:{real_port}/ (Ctrl-C to stop)",
            flush=True,
        )
        note = _note(host, addr)
        if note:
            print(note, flush=True)
        make_server(app).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down cleanly, then re-raises the Ctrl-C
        pass
    finally:
        sock.close()
    print("stopped", flush=True)
