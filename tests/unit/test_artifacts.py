"""Artifacts: compressed, checksummed round trips; corruption and full disks are caught."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import io
import os
import random
import re
import threading
from collections.abc import Iterator

import pytest
import zstandard

from tests.storage.test_local import all_files, fill_disk
from txbackup.engine.artifacts import SetReader, SetWriter, artifact_path, verify_set
from txbackup.engine.manifest import ArtifactRecord, Manifest, PauseWindow, TargetRecord, Timings
from txbackup.errors import IntegrityError, StorageError, TargetError
from txbackup.repository import codec
from txbackup.storage import LocalStorage
from txbackup.storage.base import CHUNK, save_bytes

SET = "20261127T101500Z-3f9a"


@pytest.fixture(autouse=True, params=["inline", "thread"])
def decoding(request, monkeypatch) -> Iterator[str]:
    """Every test both ways: decoded in the reader's thread, and by a decoding thread
    (what objects over ``READ_AHEAD_MIN`` get); no decoding thread outlives its test."""
    if request.param == "thread":
        monkeypatch.setattr(codec, "READ_AHEAD_MIN", 0)
    yield request.param
    gc.collect()
    left = [t for t in threading.enumerate() if t.name == "txbackup-decode"]
    for thread in left:
        thread.join(5)
    assert not [t for t in left if t.is_alive()]


@pytest.fixture
def storage(tmp_path) -> LocalStorage:
    return LocalStorage(str(tmp_path / "repo"))


def mixed_data(size: int) -> bytes:
    """Random blocks between repetitive ones: both hard and easy to compress."""
    rng = random.Random(7)
    out = bytearray()
    while len(out) < size:
        out += rng.randbytes(50_000) + b"account-%d;" % len(out) * 5_000
    return bytes(out[:size])


def write_artifacts(storage, artifacts: dict[str, bytes], target: str = "pg") -> SetWriter:
    writer = SetWriter(storage, SET, target)
    for name, data in artifacts.items():
        with writer.open(name) as out:
            out.write(data)
    return writer


def manifest_of(records: list[ArtifactRecord]) -> Manifest:
    target = TargetRecord(name="pg", kind="postgres", artifacts=records)
    return Manifest(SET, "c", "f", PauseWindow(), [], Timings(), [target])


def reader_of(storage, writer: SetWriter) -> SetReader:
    return SetReader(storage, SET, "pg", writer.records)


def stored_path(storage, name: str) -> str:
    return os.path.join(storage.root, *artifact_path(SET, "pg", name).split("/"))


def damage(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


def test_round_trip_records_sizes_and_checksums(storage):
    data = {"accounts.dump": b"hello " * 1000, "empty": b"", "dir/nested.sql": b"select 1;"}
    writer = write_artifacts(storage, data)

    assert [r.name for r in writer.records] == list(data)
    for record in writer.records:
        assert record.path == f"sets/{SET}/pg/{record.name}.zst"
        assert record.size == len(data[record.name])
        assert record.sha256 == hashlib.sha256(data[record.name]).hexdigest()
        with storage.open_read(record.path) as f:
            stored = f.read()
        assert (record.stored_size, record.stored_sha256) == (
            len(stored),
            hashlib.sha256(stored).hexdigest(),
        )
        assert zstandard.ZstdDecompressor().decompressobj().decompress(stored) == data[record.name]

    reader = reader_of(storage, writer)
    assert reader.names() == list(data)
    for name, expected in data.items():
        with reader.open(name) as f:
            assert f.read() == expected


def test_large_artifact_streams_in_small_writes(storage, tmp_path):
    data = mixed_data(20 << 20)
    writer = SetWriter(storage, SET, "pg")
    with writer.open("big.dump") as out:
        view = memoryview(data)
        step = 777_777
        for start in range(0, len(data), step):
            out.write(view[start : start + step])
    (record,) = writer.records
    assert record.size == len(data)
    assert record.stored_size < len(data)  # the repetitive half compresses

    reader = reader_of(storage, writer)
    digest = hashlib.sha256()
    with reader.open("big.dump") as f:
        while chunk := f.read(123_456):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()

    reader.extract("big.dump", str(tmp_path / "big.out"))
    assert (tmp_path / "big.out").read_bytes() == data
    assert verify_set(storage, manifest_of(writer.records)) == []


def test_add_file(storage, tmp_path):
    source = tmp_path / "snapshot.db"
    source.write_bytes(b"SQLite format 3\x00" + os.urandom(100_000))
    writer = SetWriter(storage, SET, "pg")
    writer.add_file("snapshot.db", str(source))
    reader_of(storage, writer).extract("snapshot.db", str(tmp_path / "copy.db"))
    assert (tmp_path / "copy.db").read_bytes() == source.read_bytes()

    with pytest.raises(TargetError, match=r"target pg: cannot read .*/nope: No such file"):
        writer.add_file("nope", str(tmp_path / "nope"))


def test_target_closing_its_stream_is_fine(storage):
    writer = SetWriter(storage, SET, "pg")
    with writer.open("x") as out:
        out.write(b"data")
        out.close()
    with reader_of(storage, writer).open("x") as f:
        assert f.read() == b"data"


def test_failed_export_leaves_no_artifact_and_the_name_can_be_retried(storage):
    writer = SetWriter(storage, SET, "pg")
    with pytest.raises(RuntimeError, match="pg_dump died"), writer.open("dump") as out:
        out.write(b"x" * (3 << 20))
        raise RuntimeError("pg_dump died")
    assert writer.records == []
    assert all_files(storage.root) == []
    with writer.open("dump") as out:
        out.write(b"second try")
    assert [r.name for r in writer.records] == ["dump"]


def test_an_artifact_name_is_written_once(storage):
    writer = write_artifacts(storage, {"dump": b"1"})
    with pytest.raises(TargetError, match="target pg: artifact 'dump' written twice"):
        writer.open("dump").__enter__()


def test_full_disk_while_exporting_raises_storage_error_and_leaves_no_artifact(
    storage, monkeypatch
):
    os.makedirs(storage.root)
    fill_disk(monkeypatch, storage.root, limit=1 << 20)
    writer = SetWriter(storage, SET, "pg")
    with pytest.raises(StorageError) as err, writer.open("big.dump") as out:
        out.write(os.urandom(8 << 20))
    assert str(err.value) == (
        f"storage {storage.root}: write sets/{SET}/pg/big.dump.zst: no space left on device"
    )
    assert writer.records == []
    assert storage.stat(artifact_path(SET, "pg", "big.dump")) is None
    assert all_files(storage.root) == []


def test_corrupt_byte_is_caught_by_verify_reader_and_extract(storage, tmp_path):
    data = {"good.dump": mixed_data(300_000), "bad.dump": mixed_data(400_000)}
    writer = write_artifacts(storage, data)
    damage(stored_path(storage, "bad.dump"), writer.records[1].stored_size // 2)
    bad = f"artifact sets/{SET}/pg/bad.dump.zst: "

    problems = verify_set(storage, manifest_of(writer.records))
    assert len(problems) == 1
    assert problems[0].startswith(bad)

    reader = reader_of(storage, writer)
    with pytest.raises(IntegrityError, match=bad), reader.open("bad.dump") as f:
        f.read()
    with reader.open("good.dump") as f:
        assert f.read() == data["good.dump"]
    with pytest.raises(IntegrityError, match=bad):
        reader.extract("bad.dump", str(tmp_path / "out"))
    assert os.listdir(tmp_path) == ["repo"]  # nothing extracted, no partial file


def test_corrupt_stored_checksum_with_intact_data_is_caught(storage):
    writer = write_artifacts(storage, {"x.dump": b"abc"})
    stored = stored_path(storage, "x.dump")
    empty_frame = zstandard.ZstdCompressor().compress(b"")
    with open(stored, "ab") as f:  # the data still decodes, the stored bytes differ
        f.write(empty_frame)
    record = writer.records[0]
    record = dataclasses.replace(record, stored_size=record.stored_size + len(empty_frame))
    assert verify_set(storage, manifest_of([record])) == [
        f"artifact sets/{SET}/pg/x.dump.zst: checksum mismatch (corrupt)"
    ]


def test_truncated_artifact_fails_before_any_data(storage):
    writer = write_artifacts(storage, {"db.dump": mixed_data(500_000)})
    record = writer.records[0]
    os.truncate(stored_path(storage, "db.dump"), record.stored_size - 10)
    message = (
        f"artifact sets/{SET}/pg/db.dump.zst: {record.stored_size - 10} bytes stored, "
        f"manifest says {record.stored_size} (truncated or corrupt)"
    )
    assert verify_set(storage, manifest_of(writer.records)) == [message]
    with pytest.raises(IntegrityError) as err:
        reader_of(storage, writer).open("db.dump").__enter__()
    assert str(err.value) == message


def test_missing_artifact(storage):
    writer = write_artifacts(storage, {"db.dump": b"data"})
    os.unlink(stored_path(storage, "db.dump"))
    (problem,) = verify_set(storage, manifest_of(writer.records))
    assert problem == f"artifact sets/{SET}/pg/db.dump.zst: missing from storage {storage.root}"


def test_unknown_artifact_name(storage):
    writer = write_artifacts(storage, {"dump": b"data"})
    with pytest.raises(StorageError, match=f"set {SET}: target pg has no artifact 'other'"):
        reader_of(storage, writer).open("other")


def test_verify_progress_counts_stored_bytes(storage):
    writer = write_artifacts(storage, {"a.dump": mixed_data(3 << 20), "b.dump": b"small"})
    seen: list[tuple[int, int]] = []
    problems = verify_set(storage, manifest_of(writer.records), lambda *step: seen.append(step))
    assert problems == []
    total = sum(r.stored_size for r in writer.records)
    assert seen[-1] == (total, total)
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert len(seen) > 2


# -- decompression stops at the recorded sizes --------------------------------------------------


def plant(storage, name: str, stored: bytes, size: int, sha256: str) -> ArtifactRecord:
    """Store ``stored`` as artifact ``name`` with a record claiming ``size``/``sha256``."""
    path = artifact_path(SET, "pg", name)
    save_bytes(storage, path, stored)
    return ArtifactRecord(name, path, size, sha256, len(stored), hashlib.sha256(stored).hexdigest())


def test_a_zstd_bomb_stops_at_the_recorded_size(storage, tmp_path):
    # 256 MiB of zeros compress to ~8 KB: without the bound, extract writes all of it
    bomb = io.BytesIO()
    with zstandard.ZstdCompressor(level=1).stream_writer(bomb, closefd=False) as out:
        zeros = bytes(1 << 24)
        for _ in range(16):
            out.write(zeros)
    record = plant(storage, "bomb.dump", bomb.getvalue(), 1000, "ab" * 32)
    produced = 0
    message = f"artifact sets/{SET}/pg/bomb.dump.zst: decompresses to more than the recorded 1000 bytes"
    assert verify_set(storage, manifest_of([record])) == [message + " (corrupt)"]
    reader = SetReader(storage, SET, "pg", [record])
    with pytest.raises(IntegrityError, match=re.escape(message)):
        reader.extract("bomb.dump", str(tmp_path / "out"))
    with pytest.raises(IntegrityError, match=re.escape(message)), reader.open("bomb.dump") as f:
        while chunk := f.read(1 << 20):
            produced += len(chunk)
    assert produced <= 1000 + (1 << 20)
    assert sorted(os.listdir(tmp_path)) == ["repo"]


def test_a_stored_stream_longer_than_recorded_is_refused(storage, monkeypatch):
    writer = write_artifacts(storage, {"x.dump": b"abc" * 1000})
    (record,) = writer.records
    read = []

    class Growing(io.BytesIO):
        def read(self, size=-1):
            data = super().read(size)
            read.append(len(data))
            return data

    # a storage whose file grows between stat and read (or lies about it)
    def open_read(name, offset=0, length=None):
        with open(stored_path(storage, "x.dump"), "rb") as f:
            return Growing(f.read() + os.urandom(5 << 20))

    monkeypatch.setattr(storage, "open_read", open_read)
    problems = verify_set(storage, manifest_of([record]))
    assert problems == [
        f"artifact sets/{SET}/pg/x.dump.zst: longer than the recorded {record.stored_size} bytes (corrupt)"
    ]
    assert sum(read) == record.stored_size + 1


def test_extract_writes_a_private_file_and_never_through_a_link(storage, tmp_path):
    writer = write_artifacts(storage, {"x.dump": b"secret rows"})
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "x.txbackup-partial")  # planted where the partial file goes
    old = os.umask(0)
    try:
        reader_of(storage, writer).extract("x.dump", str(dest / "x"))
    finally:
        os.umask(old)
    assert outside.read_bytes() == b"precious"
    assert (dest / "x").read_bytes() == b"secret rows"
    assert oct((dest / "x").stat().st_mode & 0o777) == oct(0o600)
    assert sorted(os.listdir(dest)) == ["x"]


# -- what restore writes is private; in place keeps the original mode ----------------------------


@pytest.fixture(params=[0o000, 0o022])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> str:
    return oct(os.stat(path).st_mode & 0o7777)


def sqlite_set(storage, tmp_path) -> SetReader:
    import sqlite3

    db = tmp_path / "source.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    writer = SetWriter(storage, SET, "cache")
    writer.add_file("app.sqlite", str(db))
    return SetReader(storage, SET, "cache", writer.records)


def test_sqlite_restore_to_a_new_file_is_private(storage, tmp_path, umask):
    from txbackup.targets.sqlite import target as sqlite_target

    reader = sqlite_set(storage, tmp_path)
    dest = tmp_path / "new" / "folder" / "app.db"
    sqlite_target.from_config("cache", {"path": str(tmp_path / "app.db")}).restore(
        reader, {"path": str(dest)}, force=False
    )
    assert mode(dest) == oct(0o600)
    assert mode(dest.parent) == oct(0o700) and mode(dest.parent.parent) == oct(0o700)


def test_sqlite_restore_in_place_keeps_the_file_mode(storage, tmp_path, umask):
    from txbackup.targets.sqlite import target as sqlite_target

    reader = sqlite_set(storage, tmp_path)
    live = tmp_path / "app.db"
    live.write_bytes(b"old")
    os.chmod(live, 0o640)
    sqlite_target.from_config("cache", {"path": str(live)}).restore(reader, None, force=True)
    assert mode(live) == oct(0o640)
    assert live.read_bytes().startswith(b"SQLite format 3")


def test_postgres_staging_is_private(storage, tmp_path, umask):
    from txbackup.targets.postgres.directory import stage_directory

    writer = write_artifacts(storage, {"bank.dir/toc.dat": b"toc", "bank.dir/3456.dat": b"rows"})
    folder = tmp_path / "staging"
    folder.mkdir(mode=0o777)
    os.chmod(folder, 0o777)
    stage_directory(reader_of(storage, writer), ["bank.dir/toc.dat", "bank.dir/3456.dat"], str(folder), "pg")
    assert mode(folder) == oct(0o700)
    assert sorted(os.listdir(folder)) == ["3456.dat", "toc.dat"]
    assert {mode(folder / f) for f in os.listdir(folder)} == {oct(0o600)}


def test_cassandra_agent_staging_is_private(tmp_path, umask):
    from txbackup.agent import blobs
    from txbackup.agent.node import Node, NodeConfig

    storage = LocalStorage(str(tmp_path / "repo"))
    store = blobs.store_prefix("c")
    source = tmp_path / "nb-1-big-Data.db"
    source.write_bytes(b"sstable")
    stored = blobs.put_file(storage, store, str(source))
    node = Node(NodeConfig(nodetool=["false"], data_dirs=[tmp_path], staging_dir=tmp_path / "st"), storage)
    files = [{"keyspace": "ks", "table": "t", "name": source.name, "sha256": stored.sha256,
              "size": stored.size, "node": "10.0.0.1"}]  # fmt: skip
    node.prepare(SET, store, files, lambda _: None)
    staged = tmp_path / "st" / SET / "10.0.0.1" / "ks" / "t"
    assert (staged / source.name).read_bytes() == b"sstable"
    assert mode(staged / source.name) == oct(0o600)
    for folder in [tmp_path / "st", tmp_path / "st" / SET, staged.parent.parent, staged.parent, staged]:
        assert mode(folder) == oct(0o700), folder


@pytest.mark.parametrize("fault", ["zstd checksum", "recorded sha256", "recorded size"])
def test_the_last_bytes_come_only_once_verified(storage, fault):
    """A restore reads each artifact once, so the read completing it must check first: a
    reader never holds the whole of an artifact that does not match its record."""
    # (a restore checks one SHA-256, the one over fewer bytes: see
    # test_a_restore_checks_the_digest_over_fewer_bytes_...)
    data = mixed_data(3 << 20)
    writer = write_artifacts(storage, {"x.dump": data})
    (record,) = writer.records
    stored = stored_path(storage, "x.dump")
    if fault == "zstd checksum":
        damage(stored, record.stored_size - 2)  # the data all decodes right; its check fails
    elif fault == "recorded sha256":  # both: a restore checks one of them
        record = dataclasses.replace(record, sha256="0" * 64, stored_sha256="0" * 64)
    else:
        record = dataclasses.replace(record, size=record.size + 1)
    got = 0
    reader = SetReader(storage, SET, "pg", [record])
    bad = f"artifact sets/{SET}/pg/x.dump.zst: "
    with pytest.raises(IntegrityError, match=bad), reader.open("x.dump") as f:
        while chunk := f.read(64 << 10):
            got += len(chunk)
    assert 0 < got < len(data)


def test_a_reader_failing_on_corrupt_data_is_told_the_artifact(storage):
    """A consumer failing mid-artifact (a restore tool choking on its input) is
    blamed on the artifact when the rest of it does not verify."""
    data = mixed_data(1 << 20)
    writer = write_artifacts(storage, {"x.dump": data})
    record = dataclasses.replace(writer.records[0], sha256="0" * 64, stored_sha256="0" * 64)
    reader = SetReader(storage, SET, "pg", [record])
    with pytest.raises(IntegrityError, match="checksum mismatch") as err, reader.open("x.dump") as f:
        f.read(1000)
        raise TargetError("pg_restore failed: invalid input syntax")
    assert "\n" not in str(err.value)
    # a good artifact: the consumer's own error stands
    with pytest.raises(TargetError, match="its own fault"), reader_of(storage, writer).open("x.dump") as f:
        f.read(1000)
        raise TargetError("pg_restore failed: its own fault")


def test_a_restore_checks_the_digest_over_fewer_bytes_and_still_catches_a_changed_byte(storage):
    from txbackup.repository.codec import Expected

    compressible = b"account-1;" * 100_000
    writer = write_artifacts(storage, {"db.dump": compressible})
    record = writer.records[0]
    assert record.stored_size < record.size
    full = Expected(record.size, record.sha256, record.stored_size, record.stored_sha256)
    assert full.cheapest() == Expected(record.size, None, record.stored_size, record.stored_sha256)
    bigger = Expected(10, "a" * 64, 20, "b" * 64)  # incompressible: the data's digest
    assert bigger.cheapest() == Expected(10, "a" * 64, 20, None)
    with pytest.raises(ValueError, match="at least one SHA-256"):
        Expected(10, None, 20, None)
    # a manifest whose data digest lies is not what a restore reads (the stored bytes are
    # the recorded ones); verify --read-data, checking both, names it
    lying = dataclasses.replace(record, sha256="0" * 64)
    with SetReader(storage, SET, "pg", [lying]).open("db.dump") as f:
        assert f.read() == compressible
    assert verify_set(storage, manifest_of([lying])) == [
        f"artifact sets/{SET}/pg/db.dump.zst: checksum mismatch (corrupt)"
    ]
    # a changed stored byte that still decodes is caught by the stored digest alone
    damage(stored_path(storage, "db.dump"), record.stored_size - 5)  # inside the frame checksum
    reader = reader_of(storage, writer)
    with pytest.raises(IntegrityError, match=r"db\.dump\.zst"), reader.open("db.dump") as f:
        f.read()


# -- a durable extract is on disk before it appears; its writeback starts as it goes ----------


def recorded_syncs(monkeypatch) -> tuple[list[str], list[tuple[str, int, int]]]:
    """os.fsync and os.posix_fadvise recorded (by the path their descriptor names), then done."""
    synced: list[str] = []
    advised: list[tuple[str, int, int]] = []
    fsync, fadvise = os.fsync, getattr(os, "posix_fadvise", None)

    def named(fd: int) -> str:
        return os.readlink(f"/proc/self/fd/{fd}")

    def record_fsync(fd: int) -> None:
        synced.append(named(fd))
        fsync(fd)

    def record_fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_DONTNEED
        advised.append((named(fd), offset, length))
        if fadvise is not None:
            fadvise(fd, offset, length, advice)

    monkeypatch.setattr(os, "fsync", record_fsync)
    monkeypatch.setattr(os, "posix_fadvise", record_fadvise, raising=False)
    monkeypatch.setattr(os, "POSIX_FADV_DONTNEED", getattr(os, "POSIX_FADV_DONTNEED", 4), raising=False)
    return synced, advised


@pytest.mark.parametrize("durable", [True, False])
def test_a_durable_extract_is_synced_before_it_appears(storage, tmp_path, monkeypatch, durable):
    from txbackup import safepaths

    data = random.Random(5).randbytes(5 * CHUNK + 123)
    writer = write_artifacts(storage, {"x.dump": data})
    reader = reader_of(storage, writer)
    monkeypatch.setattr(safepaths, "WRITEBACK_STEP", 2 * CHUNK)
    dest = tmp_path / "x"
    partial = str(dest) + ".txbackup-partial"
    synced, advised = recorded_syncs(monkeypatch)
    reader.extract("x.dump", str(dest), durable=durable)
    assert dest.read_bytes() == data
    if not durable:
        assert partial not in synced and advised == []
        return
    assert partial in synced  # its data, under the name it had before the rename
    # writeback asked for every step of what was written, in order, without gaps
    assert [a[0] for a in advised] == [partial] * len(advised) and len(advised) == 2
    assert [(a[1], a[2]) for a in advised] == [(0, 2 * CHUNK), (2 * CHUNK, 2 * CHUNK)]


def test_writeback_steps_and_platforms_without_it(monkeypatch, tmp_path):
    from txbackup.safepaths import Writeback

    with open(tmp_path / "f", "wb") as f:
        synced, advised = recorded_syncs(monkeypatch)
        back = Writeback(f.fileno(), step=10)
        for count in (4, 4, 4, 25, 9, 1):
            back.wrote(count)
        assert [(a[1], a[2]) for a in advised] == [(0, 12), (12, 25), (37, 10)]
        monkeypatch.delattr(os, "posix_fadvise")
        Writeback(f.fileno(), step=1).wrote(5)  # nothing to call: no error either
        assert synced == []


def test_local_storage_writes_back_as_it_goes_and_syncs_at_the_end(storage, monkeypatch):
    from txbackup import safepaths

    monkeypatch.setattr(safepaths, "WRITEBACK_STEP", 3 << 20)
    synced, advised = recorded_syncs(monkeypatch)
    with storage.open_write("sets/a/big") as out:
        for _ in range(7):
            out.write(b"x" * (1 << 20))
        out.commit()
    assert [(a[1], a[2]) for a in advised] == [(0, 3 << 20), (3 << 20, 3 << 20)]
    temporary = advised[0][0]
    assert {a[0] for a in advised} == {temporary} and temporary in synced  # before the rename
    assert storage.stat("sets/a/big").size == 7 << 20
