"""The repository layer: object names (layout), the byte pipeline (codec), the config
and ``txbackup init``, the repository id in manifests, catalog rows and agents, and
the default catalog of a remote repository."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import zstandard

from txbackup.admin.client import Endpoint
from txbackup.admin.fleet import Fleet
from txbackup.agent import blobs, server
from txbackup.agent.client import AgentClient
from txbackup.agent.node import Node, NodeConfig
from txbackup.catalog import Catalog
from txbackup.cli import main
from txbackup.config import build_target, default_catalog, load_cluster, parse_storage_options
from txbackup.demo.sample_service import SampleServer
from txbackup.engine.backup import BackupPlan, run_backup
from txbackup.engine.manifest import (
    Manifest,
    PauseWindow,
    TargetRecord,
    Timings,
    parse_manifest,
    write_manifest,
)
from txbackup.errors import IntegrityError, StorageError, TxbackupError, UsageError
from txbackup.repository import layout
from txbackup.repository.codec import Encoder, Expected, decoded
from txbackup.repository.config import (
    FORMAT_VERSION,
    AlreadyInitialized,
    RepositoryConfig,
    init_repository,
    open_config,
    read_config,
)
from txbackup.storage import LocalStorage, registry
from txbackup.storage.base import list_names, load_bytes, save_bytes
from txbackup.storage.memory import MemoryStorage
from txbackup.targets.cassandra.target import CassandraTarget

SET = "20261128T100000Z-3f9a"
SHA = "ab" * 32

# -- layout ---------------------------------------------------------------------------------------


def test_every_name_round_trips_through_its_parser() -> None:
    assert layout.parse_manifest_path(layout.manifest_path(SET)) == SET
    art = layout.artifact_path(SET, "cass", "nodes/10.0.0.5.json")
    assert art == f"sets/{SET}/cass/nodes/10.0.0.5.json.zst"
    assert layout.parse_artifact_path(art) == layout.ArtifactName(SET, "cass", "nodes/10.0.0.5.json")
    lock_id = "20261128T100000123Z-3f9a0c1d"
    assert layout.parse_lock_path(layout.lock_path(lock_id)) == lock_id
    store = layout.store_prefix("Test Cluster")
    assert layout.parse_blob_name(layout.blob_name(store, SHA)) == (store, SHA)
    assert layout.set_of(art) == SET and layout.set_of(layout.manifest_path(SET)) == SET
    for name in (layout.CONFIG, art, layout.manifest_path(SET), layout.lock_path(lock_id)):
        assert layout.name_ok(name)


@pytest.mark.parametrize(
    "name",
    [
        "sets/../manifest.json",
        "sets/a/../manifest.json",
        f"sets/{SET}/manifest.json/x",
        f"sets/{SET}/../../etc/passwd.zst",
        f"sets/{SET}/pg/.zst",
        f"sets/{SET}/pg/x\n.zst",
        "sets/-bad/manifest.json",
        "locks/x.json",
        "locks/../20261128T100000123Z-3f9a0c1d.json",
        "cassandra/../sstables/" + SHA,
        "cassandra/.probe/sstables/" + SHA,
        "cassandra/c/sstables/" + SHA.upper(),
        "configx",
        "/config",
        "",
    ],
)
def test_hostile_names_parse_to_nothing(name: str) -> None:
    assert layout.parse_manifest_path(name) is None
    assert layout.parse_artifact_path(name) is None
    assert layout.parse_lock_path(name) is None
    assert layout.parse_blob_name(name) is None
    assert not layout.name_ok(name)


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: layout.manifest_path("../x"), UsageError),
        (lambda: layout.artifact_path(SET, "a/b", "x"), StorageError),
        (lambda: layout.artifact_path(SET, "..", "x"), StorageError),
        (lambda: layout.artifact_path(SET, "pg", "../../x"), StorageError),
        (lambda: layout.artifact_path(SET, "pg", "x\x00"), StorageError),
        (lambda: layout.lock_path("../../x"), UsageError),
        (lambda: layout.blob_name("cassandra/x/../sstables", SHA), IntegrityError),
        (lambda: layout.blob_name("cassandra/c/sstables", "../../etc/passwd"), IntegrityError),
    ],
)
def test_builders_refuse_parts_that_leave_their_place(build: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        build()


# -- codec ----------------------------------------------------------------------------------------


def encode(storage: MemoryStorage, name: str, data: bytes) -> Expected:
    with storage.open_write(name) as writer:
        encoder = Encoder(writer.write)
        for i in range(0, len(data), 1 << 16):
            encoder.write(data[i : i + (1 << 16)])
        done = encoder.finish()
        assert writer.commit().size == done.stored_size
    assert (done.size, done.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    return Expected(done.size, done.sha256, done.stored_size, done.stored_sha256)


def decode(storage: MemoryStorage, name: str, expected: Expected) -> bytes:
    with storage.open_read(name) as source, decoded(source, expected, f"artifact {name}") as data:
        return data.read()


def test_codec_round_trip_compresses_and_verifies() -> None:
    storage = MemoryStorage()
    data = os.urandom(200_000) + b"z" * 3_000_000
    expected = encode(storage, "x", data)
    assert expected.stored_size < len(data) // 2
    assert expected.stored_sha256 == hashlib.sha256(load_bytes(storage, "x", 1 << 30)).hexdigest()
    assert decode(storage, "x", expected) == data


def test_a_blob_upload_counts_its_stored_bytes_without_hashing_them(tmp_path: Path) -> None:
    chunks: list[bytes] = []
    encoder = Encoder(chunks.append, stored_sha=False)
    encoder.write(b"sstable" * 10_000)
    done = encoder.finish()
    assert done.stored_sha256 == "" and done.stored_size == len(b"".join(chunks))
    assert done.sha256 == hashlib.sha256(b"sstable" * 10_000).hexdigest()
    storage = LocalStorage(str(tmp_path / "repo"))
    source = tmp_path / "nb-1-big-Data.db"
    source.write_bytes(os.urandom(300_000))
    stored = blobs.put_file(storage, "cassandra/c1/sstables", str(source))
    ref = blobs.BlobRef("cassandra/c1/sstables", stored.sha256, stored.size, stored.stored_size, "f")
    blobs.verify_blob(storage, ref)  # its data's digest and both sizes


def test_codec_stops_a_bomb_at_the_recorded_size() -> None:
    storage = MemoryStorage()
    bomb = zstandard.ZstdCompressor(level=1).compress(bytes(64 << 20))
    save_bytes(storage, "bomb", bomb)
    expected = Expected(1000, SHA, len(bomb), hashlib.sha256(bomb).hexdigest())
    produced = 0
    with (
        pytest.raises(IntegrityError, match="artifact bomb: decompresses to more than the recorded 1000"),
        storage.open_read("bomb") as source,
        decoded(source, expected, "artifact bomb") as data,
    ):
        while chunk := data.read(1 << 16):
            produced += len(chunk)
    assert produced <= 1000


@pytest.mark.parametrize("wrong", ["sha256", "size", "stored_sha256", "stored_size"])
def test_codec_refuses_a_wrong_record(wrong: str) -> None:
    storage = MemoryStorage()
    expected = encode(storage, "x", b"hello world" * 1000)
    fields = expected.__dict__ | {
        wrong: ("cd" * 32) if "sha" in wrong else getattr(expected, wrong) - 1
    }
    message = r"artifact x: (checksum mismatch|longer than|decompresses to more)"
    with pytest.raises(IntegrityError, match=message):
        decode(storage, "x", Expected(**fields))


def test_codec_refuses_a_flipped_byte_and_a_short_read() -> None:
    storage = MemoryStorage()
    data = os.urandom(100_000)
    expected = encode(storage, "x", data)
    raw = bytearray(load_bytes(storage, "x", 1 << 30))
    raw[len(raw) // 2] ^= 0xFF
    save_bytes(storage, "y", bytes(raw))
    with pytest.raises(IntegrityError, match="artifact y: "):
        decode(storage, "y", expected)
    storage.faults.add("read", "short_read", pattern="x")  # a connection cut mid-body
    with pytest.raises((IntegrityError, StorageError)):
        decode(storage, "x", expected)


def test_blobs_and_artifacts_share_the_pipeline(tmp_path: Path) -> None:
    """A blob stored by the agent decodes with the set artifacts' reader, and back."""
    storage = MemoryStorage()
    src = tmp_path / "nb-1-big-Data.db"
    src.write_bytes(os.urandom(10_000) + b"q" * 100_000)
    stored = blobs.put_file(storage, "cassandra/c/sstables", str(src))
    name = layout.blob_name("cassandra/c/sstables", stored.sha256)
    assert decode(storage, name, Expected(stored.size, stored.sha256, stored.stored_size)) == src.read_bytes()


