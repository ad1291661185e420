"""Every file digitgan reads has a bound: a file that claims more than the bound, or is larger,
or is not a regular file, or is not text where text is expected, is refused with one line
that names it, in bounded memory. The commands run in child processes whose address space is
capped (RLIMIT_AS, see ``MEMORY_LIMIT``), so a reader that allocates what a file claims fails
there with a traceback instead of passing."""

from __future__ import annotations

import gzip
import json
import os
import struct
import zipfile
import zlib

import numpy as np
import pytest
import torch
from guarantees.conftest import assert_one_line_error
from safetensors.torch import save as st_save

from digitgan.cli import main
from digitgan.data import read_idx
from digitgan.data.datasets import IDX_NAMES, MAX_IMAGE_SIDE
from digitgan.errors import DataError
from digitgan.eval.classifier import SHIPPED
from digitgan.store.checkpoint import read_checkpoint
from digitgan.store.rundir import MAX_METRICS_BYTES

GB_2_1 = 2_100_000_000


def _npy(descr: str, shape: tuple, payload: bytes = b"") -> bytes:
    """A .npy file (format 1.0) with exactly this header, whatever it claims."""
    header = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}".encode()
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def _claim_size(archive: bytes, name: bytes, size: int) -> bytes:
    """Set the uncompressed size that the zip ``archive`` records for member ``name`` (in its
    local header and its central directory entry) to ``size``."""
    data = bytearray(archive)
    for signature, field in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.index(signature)
        while data[at + (30 if signature == b"PK\x03\x04" else 46) :].find(name) != 0:
            at = data.index(signature, at + 4)
        struct.pack_into("<I", data, at + field, size)
    return bytes(data)


