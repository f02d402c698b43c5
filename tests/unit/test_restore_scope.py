"""A set's record may name only what its target's configuration covers.

A tampered manifest whose artifact names fit the kind's layout (``other.dump``
for postgres) must not make a restore write into a database, table, keyspace,
file or account the target does not own. For every kind, such a set is refused
in one line naming the set, the target and the foreign name, before anything
is contacted: every target's server, agent or API endpoint is a local socket
that counts the connections made to it (and drops them), and must count none.
The untampered records pass the same check (they restore in the integration
tests), and so do restores to another name on purpose (``--to``).

The second half feeds the Cassandra coordinator's restore malformed positions,
file lists and ``schema.json`` (hypothesis): each is refused in one line, or
gets as far as the first agent call (to the counting socket), never further and
never with another exception.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from txbackup.agent import blobs
from txbackup.engine.artifacts import RestoreContext, SetReader, SetWriter
from txbackup.engine.manifest import Manifest, PauseWindow, TargetRecord, Timings
from txbackup.engine.restore import RestorePlan, check_scope, restore_set
from txbackup.errors import IntegrityError, TxbackupError
from txbackup.jobs import JobStore
from txbackup.storage import LocalStorage
from txbackup.targets import cosmos, dynamodb
from txbackup.targets.base import Recorded, Target
from txbackup.targets.cassandra import target as cassandra
from txbackup.targets.mysql import target as mysql
from txbackup.targets.postgres import target as postgres
from txbackup.targets.sqlite import target as sqlite

SET = "20261127T101500Z-3f9a"
SUB = "00000000-0000-0000-0000-00000000cafe"
STORE = blobs.store_prefix("test-cluster")
RESTORABLE = "providers/Microsoft.DocumentDB/locations/westeurope/restorableDatabaseAccounts"


class Listener:
    """A local TCP port standing for every server, agent and API: it accepts, counts and
    drops each connection (so a client that does connect fails fast)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.count = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    found.close()


def sqlite_bytes(tmp: Path) -> bytes:
    path = tmp / "source.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.commit()
    conn.close()
    return path.read_bytes()


# -- one target and one valid record per kind ------------------------------------------------------


def configured(kind: str, port: int, tmp: Path) -> Target:
    """The target of ``kind``, whose every server, agent or endpoint is 127.0.0.1:``port``."""
    if kind == "postgres":
        return postgres.from_config("pg", {"port": port, "databases": ["bank"]})
    if kind == "mysql":
        return mysql.from_config("my", {"port": port, "databases": ["bank"]})
    if kind == "sqlite":
        return sqlite.from_config("cache", {"path": str(tmp / "dest" / "app.db")})
    if kind == "dynamodb":
        return dynamodb.from_config(
            "ddb",
            {"region": "eu-west-1", "tables": ["bank.accounts"], "endpoint_url": f"http://127.0.0.1:{port}"},
        )
    if kind == "cosmos":
        return cosmos.from_config(
            "cosmos",
            {
                "subscription_id": SUB,
                "resource_group": "rg",
                "account": "bank",
                "databases": {"bank": ["accounts"], "ledger": []},
                "management_endpoint": f"http://127.0.0.1:{port}",
            },
        )
    return cassandra.from_config("cass", {"agents": [f"127.0.0.1:{port}"], "keyspaces": ["bank"]})


