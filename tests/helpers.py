"""What several test modules share (importable: pyproject puts tests/ on the path)."""

import struct
import zlib


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


def png_header(width: int, height: int) -> bytes:
    """A PNG file that announces ``width`` x ``height`` grey pixels and holds none of them:
    small to send, a decompression bomb to decode."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    head = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IEND", b"")