# -- the repository config and txbackup init -------------------------------------------------------


def test_init_twice_is_refused_in_one_line_naming_the_id(tmp_path: Path, capsys: Any) -> None:
    store = tmp_path / "store"
    assert main(["init", "--storage", str(store), "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["format_version"] == FORMAT_VERSION and len(made["repository_id"]) == 32
    assert stat.S_IMODE((store / "config").stat().st_mode) == 0o600
    assert main(["init", "--storage", str(store)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"already a repository (id {made['repository_id']})" in err
    made.pop("storage")
    assert read_config(LocalStorage(str(store))) == RepositoryConfig(**made)
    with pytest.raises(AlreadyInitialized):
        init_repository(LocalStorage(str(store)))


def test_init_help_explains(capsys: Any) -> None:
    with pytest.raises(SystemExit):
        main(["init", "--help"])
    out = capsys.readouterr().out
    assert "repository id" in out and "--storage-option" in out and "conditional create" in out


CONFIG = {
    "repository_id": "0123456789abcdef0123456789abcdef",
    "format_version": 1,
    "created_at": "2026-11-28T10:00:00.000Z",
    "created_by": "txbackup 0.1.0",
}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (json.dumps(CONFIG | {"format_version": 3}), "format version 3 is not supported"),
        (json.dumps(CONFIG | {"format_version": 2}), "field 'encryption' must be an object"),
        (json.dumps(CONFIG | {"encryption": {"scheme": "age-x25519", "recipient": "age1"}}),
         "'encryption' in a format version 1 config"),
        (json.dumps(CONFIG | {"format_version": 2, "encryption": {"scheme": "rot13", "recipient": "age1"}}),
         "scheme 'rot13' is not known"),
        (json.dumps(CONFIG | {"format_version": 2, "encryption": {"scheme": "age-x25519", "recipient": "x"}}),
         "recipient 'x' is not an age X25519 recipient"),
        (json.dumps(CONFIG | {"format_version": "1"}), "format_version '1' is not an integer"),
        (json.dumps(CONFIG | {"format_version": True}), "is not an integer"),
        (json.dumps(CONFIG | {"key_ids": []}), "unknown field 'key_ids'"),
        (json.dumps(CONFIG | {"repository_id": "../x"}), "is not 32 hex digits"),
        (json.dumps(CONFIG | {"created_at": "yesterday"}), "Invalid isoformat"),
        (json.dumps(CONFIG)[:-1] + ', "format_version": 1}', "appears twice"),
        ('{"format_version": NaN}', "NaN is not a JSON value"),
        ("[1]", "expected a JSON object"),
        ("\xff", "config"),
        ("[" * 100_000, "config"),
    ],
)
def test_the_config_is_parsed_strictly(text: str, problem: str) -> None:
    storage = MemoryStorage()
    save_bytes(storage, "config", text.encode("utf-8", "surrogateescape"))
    with pytest.raises(IntegrityError, match=problem) as info:
        open_config(storage)
    assert "\n" not in str(info.value) and str(info.value).startswith("repository config ")


def test_every_repository_command_refuses_an_unknown_version(tmp_path: Path, capsys: Any) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "config").write_text(json.dumps(CONFIG | {"format_version": 7}))
    for command in (["list"], ["list", "--rebuild"], ["verify", SET], ["show", SET]):
        assert main([*command, "--storage", str(store)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "format version 7 is not supported" in err, command


def test_a_storage_without_config_keeps_working(tmp_path: Path) -> None:
    storage = LocalStorage(str(tmp_path / "store"))
    assert open_config(storage) is None and not (tmp_path / "store" / "config").exists()
    made = open_config(storage, create=True)
    assert made is not None and open_config(storage, create=True) == made


# -- the repository id in manifests and catalog rows ---------------------------------------------


def manifest(repository_id: str | None) -> Manifest:
    return Manifest(SET, "2026-11-28T10:00:00Z", "2026-11-28T10:00:01Z", PauseWindow(), [], Timings(),
                    [TargetRecord("a", "sqlite")], repository_id=repository_id)  # fmt: skip


def test_the_manifest_and_catalog_carry_the_repository_id(tmp_path: Path) -> None:
    storage = MemoryStorage()
    rid = str(CONFIG["repository_id"])
    path = write_manifest(storage, manifest(rid))
    data = json.loads(load_bytes(storage, path, 1 << 20))
    assert data["repository_id"] == rid
    assert parse_manifest(json.dumps(data).encode(), path).repository_id == rid
    old = manifest(None).to_dict()
    assert "repository_id" not in old and parse_manifest(json.dumps(old).encode(), path).repository_id is None
    for bad in ("../x", 5, None, "AB" * 16):
        with pytest.raises(IntegrityError, match="repository_id"):
            parse_manifest(json.dumps(data | {"repository_id": bad}).encode(), path)
    catalog = Catalog(str(tmp_path / "catalog.db"))
    catalog.rebuild(storage)
    assert catalog.get(SET).repository_id == rid  # type: ignore[union-attr]
    catalog.begin("20261128T100500Z-0000", "2026-11-28T10:05:00Z", ["a"], None, rid)
    assert [row.repository_id for row in catalog.list()] == [rid, rid]


# -- the default catalog of a remote repository ---------------------------------------------------


@pytest.fixture
def memtest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, MemoryStorage]:
    """A ``memtest://`` scheme of in-memory storages (one per URL), and a private state home."""
    stores: dict[str, MemoryStorage] = {}

    def factory(url: str, options: Mapping[str, Any]) -> MemoryStorage:
        if options:
            raise UsageError(f"storage {url}: options {sorted(options)}")
        return stores.setdefault(url, MemoryStorage(url))

    monkeypatch.setitem(registry._REGISTRY, "memtest", registry._Entry(factory, None))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return stores


def test_a_remote_repository_has_a_local_private_catalog(
    memtest: dict[str, MemoryStorage], tmp_path: Path, capsys: Any
) -> None:
    local = LocalStorage(str(tmp_path / "store"))
    assert default_catalog(local) == str(tmp_path / "store" / "catalog.db")  # as always
    remote = registry.open_storage("memtest://bucket/prefix")
    path = Path(default_catalog(remote))
    assert path.is_relative_to(tmp_path / "state" / "txbackup") and path.name == "catalog.db"
    assert "memtest" not in str(path)
    assert default_catalog(registry.open_storage("memtest://b/other")) != str(path)
    # a cluster file naming a bucket: the catalog is local, list --rebuild reads the bucket
    (tmp_path / "cluster.toml").write_text(
        '[storage]\npath = "memtest://bucket/prefix"\n'
        f'[[targets]]\nname = "a"\nkind = "sqlite"\npath = "{tmp_path / "a.db"}"\n'
    )
    assert load_cluster(tmp_path / "cluster.toml").catalog == str(path)
    write_manifest(memtest["memtest://bucket/prefix"], manifest(None))
    assert main(["list", "-c", str(tmp_path / "cluster.toml"), "--rebuild", "--json"]) == 0
    assert SET in capsys.readouterr().out
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not any(name.endswith("catalog.db") for name in memtest["memtest://bucket/prefix"].objects)


def test_storage_options_are_declared_once(memtest: dict[str, MemoryStorage], tmp_path: Path) -> None:
    assert parse_storage_options(["region=eu-west-1", "path_style=true"]) == {
        "region": "eu-west-1", "path_style": True,
    }  # fmt: skip
    bad_options = (("colour=red", "KEY one of"), ("path_style=yes", "true or false"), ("x", "KEY=VALUE"))
    for bad, problem in bad_options:
        with pytest.raises(UsageError, match=problem):
            parse_storage_options([bad])
    (tmp_path / "cluster.toml").write_text(
        '[storage]\npath = "memtest://b/p"\nregion = "eu-west-1"\n'
        f'[[targets]]\nname = "a"\nkind = "sqlite"\npath = "{tmp_path / "a.db"}"\n'
    )
    with pytest.raises(UsageError, match=r"options \['region'\]"):  # they reach the backend
        load_cluster(tmp_path / "cluster.toml")


# -- agents check the repository id at preflight --------------------------------------------------

TOKEN = "unit-test-token-0123456789"


@pytest.fixture
def agent_of(tmp_path: Path) -> Iterator[Any]:
    """Start an agent (no Cassandra: its nodetool fails) on a given storage."""
    servers: list[server.AgentServer] = []

    def start(storage: Any) -> str:
        calls: list[list[str]] = []
        node = Node(NodeConfig(nodetool=["false"], data_dirs=[tmp_path]), storage)
        node.nodetool = lambda *args, timeout=None: calls.append(list(args)) or ""  # type: ignore[method-assign,func-returns-value]
        httpd = server.AgentServer(("127.0.0.1", 0), node, TOKEN)
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(httpd)
        start.calls = calls  # type: ignore[attr-defined]
        return f"127.0.0.1:{httpd.port}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def test_an_agent_of_another_repository_is_refused_at_preflight(agent_of: Any, tmp_path: Path) -> None:
    ours = init_repository(LocalStorage(str(tmp_path / "ours")))
    theirs = init_repository(LocalStorage(str(tmp_path / "theirs")))
    address = agent_of(LocalStorage(str(tmp_path / "theirs")))
    client = AgentClient(address, culprit='target "c"', token=TOKEN)
    with pytest.raises(TxbackupError) as info:
        client.call("preflight", {"keyspaces": ["ks"], "method": "snapshot",
                                  "repository_id": ours.repository_id})  # fmt: skip
    message = str(info.value)
    assert "\n" not in message and ours.repository_id in message and theirs.repository_id in message
    assert agent_of.calls == []  # refused before the node was touched
    with pytest.raises(TxbackupError, match="has no repository config"):
        AgentClient(agent_of(LocalStorage(str(tmp_path / "none"))), culprit="c", token=TOKEN).call(
            "preflight", {"keyspaces": ["ks"], "method": "snapshot", "repository_id": ours.repository_id}
        )
    with pytest.raises(TxbackupError, match="repository_id: 32 lowercase hex digits"):
        client.call("preflight", {"keyspaces": ["ks"], "method": "snapshot", "repository_id": "../x"})


def test_the_cassandra_target_sends_the_engine_repository_id(agent_of: Any, tmp_path: Path) -> None:
    ours = init_repository(LocalStorage(str(tmp_path / "ours")))
    theirs = init_repository(LocalStorage(str(tmp_path / "theirs")))
    address = agent_of(LocalStorage(str(tmp_path / "theirs")))
    target = CassandraTarget("c", [AgentClient(address, culprit='target "c"', token=TOKEN)], ["ks"],
                             "coordinator", 10.0, "snapshot", "import", 60.0, TOKEN, None)  # fmt: skip
    target.expect_repository(ours.repository_id)
    with pytest.raises(TxbackupError, match=f"repository {theirs.repository_id}, not {ours.repository_id}"):
        target.preflight()
    assert agent_of.calls == []



async def test_a_backup_with_an_agent_of_another_repository_pauses_nothing(
    app: SampleServer, agent_of: Any, tmp_path: Path
) -> None:
    ours = LocalStorage(str(tmp_path / "ours"))
    made = init_repository(ours)
    theirs = init_repository(LocalStorage(str(tmp_path / "theirs")))
    address = agent_of(LocalStorage(str(tmp_path / "theirs")))
    target = CassandraTarget("c", [AgentClient(address, culprit='target "c"', token=TOKEN)], ["ks"],
                             "coordinator", 10.0, "snapshot", "import", 60.0, TOKEN, None)  # fmt: skip
    pauses: list[object] = []
    original = app.gate.pause

    async def counted(*args: Any, **kwargs: Any) -> None:
        pauses.append(args)
        await original(*args, **kwargs)

    app.gate.pause = counted  # type: ignore[method-assign]
    plan = BackupPlan(
        fleet=Fleet([Endpoint("127.0.0.1", app.port)]),
        targets=[target],
        storage=ours,
        catalog=Catalog(str(tmp_path / "catalog.db")),
    )
    with pytest.raises(TxbackupError) as info:
        await run_backup(plan)
    assert made.repository_id in str(info.value) and theirs.repository_id in str(info.value)
    assert pauses == [] and agent_of.calls == [] and plan.catalog.list() == []
    assert list_names(ours, "") == ["config"]


def test_the_agent_opens_its_storage_by_url_with_options(
    memtest: dict[str, MemoryStorage], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["agent", "--no-token", "--port", "0", "--cassandra-data", str(tmp_path),
            "--storage", "memtest://bucket/p"]  # fmt: skip
    # the memtest factory refuses any option, naming it: the option reached open_storage
    assert main([*argv, "--storage-option", "region=eu-west-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "options ['region']" in err
    assert main([*argv, "--storage-option", "password=x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--storage-option 'password': expected KEY=VALUE" in err


async def test_the_first_committed_backup_makes_an_old_storage_a_repository(
    app: SampleServer, tmp_path: Path
) -> None:
    db = tmp_path / "a.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    storage = LocalStorage(str(tmp_path / "store"))
    plan = BackupPlan(
        fleet=Fleet([Endpoint("127.0.0.1", app.port)]),
        targets=[build_target({"name": "a", "kind": "sqlite", "path": str(db)}, 0)],
        storage=storage,
        catalog=Catalog(str(tmp_path / "catalog.db")),
    )
    first = await run_backup(plan)  # a storage from before configs: no id yet
    made = read_config(storage)
    assert first.repository_id is None and made is not None
    second = await run_backup(plan)
    assert second.repository_id == made.repository_id
    assert [row.repository_id for row in plan.catalog.list()] == [None, made.repository_id]
    assert read_config(storage) == made


def test_a_set_copied_in_from_another_repository_is_refused_by_verify() -> None:
    from txbackup.engine.artifacts import verify_set

    storage = MemoryStorage()
    here = init_repository(storage).repository_id
    other = "ab" * 16
    copied = manifest(other)
    write_manifest(storage, copied)
    with pytest.raises(IntegrityError, match=f"made in repository {other}.*is repository {here}"):
        verify_set(storage, copied)
    assert verify_set(storage, manifest(here)) == []
    assert verify_set(storage, manifest(None)) == []  # sets from before repository ids
