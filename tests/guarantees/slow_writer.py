"""``python slow_writer.py ARGS``: the digitgan command line with slow atomic writes.

The reliability tests kill training at random moments; this makes checkpoint writes take
long enough (a pause after each 4 KiB) that a kill can land in the middle of one. Only
the speed changes: the bytes still go through :func:`digitgan.fileio.atomic_write`.
"""

import sys
import time

from digitgan import fileio

CHUNK, PAUSE_S = 1 << 12, 0.01


def slow_atomic_write_bytes(path, data: bytes) -> None:
    with fileio.atomic_write(path) as f:
        for start in range(0, len(data), CHUNK):
            f.write(data[start : start + CHUNK])
            f.flush()
            time.sleep(PAUSE_S)


# Patched before digitgan.store.checkpoint imports the name.
fileio.atomic_write_bytes = slow_atomic_write_bytes

from digitgan.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
