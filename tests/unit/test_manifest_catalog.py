"""Manifests (written last, validated on read) and the catalog rebuilt from them."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sqlite3
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from txbackup.catalog import (
    COMPLETE,
    FAILED,
    RUNNING,
    Catalog,
    CatalogCorrupt,
    delete_set,
    move_aside,
    transaction,
)
from txbackup.clock import iso_ms
from txbackup.engine.manifest import (
    ArtifactRecord,
    Manifest,
    PauseWindow,
    TargetRecord,
    Timings,
    list_manifests,
    list_set_ids,
    manifest_path,
    new_set_id,
    read_manifest,
    write_manifest,
)
from txbackup.errors import AlreadyExistsError, IntegrityError, StorageError, UsageError
from txbackup.storage import LocalStorage
from txbackup.storage.base import list_names, save_bytes

NOW = datetime(2026, 11, 27, 10, 15, 0, 123456, tzinfo=UTC)


@pytest.fixture
def storage(tmp_path) -> LocalStorage:
    return LocalStorage(str(tmp_path / "repo"))


@pytest.fixture
def catalog(tmp_path) -> Catalog:
    return Catalog(str(tmp_path / "index" / "catalog.db"))


def make_manifest(set_id: str) -> Manifest:
    artifact = ArtifactRecord("a.dump", f"sets/{set_id}/pg/a.dump.zst", 10, "ab" * 32, 8, "cd" * 32)
    return Manifest(
        set_id=set_id,
        created_at="2026-11-27T10:15:00.123Z",
        finished_at="2026-11-27T10:16:00.000Z",
        pause=PauseWindow("2026-11-27T10:15:01.000Z", "2026-11-27T10:15:01.200Z", "2026-11-27T10:15:01.100Z"),
        applications=["10.0.0.1:50051"],
        timings=Timings(drain_ms=5, capture_ms=40, export_ms=60_000, pause_ms=200),
        targets=[
            TargetRecord("pg", "postgres", {"host": "db"}, {"lsn": "0/16B3748"}, [artifact]),
            TargetRecord("cache", "sqlite", {}, {}, [], {"note": "x"}),
        ],
    )


def save_raw(storage, set_id: str, data: object) -> None:
    save_bytes(storage, manifest_path(set_id), json.dumps(data).encode())


def test_set_ids_and_times():
    set_id = new_set_id(NOW)
    assert re.fullmatch(r"20261127T101500Z-[0-9a-f]{4}", set_id)
    assert len({new_set_id(NOW) for _ in range(50)}) > 40  # a random suffix within a second
    assert new_set_id(NOW + timedelta(seconds=1)) > set_id
    assert iso_ms(NOW) == "2026-11-27T10:15:00.123Z"
    tokyo = timezone(timedelta(hours=9))
    assert iso_ms(datetime(2026, 11, 27, 19, 15, tzinfo=tokyo)) == "2026-11-27T10:15:00.000Z"
    assert new_set_id(datetime(2026, 11, 27, 10, 15)).startswith("20261127T101500Z-")  # naive = UTC


def test_manifest_round_trip_and_format(storage):
    manifest = make_manifest("s1")
    assert write_manifest(storage, manifest) == "sets/s1/manifest.json"
    assert read_manifest(storage, "s1") == manifest
    with storage.open_read("sets/s1/manifest.json") as f:
        data = json.load(f)
    assert list(data)[:3] == ["format_version", "set_id", "status"]
    assert data["format_version"] == 1 and data["status"] == "complete"
    assert data["pause"]["midpoint"] == "2026-11-27T10:15:01.100Z"
    assert data["targets"][0]["artifacts"][0]["stored_sha256"] == "cd" * 32
    assert manifest.restore_point == "2026-11-27T10:15:01.100Z"
    assert manifest.target("cache").kind == "sqlite"
    assert [a.name for a in manifest.artifacts()] == ["a.dump"]
    with pytest.raises(UsageError, match="set s1: no target named 'nope'"):
        manifest.target("nope")


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda d: d.update(format_version=2), "unsupported format_version 2"),
        (lambda d: d.update(status="running"), "status 'running' is not 'complete'"),
        (lambda d: d.pop("finished_at"), "field 'finished_at' must be str, found NoneType"),
        (lambda d: d["timings"].update(pause_ms="200"), "field 'pause_ms' must be int, found str"),
        (lambda d: d["targets"][0]["artifacts"][0].update(size=True), "field 'size' must be int"),
        (lambda d: d.update(set_id="other"), "records set id 'other'"),
    ],
)
def test_bad_manifests_are_integrity_errors_naming_the_file(storage, mutate, problem):
    data = make_manifest("s1").to_dict()
    mutate(data)
    save_raw(storage, "s1", data)
    with pytest.raises(IntegrityError, match=re.escape(f"manifest sets/s1/manifest.json: {problem}")):
        read_manifest(storage, "s1")


def test_unparsable_manifest(storage):
    save_bytes(storage, manifest_path("s1"), b'{"format_version": 1, ')
    with pytest.raises(IntegrityError, match=r"^manifest sets/s1/manifest.json: Expecting"):
        read_manifest(storage, "s1")


def test_missing_manifest_and_bad_set_id(storage):
    with pytest.raises(StorageError, match=r"read sets/s9/manifest\.json: not found$"):
        read_manifest(storage, "s9")
    with pytest.raises(UsageError, match=r"set id '\.\./x': not a backup set id"):
        read_manifest(storage, "../x")


def test_only_sets_with_a_manifest_exist(storage):
    write_manifest(storage, make_manifest("s2"))
    write_manifest(storage, make_manifest("s1"))
    save_bytes(storage, "sets/s3/pg/a.dump.zst", b"orphan artifacts, no manifest")
    save_bytes(storage, "sets/s1/pg/manifest.json", b"an artifact named like a manifest")
    assert list_set_ids(storage) == ["s1", "s2"]
    assert [m.set_id for m in list_manifests(storage)] == ["s1", "s2"]


def test_catalog_lifecycle(catalog):
    catalog.begin("s1", NOW, ["pg", "cache"])
    catalog.begin("s2", "2026-11-27T11:00:00.000Z", ["pg"])
    row = catalog.get("s1")
    assert row is not None
    assert (row.status, row.created_at, row.targets) == (RUNNING, "2026-11-27T10:15:00.123Z", ["pg", "cache"])
    assert row.finished_at is None and row.manifest_path is None

    catalog.fail("s2", "target pg: connection refused")
    catalog.complete(make_manifest("s1"))
    catalog.fail("s1", "late failure")  # a complete set stays complete
    rows = {r.set_id: r for r in catalog.list()}
    assert rows["s2"].status == FAILED and rows["s2"].error == "target pg: connection refused"
    done = rows["s1"]
    assert (done.status, done.error, done.manifest_path) == (COMPLETE, None, "sets/s1/manifest.json")
    assert done.restore_point == "2026-11-27T10:15:01.100Z"
    assert done.finished_at == "2026-11-27T10:16:00.000Z"

    catalog.delete("s2")
    assert [r.set_id for r in catalog.list()] == ["s1"]
    assert catalog.get("s2") is None


def test_a_killed_backup_never_reads_complete(tmp_path):
    path = str(tmp_path / "catalog.db")
    Catalog(path).begin("s1", NOW, ["pg"])  # and the process dies
    reopened = Catalog(path)
    assert [(r.set_id, r.status) for r in reopened.list()] == [("s1", RUNNING)]


def test_catalog_errors_name_the_file(catalog):
    catalog.begin("s1", NOW, [])
    with pytest.raises(StorageError, match=r"catalog .*catalog.db: UNIQUE constraint failed"):
        catalog.begin("s1", NOW, [])


def test_rebuild_from_storage(storage, catalog):
    write_manifest(storage, make_manifest("s1"))
    write_manifest(storage, make_manifest("s2"))
    save_raw(storage, "s4", {"format_version": 99})
    catalog.begin("s2", NOW, ["pg"])  # its manifest exists: it completed
    catalog.begin("s3", NOW, ["pg"])  # still running, or killed: kept as it is
    catalog.begin("s5", NOW, ["pg"])
    catalog.fail("s5", "boom")
    catalog.complete(make_manifest("s6"))  # its manifest is gone: the set no longer exists

    problems = catalog.rebuild(storage)

    assert problems == ["manifest sets/s4/manifest.json: unsupported format_version 99 (expected 1)"]
    statuses = {r.set_id: r.status for r in catalog.list()}
    assert statuses == {"s1": COMPLETE, "s2": COMPLETE, "s3": RUNNING, "s5": FAILED}


def test_rebuild_into_an_empty_catalog(storage, tmp_path):
    write_manifest(storage, make_manifest("s1"))
    fresh = Catalog(str(tmp_path / "new.db"))
    assert fresh.rebuild(storage) == []
    (row,) = fresh.list()
    assert (row.set_id, row.status, row.targets) == ("s1", COMPLETE, ["pg", "cache"])


class RecordingStorage(LocalStorage):
    """Records removals; can crash at a chosen one (fault injection)."""

    def __init__(self, root: str, crash_on: str = "") -> None:
        super().__init__(root)
        self.calls: list[str] = []
        self.crash_on = crash_on

    def remove(self, name: str) -> None:
        self._record("remove", name)
        super().remove(name)

    def remove_prefix(self, prefix: str) -> None:
        self._record("remove_prefix", prefix)
        super().remove_prefix(prefix)

    def _record(self, op: str, name: str) -> None:
        self.calls.append(f"{op} {name}")
        if op == self.crash_on:
            raise StorageError(f"crash before {op} {name}")


def test_delete_set_removes_the_manifest_first(tmp_path, catalog):
    storage = RecordingStorage(str(tmp_path / "repo"))
    write_manifest(storage, make_manifest("s1"))
    save_bytes(storage, "sets/s1/pg/a.dump.zst", b"data")
    catalog.complete(make_manifest("s1"))

    delete_set(storage, catalog, "s1")

    assert storage.calls == ["remove sets/s1/manifest.json", "remove_prefix sets/s1/"]
    assert list_names(storage, "") == []
    assert catalog.list() == []


def test_delete_set_crashing_midway_leaves_no_half_complete_set(tmp_path, catalog):
    storage = RecordingStorage(str(tmp_path / "repo"), crash_on="remove_prefix")
    write_manifest(storage, make_manifest("s1"))
    save_bytes(storage, "sets/s1/pg/a.dump.zst", b"data")
    catalog.complete(make_manifest("s1"))

    with pytest.raises(StorageError, match="crash"):
        delete_set(storage, catalog, "s1")

    assert list_set_ids(storage) == []  # artifacts remain, but no set
    catalog.rebuild(storage)
    assert catalog.list() == []


# -- a manifest is untrusted input ---------------------------------------------------------------


def _artifact(d, **changes):
    d["targets"][0]["artifacts"][0].update(changes)


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda d: d.update(format_version="1"), "unsupported format_version '1'"),
        (lambda d: d.update(format_version=1.0), "unsupported format_version 1.0"),
        (lambda d: d.update(format_version=True), "unsupported format_version True"),
        (lambda d: d.update(extra=1), "manifest: unknown field 'extra'"),
        (lambda d: d["pause"].update(when="now"), "pause: unknown field 'when'"),
        (lambda d: d["pause"].update(midpoint="yesterday"), "field 'midpoint' must be an ISO-8601 time"),
        (lambda d: d["timings"].update(pause_ms=-1), "field 'pause_ms' must be a byte count, found -1"),
        (lambda d: _artifact(d, size=-5), "field 'size' must be a byte count, found -5"),
        (lambda d: _artifact(d, stored_size=1 << 64), "field 'stored_size' must be a byte count"),
        (lambda d: _artifact(d, size=1.5), "field 'size' must be int, found float"),
        (lambda d: _artifact(d, sha256="AB" * 32), "field 'sha256' must be 64 lowercase hex digits"),
        (lambda d: _artifact(d, stored_sha256="ab"), "field 'stored_sha256' must be 64 lowercase hex"),
        (lambda d: _artifact(d, name=7), "field 'name' must be str, found int"),
        (
            lambda d: _artifact(d, name="a.dir/../../../etc/cron.d/x", path="sets/s1/pg/a.dump.zst"),
            "target 'pg' (postgres): artifact 'a.dir/../../../etc/cron.d/x' has an empty, '.' or '..'",
        ),
        (
            lambda d: _artifact(d, name="a.dir//etc/passwd"),
            "target 'pg' (postgres): artifact 'a.dir//etc/passwd' has an empty, '.' or '..' segment",
        ),
        (lambda d: _artifact(d, name="/etc/passwd"), "artifact '/etc/passwd' is an absolute path"),
        (lambda d: _artifact(d, name="a\\b.dump"), "artifact 'a\\\\b.dump' holds a backslash"),
        (lambda d: _artifact(d, name="a\x00.dump"), "artifact 'a\\x00.dump' holds a control character"),
        (
            lambda d: _artifact(d, name="a.dir/evil.sh"),
            "target 'pg' (postgres): artifact 'a.dir/evil.sh' is not a postgres artifact (expected "
            "<database>.dump or <database>.dir/<pg_dump directory-format file>)",
        ),
        (
            lambda d: _artifact(d, path="sets/s1/cache/a.dump.zst"),
            "artifact 'a.dump' is stored as 'sets/s1/cache/a.dump.zst', not 'sets/s1/pg/a.dump.zst'",
        ),
        (
            lambda d: d["targets"][0]["artifacts"].append(dict(d["targets"][0]["artifacts"][0])),
            "target 'pg' (postgres): artifact 'a.dump' appears twice",
        ),
        (lambda d: d["targets"].append(dict(d["targets"][0])), "target 'pg' appears twice"),
        (lambda d: d["targets"][1].update(name="../evil"), "target name '../evil' has an empty, '.' or '..'"),
        (lambda d: d["targets"][1].update(kind="oracle"), "target 'cache': unknown kind 'oracle' (known: "),
        (lambda d: d["targets"][1].update(name=["x"]), "field 'name' must be str, found list"),
        (lambda d: d.update(applications=[1]), "field 'applications' must be a list of strings"),
    ],
)
def test_tampered_manifests_are_refused_in_one_line(storage, mutate, problem):
    data = make_manifest("s1").to_dict()
    mutate(data)
    save_raw(storage, "s1", data)
    with pytest.raises(IntegrityError) as err:
        read_manifest(storage, "s1")
    assert str(err.value).startswith("manifest sets/s1/manifest.json: ")
    assert problem in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b'{"format_version": 1, "format_version": 1}', "field 'format_version' appears twice"),
        (b'{"format_version": NaN}', "NaN is not a JSON value"),
        (b"[" * 40 + b"]" * 40, "nested deeper than 32 levels"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper than 32 levels"),
        (b'{"a": ' * 50 + b"1" + b"}" * 50, "nested deeper than 32 levels"),
        (b'{"format_version": 1' + b"0" * 5000 + b"}", "Exceeds the limit"),
        (b"\xff\xfe{", "manifest sets/s1/manifest.json: "),
        (b"[]", "expected an object, found list"),
    ],
)
def test_malformed_json_is_refused_in_one_line(storage, raw, problem):
    save_bytes(storage, manifest_path("s1"), raw)
    with pytest.raises(IntegrityError) as err:
        read_manifest(storage, "s1")
    assert problem in str(err.value)
    assert str(err.value).startswith("manifest sets/s1/manifest.json: ")
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


def test_an_oversized_manifest_is_refused_before_it_is_read(storage, monkeypatch):
    import txbackup.engine.manifest as manifest_module

    write_manifest(storage, make_manifest("s1"))
    size = storage.stat(manifest_path("s1")).size
    monkeypatch.setattr(manifest_module, "MAX_MANIFEST_BYTES", size - 1)
    monkeypatch.setattr(storage, "open_read", lambda *args: pytest.fail("read anyway"))
    with pytest.raises(IntegrityError, match=rf"manifest sets/s1/manifest.json: {size} bytes, more than"):
        read_manifest(storage, "s1")


def test_a_manifest_is_never_overwritten(storage):
    """The manifest's conditional create is the set's commit: a second commit of the
    same set fails and the first manifest stays as it was."""
    first = make_manifest("s1")
    write_manifest(storage, first)
    second = dataclasses.replace(first, finished_at="2030-01-01T00:00:00.000Z")
    with pytest.raises(AlreadyExistsError, match=r"create sets/s1/manifest\.json: already exists$"):
        write_manifest(storage, second)
    assert read_manifest(storage, "s1") == first


def test_a_manifest_that_could_not_be_read_back_is_not_written(storage):
    bad = make_manifest("s1")
    bad.targets[0].artifacts[0] = ArtifactRecord(
        "../a.dump", "sets/s1/pg/a.dump.zst", 1, "ab" * 32, 1, "cd" * 32
    )
    with pytest.raises(IntegrityError, match=r"artifact '\.\./a\.dump' has an empty"):
        write_manifest(storage, bad)
    assert list_names(storage, "") == []


def test_every_kind_declares_its_artifacts_and_targets_write_only_those():
    from txbackup.config import TARGET_KINDS
    from txbackup.targets.layouts import LAYOUTS

    assert set(LAYOUTS) == set(TARGET_KINDS)
    written = {
        "sqlite": ["app.sqlite", "my cache.sqlite"],
        "postgres": [
            *("bank.dump", "bank.dir/toc.dat", "bank.dir/3456.dat", "bank.dir/blob_16385.dat"),
            *("bank.dir/blobs.toc", "bank.dir/blobs_3457.toc", "bank.dir/3456.dat.gz"),
        ],
        "mysql": ["bank.sql"],
        "cassandra": ["nodes/127.0.0.1.json", "nodes/::1.json", "schema.json", "schema.cql"],
        "dynamodb": ["tables.json"],
        "cosmos": ["account.json"],
        "rds": ["rds.json"],
        "azure-postgres": ["server.json"],
    }
    for kind, names in written.items():
        assert all(LAYOUTS[kind].fits(n) for n in names), kind
        others = [n for k, ns in written.items() if k != kind for n in ns]
        assert not any(LAYOUTS[kind].fits(n) for n in others), kind
        assert not any(LAYOUTS[kind].fits(n) for n in ["../x", "x/../y.sql", "nodes/a/b.json", ""]), kind


def test_catalog_is_private_whatever_the_umask(tmp_path):
    path = tmp_path / "index" / "catalog.db"
    old = os.umask(0)
    try:
        catalog = Catalog(str(path))
        with transaction(catalog.path) as db:  # -wal and -shm exist while a connection is open
            db.execute("INSERT INTO sets (set_id, status, created_at) VALUES ('s1', 'running', 'x')")
            modes = [stat.S_IMODE(Path(f"{path}{suffix}").stat().st_mode) for suffix in ("", "-wal", "-shm")]
    finally:
        os.umask(old)
    assert modes == [0o600, 0o600, 0o600]
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_an_older_open_catalog_is_tightened(tmp_path):
    path = tmp_path / "catalog.db"
    Catalog(str(path))
    path.chmod(0o644)
    Catalog(str(path)).list()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "content",
    [b"garbage, not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000],
    ids=["garbage", "damaged-header"],
)
def test_a_corrupt_catalog_is_one_line_suggesting_rebuild(tmp_path, content):
    path = tmp_path / "catalog.db"
    path.write_bytes(content)
    with pytest.raises(CatalogCorrupt) as info:
        Catalog(str(path)).list()
    message = str(info.value)
    assert message.startswith(f"catalog {path}: ") and "txbackup list --rebuild" in message
    assert "\n" not in message


def test_a_database_that_is_not_a_catalog_is_refused(tmp_path):
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE sets (id INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(CatalogCorrupt, match=r"not a txbackup catalog \(table sets has no set_id\)"):
        Catalog(str(path))


def test_move_aside_then_rebuild(storage, tmp_path):
    path = tmp_path / "catalog.db"
    path.write_bytes(b"garbage" * 1000)
    write_manifest(storage, make_manifest("s1"))
    aside = move_aside(str(path))
    assert re.fullmatch(re.escape(str(path)) + r"\.corrupt-\d{8}T\d{6}Z", aside)
    assert Path(aside).read_bytes() == b"garbage" * 1000 and not path.exists()
    fresh = Catalog(str(path))
    assert fresh.rebuild(storage) == [] and [r.set_id for r in fresh.list()] == ["s1"]


@pytest.mark.parametrize(
    ("column", "value", "problem"),
    [
        ("targets_json", "{not json", "targets_json is not a JSON list"),
        ("targets_json", '{"a": 1}', "targets_json is not a JSON list"),
        ("targets_json", "[1, 2]", "targets_json is not a JSON list"),
        ("status", "exploded", "unknown status 'exploded'"),
        ("status", 7, "unknown status '7'"),  # SQLite stores it as text
        ("created_at", b"\x01", "created_at is not text"),
        ("error", b"\x00blob", "error is not text"),
        ("set_id", "../evil", "not a backup set id"),
    ],
)
def test_a_malformed_row_is_skipped_with_a_warning(catalog, column, value, problem):
    catalog.begin("good", NOW, ["pg"])
    catalog.begin("bad", NOW, ["pg"])
    db = sqlite3.connect(catalog.path)
    db.execute(f"UPDATE sets SET {column} = ? WHERE set_id = 'bad'", (value,))
    db.commit()
    db.close()
    assert [r.set_id for r in catalog.list()] == ["good"]
    [warning] = catalog.problems
    assert warning.startswith(f"catalog {catalog.path}: skipped set ") and problem in warning
    assert "\n" not in warning
    bad_id = "bad" if column != "set_id" else "../evil"
    if column != "set_id":
        with pytest.raises(StorageError, match=f"set 'bad': malformed row: .*{re.escape(problem)}"):
            catalog.get(bad_id)


def test_running_rows_record_who_runs_them(catalog):
    run = {"owner": {"user": "u", "host": "h", "pid": 1}, "storage": "/s", "lock_id": "x"}
    catalog.begin("s1", NOW, ["pg"], run)
    catalog.warn("s1", "pause window not verified on a:1")
    row = catalog.get("s1")
    assert row is not None and row.run == run and row.warning == "pause window not verified on a:1"


def test_an_older_catalog_gains_the_new_columns(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE sets (set_id TEXT PRIMARY KEY, status TEXT NOT NULL, created_at TEXT NOT NULL,"
        " finished_at TEXT, targets_json TEXT NOT NULL DEFAULT '[]', error TEXT, manifest_path TEXT,"
        " restore_point TEXT)"
    )
    db.execute("INSERT INTO sets (set_id, status, created_at) VALUES ('s1', 'running', 'x')")
    db.commit()
    db.close()
    catalog = Catalog(str(path))
    [row] = catalog.list()
    assert (row.set_id, row.run, row.warning) == ("s1", None, None)


def test_a_backup_never_reuses_a_set_id_taken_in_the_same_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ids are the second plus 16 random bits: two sets of one second collided once in CI
    from types import SimpleNamespace

    from txbackup.engine import backup as engine_backup

    catalog = Catalog(str(tmp_path / "catalog.db"))
    storage = LocalStorage(str(tmp_path / "store"))
    now = datetime(2026, 11, 28, 10, 15, tzinfo=UTC)
    catalog.begin("20261128T101500Z-aaaa", now, ["t"])  # in the catalog
    save_bytes(storage, "sets/20261128T101500Z-bbbb/t/x.zst", b"x")  # in the storage only
    drawn = iter(["20261128T101500Z-aaaa", "20261128T101500Z-bbbb", "20261128T101500Z-cccc"])
    monkeypatch.setattr(engine_backup, "new_set_id", lambda _: next(drawn))
    plan = SimpleNamespace(catalog=catalog, storage=storage)
    assert engine_backup._free_set_id(plan, now) == "20261128T101500Z-cccc"  # type: ignore[arg-type]
