"""The IDX reader and writer: exact round trips, and a clear DataError for every bad file."""

from __future__ import annotations

import gzip
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from digitgan.data.idx import MAX_PAYLOAD_BYTES, read_idx, write_idx
from digitgan.errors import DataError
from digitgan.fileio import atomic_write

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
FUZZ = settings(max_examples=200, deadline=None)


def header(code: int, *shape: int) -> bytes:
    """An IDX header: two zero bytes, type code, dimension count, big-endian dimensions."""
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def sample(dtype: type, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values spanning the dtype's range (with inf and NaN for floats)."""
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    array = (rng.standard_normal(shape) * 1e30).astype(dtype)
    array.flat[:3] = [np.inf, -np.inf, np.nan][: array.size]
    return array


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("ndim", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_is_exact(tmp_path: Path, dtype: type, ndim: int, suffix: str) -> None:
    array = sample(dtype, (3, 4, 2, 5)[:ndim], seed=ndim)
    path = tmp_path / f"array-idx{ndim}{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()  # bit for bit, NaN included
    assert back.flags.writeable and back.dtype.isnative


@settings(max_examples=100, deadline=None)
@given(
    array=hnp.arrays(
        st.sampled_from(DTYPES),
        hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=4),
    ),
    gz=st.booleans(),
)
def test_round_trip_property(scratch: Path, array: np.ndarray, gz: bool) -> None:
    path = scratch / ("round-trip.gz" if gz else "round-trip")
    write_idx(path, array)
    back = read_idx(path)
    assert back.shape == array.shape and back.tobytes() == array.tobytes()


def test_layout_is_standard_idx_and_big_endian(tmp_path: Path) -> None:
    write_idx(tmp_path / "a", np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8))
    assert (tmp_path / "a").read_bytes() == header(0x08, 2, 3) + bytes([1, 2, 3, 4, 5, 6])
    write_idx(tmp_path / "b", np.array([1, -2], dtype="<i2"))
    assert (tmp_path / "b").read_bytes() == header(0x0B, 2) + b"\x00\x01\xff\xfe"


def test_big_endian_input_reads_back_native(tmp_path: Path) -> None:
    array = np.array([1.5, -2.25, 3e38], dtype=">f4")
    write_idx(tmp_path / "a", array)
    back = read_idx(tmp_path / "a")
    assert back.dtype == np.dtype(np.float32) and np.array_equal(back, array)


def test_gzip_output_is_reproducible(tmp_path: Path) -> None:
    array = sample(np.uint8, (5, 7))
    write_idx(tmp_path / "a.gz", array)
    first = (tmp_path / "a.gz").read_bytes()
    write_idx(tmp_path / "a.gz", array)
    assert (tmp_path / "a.gz").read_bytes() == first
    assert gzip.decompress(first) == header(0x08, 5, 7) + array.tobytes()


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros(3, dtype=np.int64), "no type for int64"),
        (np.zeros(3, dtype=bool), "no type for bool"),
        (np.zeros(3, dtype=np.float16), "no type for float16"),
        (np.array(["a"]), "no type for <U1"),
        (np.array(7, dtype=np.uint8), "1 to 4 dimensions, not 0"),
        (np.zeros((1,) * 5, dtype=np.uint8), "1 to 4 dimensions, not 5"),
    ],
)
def test_write_refuses_what_idx_cannot_hold(tmp_path: Path, array: np.ndarray, message) -> None:
    with pytest.raises(DataError, match=message):
        write_idx(tmp_path / "a", array)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as out:
        out.write(b"new")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [path.name for path in tmp_path.iterdir()] == ["file"]


