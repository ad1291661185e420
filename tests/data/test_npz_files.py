"""``npz:FILE`` datasets (the Keras mnist.npz layout) and the safe .npz reader."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digitgan.data import load_dataset
from digitgan.errors import DataError


def keras_arrays(n_train: int = 8, n_test: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays in the Keras mnist.npz layout, small."""
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 6, 5), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 6, 5), dtype=np.uint8),
        "y_test": (np.arange(n_test) % 3).astype(np.uint8),
    }


def save(path: Path, **arrays: np.ndarray) -> str:
    """Write an .npz and return its spec."""
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_keras_layout_loads(tmp_path: Path) -> None:
    arrays = keras_arrays()
    dataset = load_dataset(save(tmp_path / "mnist.npz", **arrays))
    assert dataset.name == f"npz:{tmp_path / 'mnist.npz'}"
    assert dataset.image_shape == (1, 6, 5)
    assert dataset.train.images.shape == (8, 1, 6, 5) and dataset.train.images.dtype == np.uint8
    assert np.array_equal(dataset.train.images[:, 0], arrays["x_train"])
    assert dataset.train.labels.dtype == np.int64
    assert np.array_equal(dataset.test.labels, arrays["y_test"])
    assert dataset.num_classes == 8 and dataset.class_names == tuple("01234567")


def test_compressed_channels_last_and_wide_labels(tmp_path: Path) -> None:
    x = np.random.default_rng(1).integers(0, 256, (5, 4, 3, 3), dtype=np.uint8)
    path = tmp_path / "rgb.npz"
    np.savez_compressed(path, x_train=x, y_train=np.array([0, 1, 2, 1, 0], dtype=np.int64))
    dataset = load_dataset(f"npz:{path}")
    assert dataset.image_shape == (3, 4, 3) and dataset.test is None
    assert np.array_equal(dataset.train.images, x.transpose(0, 3, 1, 2))
    assert dataset.train.images.flags.c_contiguous
    assert dataset.num_classes == 3