def _one_line(capsys, argv: list[str], *fragments: str) -> str:
    """Run the command line in this process: status 2 and one line holding ``fragments``."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("digitgan: error: "), err
    for fragment in fragments:
        assert fragment in err, err
    return err


# --- .npz members compressed with methods numpy never writes ---------------------------------


@pytest.mark.parametrize("method, name", [(zipfile.ZIP_BZIP2, "bzip2"), (zipfile.ZIP_LZMA, "lzma")])
def test_bzip2_or_lzma_member_claiming_2_gb_is_refused_in_bounded_memory(
    cli, tmp_path, method, name
):
    """A 2 KB .npz whose x_train, bzip2- or lzma-compressed, claims 2.1 GB: such methods can
    expand data without a useful bound (zipfile even expands a member in one piece), so they
    are refused by name before anything is read. (The data here is small; the sizes in the
    archive and the .npy header claim 2.1 GB, as those of a real bomb would.)"""
    header = _npy("|u1", (2100, 1000, 1000))
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", header + bytes(1000), compress_type=method)
        archive.writestr("y_train.npy", _npy("|u1", (2100,), bytes(2100)))
    path.write_bytes(_claim_size(path.read_bytes(), b"x_train.npy", len(header) + GB_2_1))
    assert path.stat().st_size < 4000
    result = cli.run_limited("data", "info", f"npz:{path}")
    assert_one_line_error(result, str(path), "x_train", f"compressed with {name}")


# --- images larger than digitgan takes -------------------------------------------------------


def _gzip_of_zeros(header: bytes, count: int) -> bytes:
    """A gzip file holding ``header`` and then ``count`` zero bytes, made fast: one gzip
    member of zeros, repeated (gzip readers read the members one after another)."""
    chunk = 10_000_000
    assert count % chunk == 0
    member = gzip.compress(bytes(chunk), compresslevel=1, mtime=0)
    return gzip.compress(header, mtime=0) + member * (count // chunk)


def test_huge_image_in_an_idx_folder_is_refused_before_it_is_read(cli, tmp_path):
    """One 20000x20000 image: 400 MB of data in a 0.5 MB gzipped IDX file."""
    side = 20_000
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 1, side, side)
    images = tmp_path / f"{IDX_NAMES[0]}.gz"
    images.write_bytes(_gzip_of_zeros(header, side * side))
    (tmp_path / f"{IDX_NAMES[1]}.gz").write_bytes(
        gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 1) + b"\0")
    )
    result = cli.run_limited("data", "info", f"idx:{tmp_path}", limit=2**28)
    assert_one_line_error(
        result, str(images), f"{side}x{side} pixels", f"at most {MAX_IMAGE_SIDE} pixels a side"
    )


def test_huge_image_in_an_npz_is_refused(capsys, tmp_path):
    side = MAX_IMAGE_SIDE + 1
    path = tmp_path / "wide.npz"
    np.savez(path, x_train=np.zeros((2, 4, side), np.uint8), y_train=np.zeros(2, np.uint8))
    _one_line(
        capsys,
        ["data", "info", f"npz:{path}"],
        f"{path}[x_train]: images of 4x{side} pixels",
        f"at most {MAX_IMAGE_SIDE} pixels a side",
    )


# --- config files ----------------------------------------------------------------------------


def test_config_from_dev_zero_is_refused_in_bounded_memory(cli):
    result = cli.run_limited("config", "--config", "/dev/zero")
    assert_one_line_error(result, "config file /dev/zero: not a regular file")


def test_binary_and_oversized_config_files_are_one_line(capsys, tmp_path):
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[train]\niters = 3\n\xff\xfe\x00\x81")
    _one_line(capsys, ["config", "--config", str(binary)], f"{binary}: not UTF-8 text")
    big = tmp_path / "big.toml"
    big.write_text("# padding\n" * 110_000)
    _one_line(capsys, ["config", "--config", str(big)], f"{big}: 1,100,000 bytes, more than")
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    _one_line(capsys, ["config", "--config", str(deep)], f"{deep}: not valid TOML")
    not_a_name = tmp_path / "preset.toml"
    not_a_name.write_text("preset = [1, 2]\n")
    _one_line(capsys, ["config", "--config", str(not_a_name)], "preset must be a string")


# --- metrics.jsonl ---------------------------------------------------------------------------


def test_damaged_metrics_file_is_skipped_by_resume_and_plot(capsys, trained_run):
    """Lines that are not UTF-8 or not JSON objects, or whose values make no sense to plot,
    are skipped; the good lines are kept."""
    metrics = trained_run / "metrics.jsonl"
    good = metrics.read_bytes().splitlines()
    assert good
    damaged = [
        b'{"step": 0, "D_loss": 1.5, "x\xff": 2}',
        b"\x80\x81 not text",
        b"[1, 2, 3]",
        b'{"step": "one", "D_loss": 1}',
        b'{"D_loss": 1}',
        b'{"step": 5, "D_loss": 1e308, "G_loss": true, "$\\\\frac{": 3, "k": 1e400}',
    ]
    metrics.write_bytes(b"\n".join(good[:1] + damaged + good[1:]) + b"\n")
    assert main(["plot", str(trained_run)]) in (0, 2)  # 2: the tiny run has no sample grids
    err = capsys.readouterr().err
    assert err in (
        "",
        f"digitgan: error: {trained_run}: no sample grids in "
        f"{trained_run / 'samples'} to animate\n",
    ), err
    assert (trained_run / "plots" / "curves.png").is_file()
    assert main(["train", "--resume", str(trained_run), "--iters", "2", "--no-progress"]) == 0
    kept = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert kept == [json.loads(line) for line in good if json.loads(line)["step"] < 2]


def test_oversized_metrics_file_is_refused(capsys, trained_run):
    metrics = trained_run / "metrics.jsonl"
    with open(metrics, "r+b") as f:
        f.truncate(MAX_METRICS_BYTES + 1)  # sparse: nothing is written
    limit = f"more than the {MAX_METRICS_BYTES:,} allowed"
    _one_line(capsys, ["plot", str(trained_run)], f"metrics file {metrics}", limit)
    resume = ["train", "--resume", str(trained_run), "--iters", "2", "--no-progress"]
    _one_line(capsys, resume, f"metrics file {metrics}", limit)


def test_sample_grid_claiming_10_gigapixels_is_one_line(capsys, trained_run):
    """A PNG whose header claims 100000x100000 pixels, among the grids `plot` animates."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")
    grid = trained_run / "samples" / "000.png"
    grid.write_bytes(png)
    _one_line(capsys, ["plot", str(trained_run)], f"sample grid {grid}: not a readable PNG")