VALID = header(0x08, 2, 3) + bytes(range(6))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "too short"),
        (b"\0\0\x08", "too short"),
        (b"\x01\0\x08\x01" + VALID[4:], "not an IDX file .magic number 01000801"),
        (gzip.compress(VALID), "looks gzip-compressed"),
        (header(0x0A, 2), "unknown IDX type code 0x0A"),
        (bytes([0, 0, 8, 0]), "0 dimensions; expected 1 to 4"),
        (header(0x08, 1, 1, 1, 1, 1) + b"\0", "5 dimensions; expected 1 to 4"),
        (bytes([0, 0, 8, 3]) + struct.pack(">2I", 2, 3), "truncated header"),
        (VALID[:-1], "truncated: expected 6 bytes of data, found 5"),
        (header(0x0C, 2, 3) + bytes(23), "truncated: expected 24 bytes of data, found 23"),
        (VALID + b"\0", "trailing bytes after the 6 bytes"),
        (header(0x08, 2**16, 2**16, 2) + bytes(10), f"more than the {MAX_PAYLOAD_BYTES} allowed"),
        (header(0x0E, 2**30) + bytes(10), "more than the"),
        # four dimensions, (N, C, H, W) images: the same checks
        (bytes([0, 0, 8, 4]) + struct.pack(">3I", 2, 3, 4), "truncated header: 4 dimensions"),
        (header(0x08, 2, 3, 4, 4) + bytes(95), "truncated: expected 96 bytes of data, found 95"),
        (header(0x08, 2, 3, 4, 4) + bytes(97), "trailing bytes after the 96 bytes"),
        (header(0x08, 2**12, 3, 2**10, 2**10) + bytes(10), "claims shape .4096, 3, 1024, 1024."),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_bad_file_is_refused(tmp_path: Path, content: bytes, message: str, gz: bool) -> None:
    path = tmp_path / ("bad.gz" if gz else "bad")
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(DataError, match=message) as caught:
        read_idx(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("gz", [False, True])
def test_absurd_size_costs_no_large_allocation(tmp_path: Path, gz: bool) -> None:
    content = header(0x08, 2**15, 2**15) + bytes(100)  # claims 1 GiB, holds 100 bytes
    path = tmp_path / ("big.gz" if gz else "big")
    path.write_bytes(gzip.compress(content) if gz else content)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="truncated: expected 1073741824 bytes"):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20


def test_gzip_bomb_is_read_only_up_to_the_header_size(tmp_path: Path) -> None:
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(header(0x08, 100) + bytes(50 * 2**20)))
    with pytest.raises(DataError, match="trailing bytes after the 100 bytes"):
        read_idx(path)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda packed: packed[: len(packed) // 2], id="truncated"),
        pytest.param(lambda packed: packed[:-8] + bytes(8), id="bad-crc"),
        pytest.param(lambda packed: packed[:500] + b"\xff" * 8 + packed[508:], id="bad-deflate"),
        pytest.param(lambda packed: b"plain text, not gzip", id="not-gzip"),
        pytest.param(lambda packed: packed + b"junk", id="junk-after-member"),
    ],
)
def test_corrupt_gzip_is_refused(tmp_path: Path, damage) -> None:
    path = tmp_path / "bad-idx1-ubyte.gz"
    payload = sample(np.uint8, (1000,)).tobytes()  # incompressible: about 1000 bytes of deflate
    path.write_bytes(damage(gzip.compress(header(0x08, 1000) + payload)))
    with pytest.raises(DataError, match="corrupt gzip data") as caught:
        read_idx(path)
    assert str(path) in str(caught.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"not found: {tmp_path / 'nope.gz'}"):
        read_idx(tmp_path / "nope.gz")
    with pytest.raises(DataError, match=f"{tmp_path}: is a folder, not a file"):
        read_idx(tmp_path)


def read_or_data_error(path: Path) -> None:
    """Read ``path``; DataError is the only acceptable failure."""
    try:
        array = read_idx(path)
    except DataError:
        return
    assert isinstance(array, np.ndarray) and 1 <= array.ndim <= 4


@FUZZ
@given(content=st.binary(max_size=300), gz=st.booleans())
def test_fuzz_random_bytes(scratch: Path, content: bytes, gz: bool) -> None:
    path = scratch / ("random.gz" if gz else "random")
    path.write_bytes(content)
    read_or_data_error(path)


@FUZZ
@given(
    code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF]),
    dims=st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=6),
    payload=st.binary(max_size=64),
    gz=st.booleans(),
)
def test_fuzz_plausible_headers(
    scratch: Path, code: int, dims: list[int], payload: bytes, gz: bool
) -> None:
    content = bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload
    path = scratch / ("header.gz" if gz else "header")
    path.write_bytes(gzip.compress(content) if gz else content)
    read_or_data_error(path)


@pytest.fixture(scope="module")
def valid_files(scratch: Path) -> dict[tuple[type, bool, int], bytes]:
    """The bytes of a valid IDX file for each dtype, plain and gzipped, of 3 dimensions
    (N, H, W) and of 4 (N, C, H, W)."""
    files = {}
    for dtype in DTYPES:
        for gz in (False, True):
            for shape in ((3, 2, 4), (3, 2, 2, 4)):
                path = scratch / ("valid.gz" if gz else "valid")
                write_idx(path, sample(dtype, shape))
                files[dtype, gz, len(shape)] = path.read_bytes()
    return files


@FUZZ
@given(
    dtype=st.sampled_from(DTYPES), gz=st.booleans(), ndim=st.sampled_from([3, 4]), data=st.data()
)
def test_fuzz_mutated_valid_files(
    scratch: Path, valid_files: dict, mutate, dtype: type, gz: bool, ndim: int, data
) -> None:
    path = scratch / ("mutated.gz" if gz else "mutated")
    path.write_bytes(mutate(data, valid_files[dtype, gz, ndim]))
    read_or_data_error(path)