def valid(kind: str, target: Target, tmp: Path) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The artifacts and position of a sound set of ``target``."""
    if kind == "postgres":
        snapshot = {"snapshot": "00000003-1", "lsn": "0/1", "in_recovery": False}
        return {"bank.dump": b"PGDMP"}, {"server_version": "16.4", "databases": {"bank": snapshot}}
    if kind == "mysql":
        artifacts = {"bank.sql": b"SELECT 1;\n", "coordinator.sql": b"SELECT 1;\n"}
        return artifacts, {"flavor": "mariadb", "databases": ["bank", "coordinator"], "log_bin": False}
    if kind == "sqlite":
        return {"app.sqlite": sqlite_bytes(tmp)}, {"files": {"app.sqlite": {"path": "/old/place/app.db"}}}
    if kind == "dynamodb":
        arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/{}/backup/01700000000000-abcdef12"
        tables = {"bank.accounts": {"arn": "x"}, "coordinator.state": {"arn": "y"}}
        backups = {t: arn.format(t) for t in tables}
        return {"tables.json": b"{}"}, {
            "mode": "on-demand",
            "region": "eu-west-1",
            "tables": tables,
            "backups": backups,
        }
    if kind == "cosmos":
        source = f"/subscriptions/{SUB}/{RESTORABLE}/i-1"
        position = {
            "account": "bank", "subscription_id": SUB, "resource_group": "rg", "restore_source": source,
            "instance_id": "i-1", "location": "westeurope", "whole_account": False, "set_id": SET,
            "databases": {"bank": ["accounts"], "ledger": ["a"], "coordinator": ["s"], "scalardb": ["m"]},
        }  # fmt: skip
        return {"account.json": b"{}"}, position
    files = [
        {"keyspace": "bank", "table": "accounts", "table_dir": "accounts-0", "name": "nb-1-big-Data.db",
         "sha256": "0" * 64, "size": 4, "stored_size": 13}
    ]  # fmt: skip
    listing = {"node": {"address": "127.0.0.1"}, "files": files}
    schema = [
        {"keyspace": "bank", "type": "keyspace", "name": "bank",
         "statement": "CREATE KEYSPACE bank WITH replication = {'class': 'SimpleStrategy'};"},
        {"keyspace": "bank", "type": "table", "name": "accounts",
         "statement": "CREATE TABLE bank.accounts (id int PRIMARY KEY, v text);"},
    ]  # fmt: skip
    node = {"address": "127.0.0.1", "tokens": ["-1", "42"], "files_artifact": "nodes/127.0.0.1.json"}
    position = {"tag": SET, "store": STORE, "keyspaces": ["bank", "coordinator"], "nodes": [node]}
    artifacts = {
        "nodes/127.0.0.1.json": json.dumps(listing).encode(),
        "schema.json": json.dumps(schema).encode(),
        "schema.cql": b"",
    }
    return artifacts, position


Tamper = Callable[[dict[str, bytes], dict[str, Any], dict[str, Any]], None]
"""Changes (artifacts, position, description) in place."""


def rename(old: str, new: str) -> Tamper:
    def apply(artifacts: dict[str, bytes], position: dict[str, Any], description: dict[str, Any]) -> None:
        artifacts[new] = artifacts.pop(old)

    return apply


def put(part: str, path: tuple[Any, ...], value: Any) -> Tamper:
    def apply(artifacts: dict[str, bytes], position: dict[str, Any], description: dict[str, Any]) -> None:
        node: Any = position if part == "position" else description
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return apply


def in_artifact(name: str, change: Callable[[Any], None]) -> Tamper:
    def apply(artifacts: dict[str, bytes], position: dict[str, Any], description: dict[str, Any]) -> None:
        data = json.loads(artifacts[name])
        change(data)
        artifacts[name] = json.dumps(data).encode()

    return apply


OTHER_SOURCE = f"/subscriptions/11111111-1111-1111-1111-111111111111/{RESTORABLE}/i-1"
OTHER_ARN = "arn:aws:dynamodb:eu-west-1:123456789012:table/bank.secrets/backup/01700000000000-abcdef12"

# (kind, what is tampered, the tampering, the foreign name the refusal must show)
TAMPERED: list[tuple[str, str, Tamper, str]] = [
    ("postgres", "artifact", rename("bank.dump", "postgres.dump"), "'postgres'"),
    ("postgres", "artifact", rename("bank.dump", "other.dir/toc.dat"), "'other'"),
    ("postgres", "position", put("position", ("databases", "template1"), {}), "'template1'"),
    ("postgres", "description", put("description", ("databases",), ["bank", "other"]), "'other'"),
    ("postgres", "description", put("description", ("kind",), "mysql"), "'mysql'"),
    ("mysql", "artifact", rename("bank.sql", "mysql.sql"), "'mysql'"),
    ("mysql", "position", put("position", ("databases",), ["bank", "other"]), "'other'"),
    ("mysql", "description", put("description", ("coordinator_database",), "mysql"), "'mysql'"),
    ("sqlite", "artifact", rename("app.sqlite", "passwd.sqlite"), "'passwd.sqlite'"),
    ("sqlite", "position", put("position", ("files", "shadow.sqlite"), {}), "'shadow.sqlite'"),
    ("sqlite", "description", put("description", ("paths",), ["/etc/passwd"]), "'/etc/passwd'"),
    ("dynamodb", "position", put("position", ("tables", "bank.secrets"), {}), "'bank.secrets'"),
    ("dynamodb", "position", put("position", ("backups", "bank.accounts"), OTHER_ARN), "bank.secrets"),
    ("dynamodb", "position", put("position", ("region",), "us-east-1"), "'us-east-1'"),
    ("dynamodb", "description", put("description", ("tables",), ["bank.secrets"]), "'bank.secrets'"),
    ("cosmos", "position", put("position", ("account",), "payroll"), "'payroll'"),
    ("cosmos", "position", put("position", ("databases", "payroll"), ["salaries"]), "'payroll'"),
    ("cosmos", "position", put("position", ("databases", "bank"), ["accounts", "secrets"]), "'secrets'"),
    ("cosmos", "position", put("position", ("restore_source",), OTHER_SOURCE), "11111111-"),
    ("cosmos", "position", put("position", ("whole_account",), True), "whole account"),
    ("cosmos", "description", put("description", ("account",), "payroll"), "'payroll'"),
    ("cassandra", "position", put("position", ("keyspaces",), ["bank", "system_auth"]), "'system_auth'"),
    ("cassandra", "description", put("description", ("keyspaces",), ["payroll"]), "'payroll'"),
    (
        "cassandra",
        "file list",
        in_artifact("nodes/127.0.0.1.json", lambda d: d["files"][0].update(keyspace="payroll")),
        "'payroll'",
    ),
    (
        "cassandra",
        "schema",
        in_artifact(
            "schema.json",
            lambda d: d.append(
                dict(d[1], keyspace="payroll", statement="CREATE TABLE payroll.accounts (k int)")
            ),
        ),
        "'payroll'",
    ),
]  # fmt: skip


def make_set(
    storage: LocalStorage,
    target: Target,
    artifacts: Mapping[str, bytes],
    position: dict[str, Any],
    description: dict[str, Any],
) -> Manifest:
    writer = SetWriter(storage, SET, target.name)
    for name, data in artifacts.items():
        with writer.open(name) as out:
            out.write(data)
    record = TargetRecord(target.name, target.kind, description, position, writer.records)
    return Manifest(
        set_id=SET,
        created_at="2026-11-27T10:15:00.000Z",
        finished_at="2026-11-27T10:16:00.000Z",
        pause=PauseWindow("2026-11-27T10:15:01.000Z", "2026-11-27T10:15:21.000Z", "2026-11-27T10:15:11.000Z"),
        applications=["127.0.0.1:50051"],
        timings=Timings(),
        targets=[record],
    )


def one_line(exc: BaseException) -> str:
    assert isinstance(exc, TxbackupError), f"{type(exc).__name__}: {exc}"
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text and len(text) < 1000, text
    return text


# -- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["postgres", "mysql", "sqlite", "dynamodb", "cosmos", "cassandra"])
def test_the_sound_records_are_covered(kind: str, listener: Listener, tmp_path: Path) -> None:
    target = configured(kind, listener.port, tmp_path)
    artifacts, position = valid(kind, target, tmp_path)
    manifest = make_set(
        LocalStorage(str(tmp_path / "storage")), target, artifacts, position, dict(target.describe())
    )
    check_scope(SET, manifest.targets[0], target)
    target.check_record(Recorded(tuple(artifacts), position))
    assert listener.count == 0


@pytest.mark.parametrize(
    ("kind", "part", "tamper", "foreign"),
    TAMPERED,
    ids=[f"{k}-{p}-{i}" for i, (k, p, _, _) in enumerate(TAMPERED)],
)
@pytest.mark.parametrize("to", [False, True], ids=["in-place", "to"])
def test_a_foreign_name_is_refused_before_anything_is_contacted(
    kind: str, part: str, tamper: Tamper, foreign: str, to: bool, listener: Listener, tmp_path: Path
) -> None:
    target = configured(kind, listener.port, tmp_path)
    artifacts, position = valid(kind, target, tmp_path)
    description = copy.deepcopy(dict(target.describe()))
    tamper(artifacts, position, description)
    storage = LocalStorage(str(tmp_path / "storage"))
    manifest = make_set(storage, target, artifacts, position, description)
    # --to: a restore to another name on purpose renames the destination, not the sources
    destinations = {
        "postgres": f"postgresql://127.0.0.1:{listener.port}/bank_copy",
        "mysql": f"mysql://root@127.0.0.1:{listener.port}/bank_copy",
        "sqlite": str(tmp_path / "elsewhere" / "app.db"),
        "dynamodb": "suffix:-restored",
        "cosmos": "bank-copy",
        "cassandra": f"127.0.0.1:{listener.port}",
    }
    plan = RestorePlan(
        storage,
        manifest,
        [target],
        JobStore(str(tmp_path / "jobs.db")),
        destinations={target.name: destinations[kind]} if to else {},
        force=True,
    )
    with pytest.raises(IntegrityError) as refused:
        restore_set(plan)
    text = one_line(refused.value)
    assert SET in text and f'target "{target.name}"' in text and foreign in text, text
    if part not in ("file list", "schema"):  # the record alone: refused before verify
        assert text.startswith(f"refusing to restore set {SET}: "), text
    # and the target's own restore refuses the same set handed over without the engine
    if part != "description":
        reader = SetReader(storage, SET, target.name, manifest.targets[0].artifacts, position=position)
        with pytest.raises(IntegrityError) as direct:
            target.restore(reader, None, True)
        assert foreign in one_line(direct.value)
    assert listener.count == 0, "a server was contacted"
    assert not (tmp_path / "dest").exists() and not (tmp_path / "elsewhere").exists()


def test_a_verify_with_the_cluster_file_names_a_foreign_database(listener: Listener, tmp_path: Path) -> None:
    from txbackup.cli import verify

    config = tmp_path / "cluster.toml"
    storage = tmp_path / "storage"
    config.write_text(
        f'[storage]\npath = "{storage}"\n\n[[targets]]\nname = "pg"\nkind = "postgres"\n'
        f"port = {listener.port}\n"
        'databases = ["bank"]\n'
    )
    target = configured("postgres", listener.port, tmp_path)
    artifacts, position = valid("postgres", target, tmp_path)
    artifacts["postgres.dump"] = artifacts.pop("bank.dump")
    manifest = make_set(LocalStorage(str(storage)), target, artifacts, position, dict(target.describe()))
    from txbackup.engine.manifest import write_manifest

    write_manifest(LocalStorage(str(storage)), manifest)
    out = io.StringIO()
    with contextlib.redirect_stderr(out):
        import argparse

        args = argparse.Namespace(
            config=str(config), storage=None, catalog=str(tmp_path / "c.db"), set_id=SET, json=False,
            read_data=False, read_data_subset=None,
        )  # fmt: skip
        assert verify.run(args) == 1
    assert "database 'postgres'" in out.getvalue()


# -- the Cassandra coordinator, on malformed sets --------------------------------------------------


class MemoryReader(RestoreContext):
    """An ArtifactReader over artifacts in memory (the engine's checks are not the point)."""

    def __init__(self, artifacts: Mapping[str, bytes], position: Mapping[str, Any]) -> None:
        super().__init__("2026-11-27T10:15:11.000Z", position)
        self.artifacts = dict(artifacts)

    def names(self) -> list[str]:
        return list(self.artifacts)

    @contextlib.contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        yield io.BytesIO(self.artifacts[name])

    def extract(self, name: str, path: str, *, durable: bool = False) -> None:
        Path(path).write_bytes(self.artifacts[name])


bad_values: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(
        [None, True, False, -1, 0.5, "", "x", [], {}, [None], [[]], {"a": 1}, "payroll", ["payroll"]]
    ),
    st.builds(lambda depth: json.loads("[" * depth + "]" * depth), st.integers(1, 200)),
    st.text(max_size=10),
    st.integers(),
    st.lists(
        st.one_of(
            st.none(), st.text(max_size=5), st.integers(), st.dictionaries(st.text(max_size=5), st.none())
        ),
        max_size=3,
    ),
)
# where a value goes: in the position, in the file list, in schema.json (paths into each document)
places = st.sampled_from(
    [
        ("position", ()), ("position", ("tag",)), ("position", ("store",)), ("position", ("keyspaces",)),
        ("position", ("keyspaces", 0)), ("position", ("nodes",)), ("position", ("nodes", 0)),
        ("position", ("nodes", 0, "address")), ("position", ("nodes", 0, "tokens")),
        ("position", ("nodes", 0, "tokens", 0)), ("position", ("nodes", 0, "files_artifact")),
        ("files", ()), ("files", ("node",)), ("files", ("files",)), ("files", ("files", 0)),
        ("files", ("files", 0, "keyspace")), ("files", ("files", 0, "table")),
        ("files", ("files", 0, "name")),
        ("files", ("files", 0, "size")), ("files", ("files", 0, "sha256")), ("schema", ()), ("schema", (0,)),
        ("schema", (1, "keyspace")), ("schema", (1, "type")), ("schema", (1, "name")),
        ("schema", (1, "statement")),
    ]
)  # fmt: skip
raw_bytes = st.sampled_from([b"", b"{", b"\xff\xfe", b"[" * 100000, b"null", b"NaN", b"1e999999"])


