"""Tampered manifests, generated (hypothesis), for every target kind.

An attacker who can write to the storage rewrites a set's manifest (and its
checksums) at will. Whatever they write, a restore must either refuse it with
one line (a ``TxbackupError``) or restore inside its destination: nothing may
be written anywhere else. Each example runs the manifest through
``read_manifest``, ``verify_set``, the check that the record names only what
its configured target covers (``check_scope``), and as much of the restore as
runs without a live server: the whole engine restore for SQLite, the real
staging code of PostgreSQL's directory format, and for Cassandra the
coordinator's reading of the position, file lists and schema, then the agent's
staging. The second-line tests hand tampered names straight to that staging
code (as if the manifest checks were gone) to show that the path checks hold
on their own.

Everything happens in one sandbox folder: the restore destination lies five
levels deep in it, hostile names climb at most that far and absolute ones point
into it, so any escape lands in the sandbox, where it is seen.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from txbackup.agent import blobs
from txbackup.agent.node import Node, NodeConfig
from txbackup.engine.artifacts import SetReader, SetWriter, verify_set
from txbackup.engine.manifest import (
    ArtifactRecord,
    Manifest,
    PauseWindow,
    TargetRecord,
    Timings,
    artifact_path,
    manifest_path,
    read_manifest,
)
from txbackup.engine.restore import RestorePlan, check_scope, restore_set
from txbackup.errors import TxbackupError
from txbackup.jobs import JobStore
from txbackup.storage import LocalStorage
from txbackup.storage.base import copy_stream, save_bytes
from txbackup.targets import cosmos as cosmos_target
from txbackup.targets import dynamodb as dynamodb_target
from txbackup.targets import rds as rds_target
from txbackup.targets.azuredb import target as azuredb_target
from txbackup.targets.base import Target
from txbackup.targets.cassandra import target as cassandra_target
from txbackup.targets.layouts import LAYOUTS
from txbackup.targets.mysql import target as mysql_target
from txbackup.targets.postgres import target as postgres_target
from txbackup.targets.sqlite import target as sqlite_target

SET = "20261127T101500Z-3f9a"
SANDBOX = Path(tempfile.gettempdir()) / f"txbackup-fuzz-{os.getpid()}"  # made by the fixture
WORK = SANDBOX / "a" / "b" / "c" / "d" / "work"  # destinations and staging: a fresh one per example
OUTSIDE = SANDBOX / "outside"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def sandbox() -> Iterator[None]:
    shutil.rmtree(SANDBOX, ignore_errors=True)
    _SETS.clear()
    OUTSIDE.mkdir(parents=True)
    (OUTSIDE / "precious").write_bytes(b"must stay")
    yield
    shutil.rmtree(SANDBOX, ignore_errors=True)


# -- hostile input -------------------------------------------------------------------------------

_HOSTILE = [
    "..", ".", "", "/", "../x", "../../../../../pwn", "a/../../../../../../pwn", "x/./y", "a//b", "//",
    "\\..\\..\\pwn", "a\\b", "a\x00b", "\x00", "a\nb", "\r", "\x7f", "\udc80", "é/ü", "\uff46\uff55", "☃",
    "x" * 300, "y/" * 600, "~", "~/pwn", "-rf", "--help", " ", "nodes/../../pwn.json",
    f"{OUTSIDE}/pwn", str(OUTSIDE / "precious"), f"/{OUTSIDE}/x.sqlite",
]  # fmt: skip
segments = st.sampled_from(_HOSTILE) | st.text(max_size=12)
hostile_names = st.one_of(
    segments,
    st.builds(lambda a, b: f"{a}/{b}", segments, segments),
    # what each layout looks like, around a hostile part
    st.builds(lambda a: f"bank.dir/{a}", segments),
    st.builds(lambda a: f"{a}.dir/toc.dat", segments),
    st.builds(lambda a: f"{a}.sqlite", segments),
    st.builds(lambda a: f"{a}.dump", segments),
    st.builds(lambda a: f"{a}.sql", segments),
    st.builds(lambda a: f"nodes/{a}.json", segments),
)
bad_values: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from([None, True, False, -1, -(2**63), 2**63, 2**70, 0.5, float("inf"), "", "1", [], {}]),
    st.builds(lambda depth: json.loads("[" * depth + "]" * depth), st.integers(30, 500)),
    hostile_names,
    st.text(max_size=20),
    st.integers(),
)


# -- one valid set per kind ----------------------------------------------------------------------


def sqlite_bytes() -> bytes:
    path = SANDBOX / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t (v) VALUES ('restored')")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.close()
    data = path.read_bytes()
    path.unlink()
    return data


def sstable_files(storage: LocalStorage) -> list[dict[str, Any]]:
    """Two SSTable components in the blob store, and the node's file list for them."""
    files = []
    for name, data in [("nb-1-big-Data.db", b"rows" * 100), ("nb-1-big-Index.db", b"index")]:
        source = SANDBOX / name
        source.write_bytes(data)
        stored = blobs.put_file(storage, STORE, str(source))
        source.unlink()
        files.append(
            {"keyspace": "bank", "table": "accounts", "table_dir": "accounts-" + "0" * 32, "name": name,
             "sha256": stored.sha256, "size": stored.size, "stored_size": stored.stored_size,
             "node": "127.0.0.1"}
        )  # fmt: skip
    return files


