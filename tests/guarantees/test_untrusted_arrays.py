"""IDX and .npz files are untrusted input: a header that claims 10^12 items is refused before
anything of that size is allocated, and crafted .npy headers raise DataError and nothing else.

(The readers' byte-level fuzz tests live in tests/data/; these add the two attacks that
random bytes rarely hit: an absurd but well-formed size claim, and crafted .npy headers
inside a valid zip archive.)"""

from __future__ import annotations

import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digitgan.data import load_dataset, read_idx
from digitgan.errors import DataError

TRILLION = 10**12


def _peak_bytes(action) -> tuple[int, str]:
    """Run ``action``, which must raise DataError; return (peak allocation, message)."""
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as caught:
            action()
        return tracemalloc.get_traced_memory()[1], str(caught.value)
    finally:
        tracemalloc.stop()


def _npy(descr, shape, fortran=False, payload=b"") -> bytes:
    """A .npy member with exactly this header (format 1.0), whatever it claims."""
    header = f"{{'descr': {descr!r}, 'fortran_order': {fortran!r}, 'shape': {shape!r}, }}"
    header = header.encode("latin1")
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def _npz(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> str:
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, content in members.items():
            archive.writestr(f"{name}.npy", content)
    return f"npz:{path}"


def test_idx_header_claiming_a_trillion_items(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 8, 2]) + struct.pack(">2I", 10**6, 10**6) + bytes(64))
    peak, message = _peak_bytes(lambda: read_idx(path))
    assert f"{TRILLION} bytes" in message and str(path) in message
    assert peak < 2**20


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_header_claiming_a_trillion_items(tmp_path, compression):
    members = {
        "x_train": _npy("|u1", (TRILLION, 1, 1), payload=bytes(64)),
        "y_train": _npy("|u1", (1,), payload=b"\0"),
    }
    spec = _npz(tmp_path / "liar.npz", members, compression)
    peak, message = _peak_bytes(lambda: load_dataset(spec))
    assert f"claims shape ({TRILLION}, 1, 1)" in message
    assert peak < 2**20


def test_npz_negative_dimension(tmp_path):
    """numpy reads (3, -2, 2**62) happily; its product is negative, so it passed a size check
    (found by the fuzz test below)."""
    members = {
        "x_train": _npy("|u1", (3, -2, 2**62)),
        "y_train": _npy("|u1", (3,), payload=b"\0" * 3),
    }
    with pytest.raises(DataError, match=r"x_train claims an impossible shape \(3, -2, "):
        load_dataset(_npz(tmp_path / "negative.npz", members))


DESCRS = ["|u1", "<u2", ">i4", "<f4", "<f8", "|b1", "<c16", "|O", "<U3", "|S2", "|V4", "<M8[s]"]
DESCRS += ["", "u1", "garbage", "<i0", "(2,)u1"]
DIM = st.integers(0, 4) | st.integers(-2, 2**64)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    descr=st.just("|u1") | st.sampled_from(DESCRS),
    shape=st.lists(st.integers(1, 4), min_size=3, max_size=4).map(tuple)
    | st.lists(DIM, max_size=5).map(tuple)
    | st.sampled_from([None, "x", (1.5,), 3]),
    fortran=st.booleans() | st.just("yes"),
    payload=st.binary(max_size=128),
    exact=st.booleans(),
    labels=st.sampled_from(["valid", "valid", "same", "absent"]),
    compression=st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
)
def test_fuzz_crafted_npy_headers(
    tmp_path_factory, descr, shape, fortran, payload, exact, labels, compression
):
    small = isinstance(shape, tuple) and all(type(d) is int and 0 <= d <= 8 for d in shape)
    if exact and small:  # exactly the bytes a one-byte dtype needs, so that some files load
        size = int(np.prod(shape))
        payload = (payload * (size // max(len(payload), 1) + 1))[:size].ljust(size, b"\7")
    crafted = _npy(descr, shape, fortran, payload)
    members = {"x_train": crafted}
    n = shape[0] if small and shape else 2
    if labels != "absent":
        members["y_train"] = crafted if labels == "same" else _npy("|u1", (n,), payload=bytes(n))
    path = tmp_path_factory.mktemp("npz", numbered=True) / "crafted.npz"
    try:
        dataset = load_dataset(_npz(path, members, compression))
    except DataError:
        return
    assert dataset.train.images.dtype == np.uint8 and dataset.train.images.ndim == 4