@pytest.mark.parametrize(
    "change, message",
    [
        ({"x_train": None}, "lacks the array.s. x_train"),
        ({"y_train": None, "x_test": None, "y_test": None}, "lacks .* y_train"),
        ({"y_test": None}, "lacks the array.s. y_test"),
        ({"x_train": np.zeros((8, 6, 5), np.float32)}, r"\[x_train\]: expected uint8 images"),
        ({"x_train": np.zeros((8, 30), np.uint8)}, r"\[x_train\]: expected uint8 images"),
        ({"x_train": np.zeros((8, 6, 5, 7), np.uint8)}, "7 channels in the last axis"),
        ({"y_train": np.zeros(8, np.float64)}, r"\[y_train\]: expected integer labels"),
        ({"y_train": np.zeros((8, 1), np.uint8)}, r"\[y_train\]: expected integer labels"),
        ({"y_train": np.zeros(7, np.uint8)}, r"holds 8 images but .*\[y_train\] holds 7 labels"),
        ({"y_test": np.array([0, 1, -1, 0], np.int8)}, r"\[y_test\]: label -1 out of range"),
        ({"y_test": np.array([0, 300, 1, 0], np.int16)}, "label 300 out of range 0..255"),
        ({"x_test": np.zeros((4, 5, 6), np.uint8)}, r"test images are \(1, 5, 6\)"),
        ({"x_train": np.zeros((0, 6, 5), np.uint8), "y_train": np.zeros(0, np.uint8)}, "no images"),
    ],
)
def test_bad_arrays_are_refused(tmp_path: Path, change: dict, message: str) -> None:
    arrays = keras_arrays() | change
    spec = save(tmp_path / "bad.npz", **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(DataError, match=message):
        load_dataset(spec)


def test_pickled_object_array_is_refused(tmp_path: Path) -> None:
    arrays = keras_arrays() | {"y_train": np.array([{"evil": 1}] * 8, dtype=object)}
    with pytest.raises(DataError, match=r"y_train holds Python objects.*refused"):
        load_dataset(save(tmp_path / "pickled.npz", **arrays))


def test_not_an_npz(tmp_path: Path) -> None:
    np.save(tmp_path / "plain.npy", np.zeros(3))
    for path in (tmp_path / "plain.npy", tmp_path / "empty.npz"):
        path.touch()
        with pytest.raises(DataError, match=f"{path}: not an .npz archive"):
            load_dataset(f"npz:{path}")
    with pytest.raises(DataError, match=f"not found: {tmp_path / 'absent.npz'}"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")


def test_header_claiming_more_than_the_member_holds(tmp_path: Path) -> None:
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        member, {"descr": "|u1", "fortran_order": False, "shape": (10**9, 28, 28)}
    )
    path = tmp_path / "liar.npz"
    np.savez(path, y_train=np.zeros(3, np.uint8))
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("x_train.npy", member.getvalue() + bytes(100))
    with pytest.raises(DataError, match=r"x_train claims shape \(1000000000, 28, 28\)"):
        load_dataset(f"npz:{path}")


@pytest.fixture(scope="module")
def valid_npz(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The bytes of a plain and a compressed valid .npz."""
    folder = tmp_path_factory.mktemp("npz")
    np.savez(folder / "plain.npz", **keras_arrays(4, 2))
    np.savez_compressed(folder / "packed.npz", **keras_arrays(4, 2))
    return {name: (folder / f"{name}.npz").read_bytes() for name in ("plain", "packed")}


def load_or_data_error(path: Path) -> None:
    """Load ``npz:path``; DataError is the only acceptable failure."""
    try:
        load_dataset(f"npz:{path}")
    except DataError:
        pass


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["plain", "packed"]), data=st.data())
def test_fuzz_mutated_npz(scratch: Path, valid_npz: dict, mutate, kind: str, data) -> None:
    path = scratch / "mutated.npz"
    path.write_bytes(mutate(data, valid_npz[kind]))
    load_or_data_error(path)


@settings(max_examples=200, deadline=None)
@given(content=st.binary(max_size=300), zip_magic=st.booleans())
def test_fuzz_random_bytes(scratch: Path, content: bytes, zip_magic: bool) -> None:
    path = scratch / "random.npz"
    path.write_bytes((b"PK\x03\x04" if zip_magic else b"") + content)
    load_or_data_error(path)


def _member_record(archive: bytearray, signature: bytes, name: bytes) -> int:
    """Where the local header (PK\\3\\4) or central directory entry (PK\\1\\2) of member
    ``name`` starts in ``archive``."""
    name_at = 30 if signature == b"PK\x03\x04" else 46
    at = archive.index(signature)
    while archive[at + name_at : at + name_at + len(name)] != name:
        at = archive.index(signature, at + 4)
    return at


@pytest.mark.parametrize("method, name", [(zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "lzma")])
def test_compression_methods_numpy_never_writes_are_refused(tmp_path: Path, method, name):
    """Deflate expands data at most ~1032 times, so a deflated member's size bounds what it
    can claim; bzip2 and lzma have no such bound (and zipfile expands them in one piece)."""
    path = tmp_path / "other.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for key, array in keras_arrays().items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(f"{key}.npy", buffer.getvalue(), compress_type=method)
    with pytest.raises(DataError) as caught:
        load_dataset(f"npz:{path}")
    assert str(caught.value) == (
        f"{path}: array x_train is compressed with {name}; only stored and deflate members "
        "(what numpy's savez and savez_compressed write) are read"
    )


def test_encrypted_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "locked.npz"
    np.savez(path, **keras_arrays())
    data = bytearray(path.read_bytes())
    at = _member_record(data, b"PK\x01\x02", b"x_train.npy")
    data[at + 8] |= 1  # general purpose flag bit 0: encrypted
    path.write_bytes(data)
    with pytest.raises(DataError, match=r"array x_train is encrypted; refused"):
        load_dataset(f"npz:{path}")


def test_deflated_member_claiming_more_than_deflate_can_expand_to(tmp_path: Path) -> None:
    """The archive says x_train expands to 100 MB; its few deflated bytes cannot hold that."""
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        member, {"descr": "|u1", "fortran_order": False, "shape": (100, 1000, 1000)}
    )
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x_train.npy", member.getvalue() + bytes(1000))
        archive.writestr("y_train.npy", b"")
    data = bytearray(path.read_bytes())
    for signature, field in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = _member_record(data, signature, b"x_train.npy")
        data[at + field : at + field + 4] = (10**8 + 128).to_bytes(4, "little")
    path.write_bytes(data)
    with pytest.raises(DataError, match=r"x_train claims shape \(100, 1000, 1000\) .* its \d+ "):
        load_dataset(f"npz:{path}")


def test_a_long_list_of_members_is_refused(tmp_path: Path) -> None:
    """Python's zipfile holds several times the central directory in memory."""
    path = tmp_path / "many.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(1100):
            archive.writestr(f"{i:04d}{'x' * 1000}.npy", b"")
    with pytest.raises(DataError, match=r"its list of members takes 1,1\d\d,\d\d\d bytes, more"):
        load_dataset(f"npz:{path}")


def test_a_zip64_record_claiming_a_huge_member_list_is_refused(tmp_path: Path) -> None:
    """zipfile takes the directory's size from a zip64 end record if one sits before the end
    record; the check reads it too."""
    path = tmp_path / "zip64.npz"
    np.savez(path, **keras_arrays())
    data = path.read_bytes()
    end = data.rindex(b"PK\x05\x06")
    directory_at = int.from_bytes(data[end + 16 : end + 20], "little")
    record = b"PK\x06\x06" + struct.pack("<QHHIIQQQQ", 44, 45, 45, 0, 0, 4, 4, 2**40, directory_at)
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, end, 1)
    path.write_bytes(data[:end] + record + locator + data[end:])
    with pytest.raises(DataError, match="its list of members takes 1,099,511,627,776 bytes"):
        load_dataset(f"npz:{path}")


@pytest.mark.parametrize(
    "shape, refused", [((3, 1024, 2), False), ((3, 2, 1025), True), ((3, 1025, 4, 3), True)]
)
def test_images_of_more_than_1024_pixels_a_side_are_refused(tmp_path, shape, refused) -> None:
    arrays = {"x_train": np.zeros(shape, np.uint8), "y_train": np.zeros(3, np.uint8)}
    spec = save(tmp_path / "wide.npz", **arrays)
    if not refused:
        assert load_dataset(spec).image_shape[1:] == shape[1:3]
        return
    message = rf"\[x_train\]: images of {shape[1]}x{shape[2]} pixels; .* at most 1024 pixels"
    with pytest.raises(DataError, match=message):
        load_dataset(spec)
