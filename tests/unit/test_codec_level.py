"""The encoder's zstd level: chosen on the start of each object (``codec.choose_level``).

Data that is compressed already (Cassandra's LZ4 SSTables, packed or encrypted
files) gets the fast level, everything else zstd's default; either way the
object is one ordinary zstd frame that decodes (and verifies) as before.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import subprocess

import pytest
import zstandard

from txbackup.repository import codec
from txbackup.repository.codec import Encoder, Expected, decoded


def text_rows(size: int) -> bytes:
    rng = random.Random(7)
    out = bytearray()
    while len(out) < size:
        out += b"INSERT INTO t VALUES (%d,'name %d','%s');\n" % (
            rng.randrange(10**6),
            rng.randrange(1000),
            rng.choice([b"red", b"green", b"blue"]),
        )
    return bytes(out[:size])


def lz4_like(size: int) -> bytes:
    """What an LZ4-compressed SSTable looks like to zstd: mostly random with a few
    repeats (it saves a few percent)."""
    rng = random.Random(11)
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(900) + b"\x00" * 40
    return bytes(out[:size])


def encode(data: bytes, piece: int) -> tuple[Encoder, bytes, codec.Encoded]:
    stored = bytearray()
    encoder = Encoder(stored.extend)
    for i in range(0, len(data), piece):
        encoder.write(data[i : i + piece])
    done = encoder.finish()
    return encoder, bytes(stored), done


def decode(stored: bytes, done: codec.Encoded) -> bytes:
    expected = Expected(done.size, done.sha256, done.stored_size, done.stored_sha256)
    with decoded(io.BytesIO(stored), expected, "test object") as data:
        return data.read()


def test_probe_picks_the_fast_level_only_for_data_that_barely_compresses() -> None:
    assert codec.choose_level(text_rows(codec.PROBE_BYTES)) == codec.ZSTD_LEVEL
    assert codec.choose_level(os.urandom(codec.PROBE_BYTES)) == codec.FAST_LEVEL
    assert codec.choose_level(lz4_like(codec.PROBE_BYTES)) == codec.FAST_LEVEL
    # shorter than the probe: the default, whatever it holds
    assert codec.choose_level(os.urandom(codec.PROBE_BYTES - 1)) == codec.ZSTD_LEVEL


def level_stream(data: bytes, level: int) -> bytes:
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=level, threads=0, write_checksum=True).stream_writer(
        out, closefd=False
    ) as writer:
        writer.write(data)
    return out.getvalue()


@pytest.mark.parametrize("piece", [1, 4099, codec.PROBE_BYTES - 1, codec.PROBE_BYTES, 3 << 20])
@pytest.mark.parametrize(
    ("make", "level"), [(text_rows, codec.ZSTD_LEVEL), (lz4_like, codec.FAST_LEVEL)]
)
def test_the_chosen_level_compresses_the_whole_object_in_order(make, level, piece) -> None:
    data = make(3 * codec.PROBE_BYTES + 12345)
    if piece == 1:
        data = data[: codec.PROBE_BYTES + 100]  # byte by byte: keep it short
    encoder, stored, done = encode(data, piece)
    assert encoder.level == level
    # the held start went into the frame first, and at the chosen level: the same bytes
    # as one stream at that level
    assert stored == level_stream(data, level)
    assert (done.size, done.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert (done.stored_size, done.stored_sha256) == (len(stored), hashlib.sha256(stored).hexdigest())
    assert decode(stored, done) == data


@pytest.mark.parametrize("size", [0, 1, 1000, codec.PROBE_BYTES - 1])
def test_a_short_object_keeps_the_default_level(size) -> None:
    data = os.urandom(size)
    encoder, stored, done = encode(data, 512)
    assert encoder.level == codec.ZSTD_LEVEL
    assert stored == level_stream(data, codec.ZSTD_LEVEL)
    assert decode(stored, done) == data


def test_the_fast_level_costs_a_little_size_on_compressed_data_and_none_elsewhere() -> None:
    """The trade the probe makes: on LZ4-like data the fast level stores at most a
    few percent more than the default; on text it is not used at all."""
    data = lz4_like(4 * codec.PROBE_BYTES)
    _, stored, _ = encode(data, 1 << 16)
    assert len(stored) <= 1.02 * len(level_stream(data, codec.ZSTD_LEVEL))
    assert len(stored) < len(data)  # still compressed
    text = text_rows(4 * codec.PROBE_BYTES)
    _, stored, _ = encode(text, 1 << 16)
    assert stored == level_stream(text, codec.ZSTD_LEVEL)


@pytest.mark.skipif(shutil.which("zstd") is None, reason="no zstd command")
def test_a_fast_level_object_is_restorable_by_hand(tmp_path) -> None:
    data = lz4_like(2 * codec.PROBE_BYTES + 7)
    encoder, stored, _ = encode(data, 1 << 16)
    assert encoder.level == codec.FAST_LEVEL
    packed = tmp_path / "object.zst"
    packed.write_bytes(stored)
    subprocess.run(["zstd", "-q", "-d", str(packed), "-o", str(tmp_path / "object")], check=True)
    assert (tmp_path / "object").read_bytes() == data