# --- .npy files for evaluate -----------------------------------------------------------------


def test_npy_labels_claiming_745_gib_are_refused_in_bounded_memory(cli, tmp_path):
    samples, labels = tmp_path / "samples.npy", tmp_path / "labels.npy"
    np.save(samples, np.zeros((4, 28, 28), np.uint8))
    labels.write_bytes(_npy("<i8", (10**11,), bytes(80)))
    result = cli.run_limited("evaluate", samples, "--labels", labels)
    assert_one_line_error(result, f"--labels {labels}", "claims shape (100000000000,)")


def test_npy_samples_claiming_more_than_the_file_holds(capsys, tmp_path):
    samples = tmp_path / "samples.npy"
    samples.write_bytes(_npy("|u1", (10**6, 28, 28), bytes(100)))
    _one_line(capsys, ["evaluate", str(samples)], f"{samples} claims shape (1000000, 28, 28)")


def test_npy_samples_that_are_a_zip_or_huge_images(capsys, tmp_path):
    archive = tmp_path / "archive.npy"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("x.npy", _npy("|u1", (2, 2, 2), bytes(8)))
    _one_line(capsys, ["evaluate", str(archive)], f"{archive}: not a .npy file")
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros((2, 2, MAX_IMAGE_SIDE + 1), np.uint8))
    _one_line(capsys, ["evaluate", str(wide)], f"{wide}: images of 2x{MAX_IMAGE_SIDE + 1}")


# --- classifier weights ----------------------------------------------------------------------


def test_classifier_metadata_describing_a_huge_network_costs_no_memory(cli, tmp_path):
    """The shipped classifier's tensors under metadata claiming a feature layer of 10^6
    units (a 4.6 GB weight matrix): the network is compared on PyTorch's meta device, so the
    file is refused for not matching it, not for running out of memory building it."""
    tensors, meta = read_checkpoint(SHIPPED["mnist20k"].path, "digitgan-classifier", 1)
    meta["arch"]["feature_dim"] = 10**6
    path = tmp_path / "huge.safetensors"
    path.write_bytes(st_save(tensors, metadata={"digitgan": json.dumps(meta)}))
    samples = tmp_path / "samples.npy"
    np.save(samples, np.zeros((4, 28, 28), np.uint8))
    result = cli.run_limited("evaluate", samples, "--classifier", path)
    assert_one_line_error(result, f"{path}: not a usable classifier", "the network expects")


def test_classifier_weights_that_are_nan_are_refused(capsys, tmp_path):
    tensors, meta = read_checkpoint(SHIPPED["mnist20k"].path, "digitgan-classifier", 1)
    tensors = {k: v.clone() for k, v in tensors.items()}
    tensors["head.weight"][0, 0] = torch.nan
    path = tmp_path / "nan.safetensors"
    path.write_bytes(st_save(tensors, metadata={"digitgan": json.dumps(meta)}))
    samples = tmp_path / "samples.npy"
    np.save(samples, np.zeros((4, 28, 28), np.uint8))
    _one_line(
        capsys,
        ["evaluate", str(samples), "--classifier", str(path)],
        "head.weight holds NaN or inf",
    )


# --- files that are not regular files --------------------------------------------------------


@pytest.mark.parametrize("kind", ["idx", "npz", "npy"])
def test_a_fifo_is_refused_not_waited_on(capsys, tmp_path, kind):
    fifo = tmp_path / ("train-images-idx3-ubyte" if kind == "idx" else f"fifo.{kind}")
    os.mkfifo(fifo)
    if kind == "idx":
        with pytest.raises(DataError, match=f"{fifo}: not a regular file"):
            read_idx(fifo)
    elif kind == "npz":
        _one_line(capsys, ["data", "info", f"npz:{fifo}"], f"{fifo}: not a regular file")
    else:
        _one_line(capsys, ["evaluate", str(fifo)], f"{fifo}: not a regular file")