def _placed(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return document


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    changes=st.lists(st.tuples(places, bad_values), min_size=1, max_size=3),
    raw=st.one_of(st.none(), st.tuples(st.sampled_from(["nodes/127.0.0.1.json", "schema.json"]), raw_bytes)),
)
def test_the_cassandra_coordinator_refuses_malformed_sets_in_one_line(
    changes: list[tuple[tuple[str, tuple[Any, ...]], Any]],
    raw: tuple[str, bytes] | None,
    listener: Listener,
    tmp_path: Path,
) -> None:
    target = configured("cassandra", listener.port, tmp_path)
    artifacts, position = valid("cassandra", target, tmp_path)
    documents = {
        "position": position,
        "files": json.loads(artifacts["nodes/127.0.0.1.json"]),
        "schema": json.loads(artifacts["schema.json"]),
    }
    for (where, path), value in changes:
        with contextlib.suppress(KeyError, IndexError, TypeError):
            documents[where] = _placed(documents[where], path, copy.deepcopy(value))
    artifacts["nodes/127.0.0.1.json"] = json.dumps(documents["files"]).encode()
    artifacts["schema.json"] = json.dumps(documents["schema"]).encode()
    if raw is not None:
        artifacts[raw[0]] = raw[1]
    position = documents["position"]
    before = listener.count
    try:
        target.restore(MemoryReader(artifacts, position if isinstance(position, dict) else {}), None, True)
    except Exception as exc:
        text = one_line(exc)
        if isinstance(exc, IntegrityError):
            event("refused")
            assert listener.count == before, "refused after contacting an agent"
        else:  # it got as far as the first agent call (the listener drops it)
            event("reached the first agent call")
            assert "127.0.0.1" in text and listener.count > before, text
    else:
        raise AssertionError("a restore without agents succeeded")