STORE = blobs.store_prefix("test-cluster")
TARGET = {"sqlite": "cache", "postgres": "pg", "mysql": "my", "cassandra": "cass", "dynamodb": "ddb",
          "cosmos": "cosmos", "rds": "bank-db", "azure-postgres": "azpg",
          "azure-mysql": "azmy"}  # fmt: skip
CLOSED_PORT = 9  # discard: nothing listens there on a test machine; nothing here contacts it anyway


def configured(kind: str) -> Target:
    """The cluster file's target of each set (the SQLite one restores into the work folder)."""
    name = TARGET[kind]
    if kind == "sqlite":
        return sqlite_target.from_config(name, {"path": str(WORK / "dest" / "app.db")})
    if kind == "postgres":
        return postgres_target.from_config(name, {"port": CLOSED_PORT, "databases": ["bank"]})
    if kind == "mysql":
        return mysql_target.from_config(name, {"port": CLOSED_PORT, "databases": ["bank"]})
    if kind == "cassandra":
        return cassandra_target.from_config(
            name, {"agents": [f"127.0.0.1:{CLOSED_PORT}"], "keyspaces": ["bank"]}
        )
    if kind == "dynamodb":
        return dynamodb_target.from_config(name, {"region": "eu-west-1", "tables": ["bank.accounts"]})
    if kind == "rds":
        return rds_target.from_config(name, {"region": "eu-west-1", "instance": "bank-db"})
    if kind.startswith("azure-"):
        server = {"subscription_id": "s-1", "resource_group": "rg", "server": "bank"}
        return azuredb_target.from_config(kind, name, server)
    conf = {"subscription_id": "s-1", "resource_group": "rg", "account": "bank", "databases": ["bank"]}
    return cosmos_target.from_config(name, conf)


