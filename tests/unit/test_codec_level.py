"""The encoder's zstd level: chosen on the start of each object (``codec.choose_level``).

zstd's default level where it stores at least 5% less than the fast level (text
with long repeats: source code), the fast level elsewhere (data compressed
already: Cassandra's LZ4 SSTables, packed or encrypted files; rows of hex
digests); either way the object is one ordinary zstd frame that decodes (and
verifies) as before.
"""

from __future__ import annotations

import glob
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


def source_code(size: int) -> bytes:
    """Python's own library: text whose long repeats zstd's level 3 finds (8% smaller
    than level 1 on its first MiB)."""
    out = bytearray()
    for path in sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py"))):
        with open(path, "rb") as src:
            out += src.read()
        if len(out) >= size:
            return bytes(out[:size])
    raise AssertionError("not enough of Python's library to read")


def hex_rows(size: int) -> bytes:
    """A dump's rows of hex digests (level 3: 3% smaller than level 1, for 2.5x the CPU)."""
    out = bytearray()
    g = 0
    while len(out) < size:
        g += 1
        a, b, c = (hashlib.md5(b"%d" % (g * k)).hexdigest().encode() for k in (1, 7, 3))
        out += b"(%d,%d,'%s %s',0x%s)," % (g, g % 1000, a, b, c.upper())
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


def test_the_default_level_only_where_it_stores_clearly_less() -> None:
    assert codec.choose_level(source_code(codec.PROBE_BYTES)) == codec.ZSTD_LEVEL
    assert codec.choose_level(hex_rows(codec.PROBE_BYTES)) == codec.FAST_LEVEL
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
    ("make", "level"), [(source_code, codec.ZSTD_LEVEL), (lz4_like, codec.FAST_LEVEL)]
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


@pytest.mark.parametrize("make", [lz4_like, hex_rows])
def test_the_fast_level_stores_about_what_the_default_would(make) -> None:
    """The trade the probe makes, on whole objects: where it picks the fast level, the
    default would have stored at most a few percent less."""
    data = make(4 * codec.PROBE_BYTES)
    encoder, stored, _ = encode(data, 1 << 16)
    assert encoder.level == codec.FAST_LEVEL
    assert len(stored) <= 1.05 * len(level_stream(data, codec.ZSTD_LEVEL))
    assert len(stored) < len(data)  # still compressed


def test_text_that_compresses_better_keeps_the_default_level() -> None:
    text = source_code(3 * codec.PROBE_BYTES)
    _, stored, _ = encode(text, 1 << 16)
    assert stored == level_stream(text, codec.ZSTD_LEVEL)
    assert len(stored) < 0.95 * len(level_stream(text, codec.FAST_LEVEL))


@pytest.mark.skipif(shutil.which("zstd") is None, reason="no zstd command")
def test_a_fast_level_object_is_restorable_by_hand(tmp_path) -> None:
    data = lz4_like(2 * codec.PROBE_BYTES + 7)
    encoder, stored, _ = encode(data, 1 << 16)
    assert encoder.level == codec.FAST_LEVEL
    packed = tmp_path / "object.zst"
    packed.write_bytes(stored)
    subprocess.run(["zstd", "-q", "-d", str(packed), "-o", str(tmp_path / "object")], check=True)
    assert (tmp_path / "object").read_bytes() == data
