"""What several test modules share (importable: pyproject puts tests/ on the path)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import http.server
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path


class Stepping:
    """A trainer and the step ``digitgan train`` would give it, driven by hand in tests:
    ``step()`` runs one iteration, ``stats()`` reads its scalars as floats, and the trainer's
    attributes (``G``, ``D``, ``opt_d``, ...) are reachable directly."""

    def __init__(self, cfg, data, device="cpu", dist=None):
        from digitgan.training.distributed import SINGLE
        from digitgan.training.loop import make_step
        from digitgan.training.trainer import Trainer

        self.trainer = Trainer(cfg, data, device, dist or SINGLE)
        self.kernel = make_step(self.trainer)
        self.result = None

    @property
    def hand_written(self) -> bool:
        """Whether the step is the dense kernel rather than the generic one."""
        from digitgan.training.dense import DenseStep

        return isinstance(self.kernel, DenseStep)

    def step(self):
        self.result = self.kernel()
        return self.result

    def stats(self) -> dict[str, float]:
        """The last step's scalars as floats, read as the training loop reads them."""
        from digitgan.training.step import read_scalars

        return read_scalars(self.result, self.trainer.dist)

    def __getattr__(self, name):
        return getattr(self.trainer, name)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; no log lines; omits Content-Length when the server says so."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_header(self, keyword: str, value: str) -> None:
        if keyword.lower() == "content-length" and not self.server.send_length:
            return
        super().send_header(keyword, value)


@dataclasses.dataclass
class Mirror:
    """A local HTTP server on 127.0.0.1 serving the files in ``root`` at ``url``."""

    root: Path
    url: str
    server: http.server.ThreadingHTTPServer

    def omit_content_length(self) -> None:
        """Send bodies without a Content-Length header (the client must cap the stream)."""
        self.server.send_length = False


@contextlib.contextmanager
def mirror_of(root: Path) -> Iterator[Mirror]:
    """A local HTTP server on 127.0.0.1 serving the files in ``root``, while in the block."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.send_length = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Mirror(root, f"http://127.0.0.1:{server.server_address[1]}/", server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def download_grid(page, folder: Path) -> Path:
    """Click a digitgan page's *Download PNG* and save the file in ``folder`` under the name
    the page suggests."""
    with page.expect_download() as dl:
        page.click("#download")
    saved = folder / dl.value.suggested_filename
    dl.value.save_as(saved)
    return saved


def png_header(width: int, height: int) -> bytes:
    """A PNG file that announces ``width`` x ``height`` grey pixels and holds none of them:
    small to send, a decompression bomb to decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    head = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IEND", b"")