def artifacts_of(kind: str, storage: LocalStorage) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The artifacts of a small valid set of ``kind``, and its position."""
    if kind == "sqlite":
        return {"app.sqlite": sqlite_bytes()}, {"files": {}}
    if kind == "postgres":
        return {"bank.dump": b"PGDMP", "bank.dir/toc.dat": b"toc", "bank.dir/3456.dat": b"1\t2\n"}, {}
    if kind == "mysql":
        return {"bank.sql": b"CREATE TABLE t (id INT);\n"}, {}
    if kind == "cassandra":
        listing = json.dumps({"node": {"address": "127.0.0.1"}, "files": sstable_files(storage)}).encode()
        node = {"address": "127.0.0.1", "tokens": ["-1"], "files_artifact": "nodes/127.0.0.1.json"}
        position = {"tag": SET, "store": STORE, "keyspaces": ["bank"], "nodes": [node]}
        return {"nodes/127.0.0.1.json": listing, "schema.json": b"[]", "schema.cql": b""}, position
    if kind == "dynamodb":
        return {"tables.json": b"{}"}, {"tables": {}}
    if kind == "rds":
        recorded: dict[str, Any] = {"kind": "instance", "region": "eu-west-1", "set_id": SET}
        return {"rds.json": b"{}"}, {**recorded, "instance": {"identifier": "bank-db"}}
    if kind.startswith("azure-"):
        provider = "Microsoft.DBforPostgreSQL" if kind == "azure-postgres" else "Microsoft.DBforMySQL"
        server_id = f"/subscriptions/s-1/resourceGroups/rg/providers/{provider}/flexibleServers/bank"
        return {"server.json": b"{}"}, {"server": "bank", "id": server_id, "set_id": SET}
    source = "/subscriptions/s-1/providers/Microsoft.DocumentDB/locations/x/restorableDatabaseAccounts/i-1"
    return {"account.json": b"{}"}, {"account": "bank", "restore_source": source, "instance_id": "i-1"}


_SETS: dict[str, tuple[LocalStorage, dict[str, Any]]] = {}


def valid_set(kind: str) -> tuple[LocalStorage, dict[str, Any]]:
    """A storage holding a valid set with one target of ``kind``, and its manifest as a dict."""
    if kind not in _SETS:
        storage = LocalStorage(str(SANDBOX / f"storage-{kind}"))
        artifacts, position = artifacts_of(kind, storage)
        writer = SetWriter(storage, SET, TARGET[kind])
        for name, data in artifacts.items():
            with writer.open(name) as out:
                out.write(data)
        manifest = Manifest(
            set_id=SET,
            created_at="2026-11-27T10:15:00.000Z",
            finished_at="2026-11-27T10:16:00.000Z",
            pause=PauseWindow("2026-11-27T10:15:01.000Z", None, None),
            applications=["127.0.0.1:50051"],
            timings=Timings(),
            targets=[
                TargetRecord(TARGET[kind], kind, dict(configured(kind).describe()), position, writer.records)
            ],
        )
        _SETS[kind] = (storage, manifest.to_dict())
    return _SETS[kind]


# -- tampering -----------------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _rename(index: int, name: str, follow_path: bool) -> Mutation:
    def apply(data: dict[str, Any]) -> None:
        artifacts = data["targets"][0]["artifacts"]
        if not isinstance(artifacts, list) or not artifacts or not isinstance(artifacts[0], dict):
            return  # an earlier mutation already broke the list: nothing to rename
        artifact = artifacts[index % len(artifacts)]
        if not isinstance(artifact, dict):
            return
        artifact["name"] = name
        if follow_path:  # as a careful attacker would: the path derived from the name
            with contextlib.suppress(TxbackupError):
                artifact["path"] = artifact_path(SET, data["targets"][0]["name"], name)

    return apply


def _set(where: tuple[Any, ...], value: Any) -> Mutation:
    def apply(data: dict[str, Any]) -> None:
        node: Any = data
        for key in where[:-1]:
            if isinstance(key, int):
                node = node[key % len(node)] if node else {}
            else:
                node = node.setdefault(key, {})
        if isinstance(node, dict):
            node[where[-1]] = value
        elif isinstance(node, list) and node:
            node[where[-1] % len(node)] = value

    return apply


def _duplicate_target(data: dict[str, Any]) -> None:
    data["targets"].append(copy.deepcopy(data["targets"][0]))


def _duplicate_artifact(data: dict[str, Any]) -> None:
    artifacts = data["targets"][0]["artifacts"]
    artifacts.append(copy.deepcopy(artifacts[0]))


_FIELDS = [
    ("format_version",), ("set_id",), ("status",), ("created_at",), ("applications",), ("applications", 0),
    ("pause", "midpoint"), ("timings", "pause_ms"), ("targets",), ("targets", 0), ("targets", 0, "name"),
    ("targets", 0, "kind"), ("targets", 0, "position"), ("targets", 0, "artifacts"),
    ("targets", 0, "artifacts", 0), ("targets", 0, "artifacts", 0, "name"),
    ("targets", 0, "artifacts", 0, "path"), ("targets", 0, "artifacts", 0, "size"),
    ("targets", 0, "artifacts", 0, "stored_size"), ("targets", 0, "artifacts", 0, "sha256"),
    ("targets", 0, "artifacts", 0, "stored_sha256"), ("targets", 0, "artifacts", 0, "unknown"),
    ("targets", 0, "position", "nodes", 0, "files_artifact"), ("targets", 0, "position", "store"),
    ("targets", 0, "position", "tag"), ("unknown",), ("targets", 0, "description"),
    ("targets", 0, "description", "kind"), ("targets", 0, "description", "databases"),
    ("targets", 0, "description", "paths"), ("targets", 0, "description", "keyspaces"),
    ("targets", 0, "position", "keyspaces"), ("targets", 0, "position", "nodes"),
    ("targets", 0, "position", "nodes", 0, "tokens"), ("targets", 0, "position", "nodes", 0, "address"),
    ("targets", 0, "position", "files"), ("targets", 0, "position", "tables"),
    ("targets", 0, "position", "account"), ("targets", 0, "position", "databases"),
]  # fmt: skip
mutations = st.one_of(
    st.builds(_rename, st.integers(0, 5), hostile_names, st.booleans()),
    st.builds(_set, st.sampled_from(_FIELDS), bad_values),
    st.builds(_set, st.just(("targets", 0, "kind")), st.text(max_size=10)),
    st.just(_duplicate_target),
    st.just(_duplicate_artifact),
)


# -- checks --------------------------------------------------------------------------------------


def snapshot() -> dict[str, tuple[int, int]]:
    """Every file and link of the sandbox outside the work folder and the storages."""
    seen = {}
    for folder, dirs, files in os.walk(SANDBOX):
        dirs[:] = [d for d in dirs if not (folder == str(SANDBOX) and d.startswith("storage-"))]
        if Path(folder) == WORK.parent:
            dirs[:] = [d for d in dirs if d != WORK.name]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            st_ = os.lstat(os.path.join(folder, name))
            seen[os.path.join(folder, name)] = (st_.st_size, st_.st_mtime_ns)
    return seen


def note(text: str) -> None:
    """A hypothesis event (statistics: how far the examples went), also outside of @given."""
    with contextlib.suppress(InvalidArgument):
        event(text)


def one_line(exc: BaseException) -> None:
    assert isinstance(exc, TxbackupError), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text and len(text) < 1000, text


def contained(run: Callable[[], object]) -> None:
    """Run ``run`` in a fresh work folder; it may refuse (one line) or succeed, but must
    leave the rest of the sandbox untouched."""
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    before = snapshot()
    try:
        run()
    except Exception as exc:
        one_line(exc)
    assert snapshot() == before
    shutil.rmtree(WORK, ignore_errors=True)


def save_manifest(storage: LocalStorage, data: dict[str, Any]) -> None:
    save_bytes(storage, manifest_path(SET), json.dumps(data).encode())


def staging_node(storage: LocalStorage) -> Node:
    config = NodeConfig(nodetool=["false"], data_dirs=[WORK / "data"], staging_dir=WORK / "staging")
    return Node(config, storage)


def restore_what_runs_here(kind: str, storage: LocalStorage, manifest: Manifest) -> None:
    """verify, then the restore as far as it runs without a live server."""
    problems = verify_set(storage, manifest)
    for problem in problems:
        assert "\n" not in problem
    if problems:
        note("refused by verify")
    (target,) = manifest.targets
    if target.kind != kind or target.name != TARGET[kind]:
        note("another target than the cluster file's")
        return
    ours = configured(kind)
    try:
        check_scope(SET, target, ours)
    except TxbackupError:
        note("refused: names what the target does not cover")
        raise
    if kind == "sqlite":
        plan = RestorePlan(storage, manifest, [ours], JobStore(str(WORK / "jobs.db")), force=True)
        restore_set(plan)
        assert sqlite3.connect(WORK / "dest" / "app.db").execute("SELECT v FROM t").fetchall() == [
            ("restored",)
        ]
    elif kind == "postgres":
        from txbackup.targets.postgres.directory import stage_directory

        names = [a.name for a in target.artifacts if a.name.startswith("bank.dir/")]
        stage_directory(SetReader(storage, SET, target.name, target.artifacts), names, str(WORK), "pg")
    elif kind == "cassandra":
        # CassandraTarget.restore then needs live agents: here, what it reads before calling any
        # (position, file lists, schema), then the agent's staging of what it would hand over
        assert isinstance(ours, cassandra_target.CassandraTarget)
        reader = SetReader(storage, SET, target.name, target.artifacts, position=target.position)
        found = ours._restorable(reader)
        files = [f for node in found.nodes for f in found.files_of[node.address]]
        staging_node(storage).prepare(found.tag, found.store, files, lambda _: None)
    note(f"{kind}: restored as far as runs here")


# -- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
@FUZZ
@given(changes=st.lists(mutations, min_size=1, max_size=3))
def test_tampered_manifests_never_write_outside(kind: str, changes: list[Mutation]) -> None:
    storage, valid = valid_set(kind)
    data = copy.deepcopy(valid)
    for change in changes:
        # a mutation that does not apply to what an earlier one left is skipped
        with contextlib.suppress(KeyError, IndexError, TypeError, AttributeError):
            change(data)

    move_renamed(storage, data, valid)

    def run() -> None:
        save_manifest(storage, data)
        try:
            manifest = read_manifest(storage, SET)
        except TxbackupError:
            note("refused by read_manifest")
            raise
        # what is accepted fits the layout, and its paths are the derived ones
        for target in manifest.targets:
            for artifact in target.artifacts:
                assert LAYOUTS[target.kind].fits(artifact.name)
                assert artifact.path == artifact_path(SET, target.name, artifact.name)
        restore_what_runs_here(kind, storage, manifest)

    contained(run)


def move_renamed(storage: LocalStorage, data: dict[str, Any], valid: dict[str, Any]) -> None:
    """Store the data of a renamed artifact at its new path too, as a careful attacker
    would (so that checksums hold and only the name checks stand in the way)."""
    with contextlib.suppress(KeyError, IndexError, TypeError, AttributeError, TxbackupError):
        originals = valid["targets"][0]["artifacts"]
        for i, artifact in enumerate(data["targets"][0]["artifacts"]):
            path, source = artifact["path"], originals[i % len(originals)]["path"]
            if isinstance(path, str) and path != source and storage.stat(path) is None:
                with storage.open_read(source) as f:
                    copy_stream(storage, path, f)


def test_the_valid_sets_restore() -> None:
    """The fuzzed sets are sound to begin with: the unmodified ones restore (no refusal)."""
    for kind in sorted(LAYOUTS):
        storage, valid = valid_set(kind)
        shutil.rmtree(WORK, ignore_errors=True)
        WORK.mkdir(parents=True)
        save_manifest(storage, valid)
        restore_what_runs_here(kind, storage, read_manifest(storage, SET))
    # and the staging code did stage: checked on a last run, kept for inspection
    storage, valid = valid_set("cassandra")
    WORK.mkdir(parents=True, exist_ok=True)
    restore_what_runs_here("cassandra", storage, read_manifest(storage, SET))
    staged = sorted(p.name for p in (WORK / "staging" / SET / "127.0.0.1" / "bank" / "accounts").iterdir())
    assert staged == ["nb-1-big-Data.db", "nb-1-big-Index.db"]
    shutil.rmtree(WORK)


# -- second line: the staging code on its own ----------------------------------------------------


def tampered_records(kind: str, names: list[str]) -> list[ArtifactRecord]:
    """Records carrying hostile names but pointing at a real stored artifact (so that
    nothing but the path checks stands between the name and the disk)."""
    _, valid = valid_set(kind)
    source = ArtifactRecord.from_dict(valid["targets"][0]["artifacts"][-1])
    return [ArtifactRecord(name, source.path, source.size, source.sha256, source.stored_size,
                           source.stored_sha256) for name in dict.fromkeys(names)]  # fmt: skip


@FUZZ
@given(names=st.lists(hostile_names, min_size=1, max_size=4))
def test_postgres_directory_staging_stays_inside(names: list[str]) -> None:
    from txbackup.targets.postgres.directory import stage_directory

    storage, _ = valid_set("postgres")
    records = tampered_records("postgres", names)
    # what PostgresTarget.restore hands the staging: <something>.dir/<rest>
    chosen = [r.name for r in records if (p := r.name.partition("/"))[0].endswith(".dir") and p[2]]
    contained(lambda: stage_directory(SetReader(storage, SET, "pg", records), chosen, str(WORK), "pg"))


@FUZZ
@given(names=st.lists(hostile_names, min_size=1, max_size=3), in_place=st.booleans())
def test_sqlite_restore_stays_inside(names: list[str], in_place: bool) -> None:
    storage, _ = valid_set("sqlite")
    target = sqlite_target.from_config("cache", {"path": str(WORK / "dest" / "app.db")})
    reader = SetReader(storage, SET, "cache", tampered_records("sqlite", names))
    dest = None if in_place else {"dir": str(WORK / "elsewhere")}
    contained(lambda: target.restore(reader, dest, force=True))


file_fields = st.sampled_from(["name", "keyspace", "table", "node", "size", "sha256"])


@FUZZ
@given(
    changes=st.lists(st.tuples(st.integers(0, 1), file_fields, bad_values), min_size=1, max_size=3),
    tag=st.sampled_from([SET]) | hostile_names,
    store=st.sampled_from([STORE]) | hostile_names,
)
def test_cassandra_agent_staging_stays_inside(
    changes: list[tuple[int, str, Any]], tag: str, store: str
) -> None:
    storage, valid = valid_set("cassandra")
    record = ArtifactRecord.from_dict(valid["targets"][0]["artifacts"][0])
    with SetReader(storage, SET, "cass", [record]).open(record.name) as f:
        files = json.load(f)["files"]
    for index, field, value in changes:
        files[index][field] = value
    contained(lambda: staging_node(storage).prepare(tag, store, files, lambda _: None))
