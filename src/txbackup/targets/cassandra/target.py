"""Apache Cassandra clusters (kind ``cassandra``), through one ``txbackup agent`` per node.

Settings::

    [[targets]]
    name = "cassandra"
    kind = "cassandra"
    agents = ["10.0.0.5:7480", "10.0.0.6:7480", "10.0.0.7:7480"]  # one per node, every node
    keyspaces = ["bank"]                   # required; the ScalarDB namespaces
    coordinator_keyspace = "coordinator"   # ScalarDB's; included when it exists ("" for none)
    system_keyspace = "scalardb"           # ScalarDB's metadata; included when it exists ("" for none)
    token_file = "/run/secrets/agent-token"   # or token_env = "TXBACKUP_AGENT_TOKEN"
    tls = true                             # agents serve HTTPS; optional:
    tls_ca_file = "/etc/txbackup/ca.pem"   #   the CA that signed them
    tls_server_name = "agent.internal"     #   the name in their certificates
    snapshot_timeout = "20s"               # keep it below [backup] capture_deadline
    method = "snapshot"                    # or "stop": the cold method (below)
    restore_with = "import"                # or "sstableloader": restores into another layout
    start_timeout = "5m"                   # method "stop": how long nodes may take to come back

Preflight (nothing paused yet): every agent answers, they form one cluster,
every node has one, and each agent's own storage holds the repository id the
engine expects (``expect_repository``): an agent pointed at another repository
is refused, naming both ids. ScalarDB's coordinator and system keyspaces are
taken where they exist and never demanded: with multi-storage the coordinator
lives in one storage only (the cluster file's ``[scalardb]`` table says which).

Capture (inside the pause): every agent snapshots ``<set id>`` of ``<keyspaces>
<coordinator> <system>`` on its node, all in parallel, through its live JMX
connection (``txbackup.agent.jmx``; ``nodetool snapshot`` when it has none); a
snapshot flushes the memtables first (the agents flushed them at preflight
too, so little is left) and is a set of hard links: tens of milliseconds
through JMX, about a second through nodetool (a JVM start), whatever the data
size. The position records how each node took it (``snapshots``). If one node
fails (down, nodetool error, timeout) the capture fails at once, so the
engine unpauses; the snapshots taken on the other nodes are cleared in the
background (the command waits for that before it exits). Only the set's own
tag is ever cleared: older snapshots are never touched.

Export (after the unpause): every agent uploads its snapshot's files to the
storage itself (the agents need the storage too), into the cluster's
content-addressed store ``cassandra/<cluster name>/sstables/<sha256>``: an
SSTable file is stored once and later sets only reference it (differential,
like Medusa). The set's artifacts are small: ``nodes/<address>.json`` (each
node's identity, tokens and file list with SHA-256 and size), ``schema.json``
and ``schema.cql`` (``DESCRIBE KEYSPACE`` of every keyspace, as the server
prints it). The position records the snapshot tag, the cluster name,
partitioner and version, and the token ring (every node's tokens).
Release (after the commit, or after a failure): ``nodetool clearsnapshot -t
<set id>`` on every node.

The cold method (``method = "stop"``, the guide's second way): inside the
pause, every node is drained and stopped (the agent's ``--stop-cmd``), its
SSTables hard-linked into ``snapshots/<set id>`` by the agent, and started
again (``--start-cmd``); the capture returns once every node answers CQL.
Raise ``[backup] capture_deadline`` and the applications' pause lease
accordingly (a minute or more). If anything fails, every node is started again.

Restore: the engine has verified the set's artifacts, and the coordinator reads
the position, every node's file list and ``schema.json`` before contacting any
agent: each value typed and checked, every keyspace one of the target's (its
``keyspaces`` and the coordinator's), every schema statement one the agents
would run (``txbackup.agent.schema``); anything else is refused in one line
naming the artifact. Each agent then fetches
its files into a staging folder beside its data directory, checking every
file's SHA-256 (a corrupt or missing SSTable is named and nothing is changed),
the first agent creates the missing keyspaces, types and tables from
``schema.json`` (and, with ``--force``, truncates the existing ones; without
it a non-empty table is refused), then:

- same shape (the same number of nodes with the same tokens, as after losing
  the data of the whole cluster): every node imports the files of the node
  that had its tokens with ``nodetool import``;
- another shape (other node count or tokens): ``restore_with =
  "sstableloader"`` streams the files of every backed-up node through
  ``sstableloader`` into the new ring (each replica's copy is loaded; the
  newest cells win). Without it such a restore is refused, naming the tokens a
  same-shape cluster would need (``initial_token`` of every node).

``--to NAME=HOST:PORT,HOST:PORT`` restores through other agents (another cluster).

By hand, for one node (same shape)::

    # the file list of the node that had these tokens: nodes/<address>.json in the set
    zstd -d < STORE/<sha256> > /staging/<ks>/<table>/<name>   # for every file, checking sha256sum
    cqlsh -f schema.cql                                        # if the schema is missing
    nodetool import <ks> <table> /staging/<ks>/<table>
    # another shape: sstableloader -d <host,...> /staging/<ks>/<table>
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

from txbackup import strictjson
from txbackup.agent.blobs import BlobRef
from txbackup.agent.client import AgentClient, AgentTls
from txbackup.agent.schema import checked_statements
from txbackup.durations import MAX_CALL_S
from txbackup.errors import TargetError, TxbackupError, UsageError
from txbackup.repository.layout import is_store, store_prefix
from txbackup.safepaths import shown
from txbackup.secrets import resolve_secret
from txbackup.settings import (
    check_keys,
    setting_bool,
    setting_duration,
    setting_opt_str,
    setting_optional_name,
    setting_str,
    setting_str_list,
)
from txbackup.targets.base import ArtifactReader, ArtifactWriter, Recorded, Scope

KIND = "cassandra"
_KEYS = {
    "agents",
    "keyspaces",
    "coordinator_keyspace",
    "system_keyspace",
    "token_env",
    "token_file",
    "tls",
    "tls_ca_file",
    "tls_server_name",
    "snapshot_timeout",
    "method",
    "restore_with",
    "start_timeout",
}
SCHEMA_ARTIFACT = "schema.json"
FILE_FIELDS = ("keyspace", "table", "name", "sha256")
"""The string fields of a file list's entry (with ``size``) that a restore hands the agents."""
MAX_LISTING_BYTES = 1 << 30
"""The largest file list or schema a restore reads (a big node's list is a few MB)."""
METHODS = ("snapshot", "stop")
RESTORE_WITH = ("import", "sstableloader")
log = logging.getLogger("txbackup.targets.cassandra.target")
T = TypeVar("T")


def _each(
    clients: Sequence[AgentClient],
    fn: Callable[[AgentClient], T],
    *,
    name: str,
) -> list[T]:
    """``fn(client)`` for every client in parallel; every result, in order, or one
    ``TargetError`` listing every failure."""
    if not clients:
        return []
    with ThreadPoolExecutor(max_workers=len(clients), thread_name_prefix=name) as pool:
        futures = [pool.submit(fn, c) for c in clients]
        wait(futures)
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        for exc in errors:
            if not isinstance(exc, Exception):
                raise exc  # type: ignore[misc]
        if len(errors) == 1:
            raise errors[0]  # type: ignore[misc]
        raise TargetError("; ".join(str(e) for e in errors))
    return [f.result() for f in futures]


class CassandraCapture:
    """Snapshot ``tag`` on every node; exported by the agents; cleared on release."""

    def __init__(self, target: CassandraTarget, tag: str, offline: bool = False) -> None:
        self.target = target
        self.tag = tag
        self.offline = offline
        self._position: dict[str, Any] = {"tag": tag, "method": target.method}
        self._released = False
        self._lock = threading.Lock()
        self.snapshots: dict[str, dict[str, Any]] = {}

    def position(self) -> Mapping[str, Any]:
        return dict(self._position) | ({"snapshots": self.snapshots} if self.snapshots else {})

    def export(self, out: ArtifactWriter) -> None:
        target = self.target
        keyspaces = target.present_keyspaces

        def upload(client: AgentClient, store: str) -> dict[str, Any]:
            return client.call("upload", {"tag": self.tag, "keyspaces": keyspaces, "store": store})

        def schema() -> Any:
            return target.clients[0].call("schema", {"keyspaces": keyspaces})["statements"]

        cluster = target.cluster_name
        if cluster is None:  # a capture without a preflight: the store's name comes first
            infos = _each(target.clients, lambda c: c.call("info"), name="cassandra-info")
            cluster = str(infos[0]["node"]["cluster_name"])
            statements = schema()
            uploads = _each(
                target.clients, lambda c: upload(c, store_prefix(cluster)), name="cassandra-upload"
            )
        else:
            # the cluster is known since the preflight: node info, schema and uploads at once (on a
            # second backup, with little to upload, the calls around it are a good part of the time)
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="cassandra-export") as pool:
                infos_future = pool.submit(
                    _each, target.clients, lambda c: c.call("info"), name="cassandra-info"
                )
                schema_future = pool.submit(schema)
                uploads = _each(
                    target.clients, lambda c: upload(c, store_prefix(cluster)), name="cassandra-upload"
                )
                infos, statements = infos_future.result(), schema_future.result()
            found = {str(i["node"]["cluster_name"]) for i in infos}
            if found != {cluster}:
                raise self.target.error(
                    f"the agents now serve cluster {', '.join(sorted(found))}, not {cluster}"
                )
        store = store_prefix(cluster)
        nodes = []
        for client, info, uploaded in zip(target.clients, infos, uploads, strict=True):
            node = dict(info["node"])
            artifact = f"nodes/{node['address']}.json"
            with out.open(artifact) as stream:
                stream.write(json.dumps({"node": node, "files": uploaded["files"]}, indent=1).encode())
            nodes.append(
                {
                    "agent": client.address,
                    "address": node["address"],
                    "host_id": node["host_id"],
                    "datacenter": node["datacenter"],
                    "rack": node["rack"],
                    "tokens": node["tokens"],
                    "files_artifact": artifact,
                    "files": uploaded["file_count"],
                    "bytes": uploaded["bytes"],
                    "uploaded_files": uploaded["uploaded_files"],
                    "uploaded_bytes": uploaded["uploaded_bytes"],
                    # agents older than the hash cache hash everything
                    "hashed_bytes": uploaded.get("hashed_bytes", uploaded["bytes"]),
                }
            )
        with out.open("schema.json") as stream:
            stream.write(json.dumps(statements, indent=1).encode())
        with out.open("schema.cql") as stream:
            stream.write("\n\n".join(s["statement"] for s in statements).encode() + b"\n")
        first = infos[0]["node"]
        self._position.update(
            cluster_name=cluster,
            partitioner=first["partitioner"],
            release_version=first["release_version"],
            keyspaces=keyspaces,
            store=store,
            nodes=nodes,
        )

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self.target.clear_everywhere(self.tag, self.target.clients, offline=self.offline)


class CassandraTarget:
    kind = KIND

    def __init__(
        self,
        name: str,
        clients: list[AgentClient],
        keyspaces: list[str],
        coordinator_keyspace: str,
        snapshot_timeout_s: float,
        method: str,
        restore_with: str,
        start_timeout_s: float,
        token: str | None,
        tls: AgentTls | None,
        system_keyspace: str = "",
    ) -> None:
        self.name = name
        self.clients = clients
        self.keyspaces = keyspaces
        self.coordinator_keyspace = coordinator_keyspace
        self.system_keyspace = system_keyspace
        self.absent: set[str] | None = None
        """ScalarDB keyspaces the last preflight found missing (left out of snapshots);
        None before any preflight."""
        self.snapshot_timeout_s = snapshot_timeout_s
        self.method = method
        self.restore_with = restore_with
        self.start_timeout_s = start_timeout_s
        self.token = token
        self.tls = tls
        self.label = f'target "{name}"'
        self.repository_id: str | None = None
        """The repository the agents must write to (``expect_repository``)."""
        self.cluster_name: str | None = None
        """The agents' cluster, as the last preflight found it."""

    @property
    def all_keyspaces(self) -> list[str]:
        """The configured keyspaces, then ScalarDB's coordinator and system keyspaces."""
        scalardb = dict.fromkeys((self.coordinator_keyspace, self.system_keyspace))
        return [*self.keyspaces, *(k for k in scalardb if k and k not in self.keyspaces)]

    def scalardb_found(self) -> set[str]:
        """ScalarDB's coordinator and system keyspaces the last preflight found."""
        return {k for k in (self.coordinator_keyspace, self.system_keyspace) if k} - (self.absent or set())

    @property
    def present_keyspaces(self) -> list[str]:
        """What a snapshot takes: :attr:`all_keyspaces` but ScalarDB's that do not exist. In
        multi-storage the coordinator lives in one storage only, and ScalarDB before 3.17 keeps
        no system keyspace on Cassandra (table metadata is Cassandra's own schema)."""
        if self.absent is None:
            self.absent = self._missing_scalardb()
        return [k for k in self.all_keyspaces if k not in self.absent]

    def _missing_scalardb(self) -> set[str]:
        """ScalarDB's keyspaces (not configured ones) some node lacks, asked now: only for a
        capture without a preflight (the engine always runs one first, outside the pause)."""
        optional = sorted({self.coordinator_keyspace, self.system_keyspace} - set(self.keyspaces) - {""})
        if not optional:
            return set()
        body = {"keyspaces": optional}
        answers = _each(self.clients, lambda c: c.call("info", body), name="cassandra-info")
        return {str(k) for a in answers for k in a.get("missing_keyspaces") or [] if k in optional}

    def error(self, message: str) -> TargetError:
        return TargetError(f"{self.label}: {message}")

    def describe(self) -> Mapping[str, Any]:
        return {
            "kind": KIND,
            "agents": [c.address for c in self.clients],
            "keyspaces": list(self.keyspaces),
            "coordinator_keyspace": self.coordinator_keyspace,
            "system_keyspace": self.system_keyspace,
            "method": self.method,
            "restore_with": self.restore_with,
        }

    def client(self, address: str) -> AgentClient:
        return AgentClient(address, culprit=self.label, token=self.token, tls=self.tls)

    # -- preflight -------------------------------------------------------------------------------
    def expect_repository(self, repository_id: str | None) -> None:
        """The engine's repository id: each agent checks at preflight that its own storage
        is that repository (``repository.config.RepositoryAware``)."""
        self.repository_id = repository_id

    def preflight(self) -> None:
        body: dict[str, Any] = {"keyspaces": self.all_keyspaces, "method": self.method}
        if self.repository_id is not None:
            body["repository_id"] = self.repository_id
        answers = _each(self.clients, lambda c: c.call("preflight", body), name="cassandra-preflight")
        clusters = {str(a["node"]["cluster_name"]) for a in answers}
        if len(clusters) > 1:
            raise self.error(f"the agents belong to different clusters: {', '.join(sorted(clusters))}")
        by_host: dict[str, str] = {}
        absent: set[str] = set()
        for client, answer in zip(self.clients, answers, strict=True):
            host_id = str(answer["node"]["host_id"])
            if host_id in by_host:
                raise self.error(
                    f"agents {by_host[host_id]} and {client.address} serve the same node ({host_id})"
                )
            by_host[host_id] = client.address
            missing = [str(k) for k in answer.get("missing_keyspaces") or []]
            optional = {self.coordinator_keyspace, self.system_keyspace} - set(self.keyspaces)
            absent |= {k for k in missing if k in optional}
            missing = [k for k in missing if k not in optional]
            if missing:
                raise self.error(
                    f"agent {client.address}: keyspace {missing[0]} does not exist on node "
                    f"{answer['node']['address']}"
                )
        self.absent = absent
        self.cluster_name = clusters.pop() if clusters else None
        ring = {str(p) for a in answers for p in a["node"].get("ring", [])}
        served = {str(a["node"]["address"]) for a in answers}
        unserved = sorted(ring - served)
        if unserved:
            raise self.error(
                f"node(s) {', '.join(unserved)} of the cluster have no agent in the cluster file: "
                "every node needs one"
            )

    # -- capture ---------------------------------------------------------------------------------
    def capture(self, set_id: str) -> CassandraCapture:
        if self.method == "stop":
            return self._capture_cold(set_id)
        # the agent gives up on nodetool at the same deadline: the clearing after a
        # failure never waits long for a stuck node
        body = {"tag": set_id, "keyspaces": self.present_keyspaces, "timeout_s": self.snapshot_timeout_s}
        pool = ThreadPoolExecutor(max_workers=len(self.clients), thread_name_prefix="cassandra-snapshot")
        futures = {pool.submit(c.call, "snapshot", body): c for c in self.clients}
        pool.shutdown(wait=False)
        done, pending = wait(futures, timeout=self.snapshot_timeout_s, return_when=FIRST_EXCEPTION)
        failed = [(futures[f], f.exception()) for f in done if f.exception() is not None]
        if failed or pending:
            # unpause first: clearing what was taken happens in the background
            self._clear_when_done(set_id, futures)
            if failed:
                client, exc = failed[0]
                raise exc if isinstance(exc, TxbackupError) else self.error(f"agent {client.address}: {exc}")
            late = ", ".join(sorted(futures[f].address for f in pending))
            raise self.error(f"no snapshot within {self.snapshot_timeout_s:g} s from agent(s) {late}")
        capture = CassandraCapture(self, set_id)
        # how each node took it (the agent's live JMX connection, or nodetool when it had none)
        capture.snapshots = {futures[f].address: _how_taken(f.result()) for f in done}
        return capture

    def _clear_when_done(self, tag: str, futures: Mapping[Future[dict[str, Any]], AgentClient]) -> None:
        """Once every snapshot call has ended, clear ``tag`` on the nodes where it may exist.
        A non-daemon thread: the process waits for it before it exits."""

        def work() -> None:
            wait(futures)
            maybe = [c for f, c in futures.items() if f.exception() is None or _maybe_taken(f.exception())]
            self.clear_everywhere(tag, maybe)

        threading.Thread(target=work, name=f"cassandra-clear-{tag}", daemon=False).start()

    def clear_everywhere(self, tag: str, clients: Sequence[AgentClient], offline: bool = False) -> None:
        body = {"tag": tag, "keyspaces": self.present_keyspaces, "offline": offline}

        def clear(client: AgentClient) -> None:
            try:
                client.call("clear", body)
            except TxbackupError as exc:
                log.warning("snapshot %s not cleared: %s", tag, exc)

        _each(list(clients), clear, name="cassandra-clear")

    def _capture_cold(self, set_id: str) -> CassandraCapture:
        """Drain and stop every node, hard-link its SSTables, start it again."""
        keyspaces = self.present_keyspaces
        try:
            _each(self.clients, lambda c: c.call("node/stop"), name="cassandra-stop")
            _each(
                self.clients,
                lambda c: c.call("node/snapshot-offline", {"tag": set_id, "keyspaces": keyspaces}),
                name="cassandra-offline-snapshot",
            )
        except BaseException:
            self._start_all()
            self.clear_everywhere(set_id, self.clients, offline=True)
            raise
        self._start_all(raise_errors=True)
        return CassandraCapture(self, set_id, offline=True)

    def _start_all(self, raise_errors: bool = False) -> None:
        body = {"wait_s": self.start_timeout_s}

        def start(client: AgentClient) -> None:
            client.call("node/start", body)

        try:
            _each(self.clients, start, name="cassandra-start")
        except TxbackupError as exc:
            if raise_errors:
                raise
            log.error("could not start every node again: %s", exc)

    # -- restore ---------------------------------------------------------------------------------
    def check_record(self, record: Recorded) -> None:
        """Every keyspace the set names (position, description) is a configured one or
        the coordinator's, and the position has the shape a restore reads (snapshot tag,
        store, nodes each with its tokens and a ``nodes/<address>.json`` of the set): the
        file lists and ``schema.json`` are read and checked the same way, before any
        agent is contacted (``_restorable``)."""
        _restorable_position(Scope(self.label, record), self.all_keyspaces)

    def _restorable(self, src: ArtifactReader) -> _Restorable:
        """What the set asks to restore, read and checked without contacting anything:
        the position, every backed-up node's file list and ``schema.json`` (untrusted:
        a value of the wrong type or a keyspace this target does not cover is refused
        in one line naming the artifact)."""
        scope = Scope(self.label, Recorded.of_reader(src))
        found = _restorable_position(scope, self.all_keyspaces)
        keyspaces = set(found.keyspaces)
        for node in found.nodes:
            listing = scope.mapping(_read_json(scope, src, node.files_artifact), node.files_artifact)
            entries = scope.sequence(listing.get("files"), f"{node.files_artifact}: files")
            found.files_of[node.address] = [
                _file_entry(scope, f"{node.files_artifact}: file #{i + 1}", entry, keyspaces, node.address)
                for i, entry in enumerate(entries)
            ]
        statements = scope.sequence(_read_json(scope, src, SCHEMA_ARTIFACT), SCHEMA_ARTIFACT)
        try:  # the agent checks them again before running any
            checked_statements(statements, found.keyspaces)
        except UsageError as exc:
            scope.fail(f"{SCHEMA_ARTIFACT}: {exc}")
        found.statements = list(statements)
        found.tables = sorted(f"{s['keyspace']}.{s['name']}" for s in statements if s["type"] == "table")
        return found

    def restore(self, src: ArtifactReader, dest: Mapping[str, str] | None, force: bool) -> None:
        found = self._restorable(src)  # everything checked before any agent is contacted
        clients = self.clients
        if dest and dest.get("dsn"):
            clients = [self.client(a.strip()) for a in dest["dsn"].split(",") if a.strip()]
            if not clients:
                raise UsageError(f"{self.label}: --to expects agents HOST:PORT,HOST:PORT")
        tag, store, keyspaces, tables = found.tag, found.store, found.keyspaces, found.tables
        infos = _each(clients, lambda c: _node_info(c, self.label), name="cassandra-info")
        assignment, mode = self._plan(found.nodes, clients, infos)
        journal = src.journal
        schema_done = journal.is_done("schema")
        if not schema_done:
            # refuse a non-empty destination before fetching anything
            clients[0].call("restore/check", {"keyspaces": keyspaces, "tables": tables, "force": force})
        # a resumed restore skips the nodes done before (a step per node, marked once done)
        pending = [c for c in clients if not journal.is_done(f"{mode}/{c.address}")]

        def prepare(client: AgentClient) -> None:
            files = [f for address in assignment[client.address] for f in found.files_of[address]]
            client.call("restore/prepare", {"set_id": tag, "store": store, "files": files})

        def place(client: AgentClient) -> None:
            if mode == "import":
                client.call("restore/import", {"set_id": tag})
            else:
                client.call("restore/load", {"set_id": tag})  # to the agent's own node
            journal.mark_done(f"{mode}/{client.address}", {"nodes": assignment[client.address]})

        try:
            _each(pending, prepare, name="cassandra-prepare")
            if not schema_done:
                body = {
                    "keyspaces": keyspaces,
                    "statements": found.statements,
                    "tables": tables,
                    "force": force,
                }
                done = clients[0].call("restore/schema", body)
                skipped_objects = done.get("skipped")
                for skipped in skipped_objects if isinstance(skipped_objects, list) else []:
                    log.warning(
                        "%s: %s not restored (create it by hand: see schema.cql)", self.label, skipped
                    )
                journal.mark_done("schema", done)
            _each(pending, place, name=f"cassandra-{mode}")
        finally:
            _each(
                pending, lambda c: _quietly(c, "restore/cleanup", {"set_id": tag}), name="cassandra-cleanup"
            )

    def _plan(
        self, backup_nodes: Sequence[_BackedUp], clients: Sequence[AgentClient], infos: Sequence[_Node]
    ) -> tuple[dict[str, list[str]], str]:
        """Which backed-up nodes' files each agent restores, and how ("import" or "load")."""
        current = {i.tokens: c.address for c, i in zip(clients, infos, strict=True)}
        assignment: dict[str, list[str]] = {c.address: [] for c in clients}
        same_shape = len(backup_nodes) == len(clients)
        for node in backup_nodes:
            agent = current.get(node.tokens)
            if agent is None:
                same_shape = False
                break
            assignment[agent].append(node.address)
        if same_shape:
            return assignment, "import"
        if self.restore_with != "sstableloader":
            wanted = "; ".join(f"{n.address}: {_tokens_text(n.tokens)}" for n in backup_nodes)
            have = "; ".join(f"{i.address}: {_tokens_text(i.tokens)}" for i in infos)
            raise self.error(
                f"the cluster's token layout differs from the backup's, so its SSTables cannot be "
                f"imported node by node (backup: {len(backup_nodes)} node(s), {wanted}; cluster: "
                f"{len(infos)} node(s), {have}). Either restore into a cluster with the backup's "
                f'initial_token values, or set restore_with = "sstableloader" for target {self.name!r} '
                "to stream the data into this layout"
            )
        assignment = {c.address: [] for c in clients}
        for i, node in enumerate(backup_nodes):
            assignment[clients[i % len(clients)].address].append(node.address)
        return assignment, "load"


@dataclass(frozen=True)
class _Node:
    """A node as its agent describes it now (``info``)."""

    address: str
    tokens: tuple[str, ...]


@dataclass(frozen=True)
class _BackedUp(_Node):
    """A node of the set, as its position records it."""

    files_artifact: str


@dataclass
class _Restorable:
    """What a set asks a restore to do, checked (see ``CassandraTarget._restorable``)."""

    tag: str
    store: str
    keyspaces: list[str]
    nodes: list[_BackedUp]
    files_of: dict[str, list[dict[str, Any]]]
    statements: list[Any]
    tables: list[str]


def _restorable_position(scope: Scope, covered: Sequence[str]) -> _Restorable:
    """The position's snapshot, nodes and keyspaces (each one of ``covered``), typed;
    the description's keyspaces must be covered too."""
    record = scope.record
    for name in record.names:
        if name not in (SCHEMA_ARTIFACT, "schema.cql") and not (
            name.startswith("nodes/") and name.endswith(".json")
        ):
            scope.fail(f"artifact {shown(name, 80)} is not nodes/<address>.json, schema.json or schema.cql")
    position = record.position
    tag = scope.text(position.get("tag"), "the position's tag")
    store = scope.text(position.get("store"), "the position's store")
    where = "the position's keyspaces"
    keyspaces = scope.all_covered(
        scope.sequence(position.get("keyspaces"), where), covered, where, "keyspace"
    )
    where = "the position's nodes"
    nodes: list[_BackedUp] = []
    for i, node, address, artifact in _recorded_nodes(scope, position, record.names):
        if any(n.address == address for n in nodes):
            scope.fail(f"{where}: node {shown(address, 80)} appears twice")
        nodes.append(_BackedUp(address, _tokens(scope, node.get("tokens"), f"{where}[{i}].tokens"), artifact))
    if not tag or not store or not nodes:
        scope.fail("the set's position has no Cassandra snapshot (tag, store, nodes)")
    described = scope.description(KIND)
    if described is not None:
        scope.described_covered(
            described, "keyspaces", covered, "keyspace", coordinator="coordinator_keyspace"
        )
    return _Restorable(tag, store, keyspaces, nodes, {}, [], [])


def _recorded_nodes(
    scope: Scope, position: Mapping[str, Any], names: Collection[str]
) -> list[tuple[int, Mapping[str, Any], str, str]]:
    """The position's nodes (untrusted): index, entry, address and the set's artifact holding
    the node's file list, which must be one of ``names`` (a ``nodes/<address>.json``)."""
    where = "the position's nodes"
    found = []
    for i, value in enumerate(scope.sequence(position.get("nodes"), where)):
        node = scope.mapping(value, f"{where}[{i}]")
        address = scope.text(node.get("address"), f"{where}[{i}].address")
        artifact = scope.text(node.get("files_artifact"), f"{where}[{i}].files_artifact")
        if not artifact.startswith("nodes/") or artifact not in names:
            scope.fail(
                f"{where}[{i}]: file list {shown(artifact, 80)} is not one of the set's nodes/<address>.json"
            )
        found.append((i, node, address, artifact))
    return found


def blob_references(src: ArtifactReader, label: str) -> list[BlobRef]:
    """Every blob of the store that this target's record in a set references: the
    entries of each node's file list (``nodes/<address>.json``, read through ``src``:
    verified), typed; the store and the nodes from the position. Untrusted: a value of
    the wrong type is refused (``IntegrityError`` naming ``label`` and where); a digest
    that is not one is refused when the blob is named (``blob_name``). Needs no
    configuration (``verify`` without a cluster file, ``prune``)."""
    record = Recorded.of_reader(src)
    scope = Scope(label, record)
    store = scope.text(src.position.get("store"), "the position's store")
    if not is_store(store):
        scope.fail(f"the position's store {shown(store, 80)} is not cassandra/<cluster>/sstables")
    refs: list[BlobRef] = []
    for _, _, address, artifact in _recorded_nodes(scope, src.position, record.names):
        listing = scope.mapping(_read_json(scope, src, artifact), artifact)
        for j, value in enumerate(scope.sequence(listing.get("files"), f"{artifact}: files")):
            at = f"{artifact}: file #{j + 1}"
            entry = scope.mapping(value, at)
            sha = scope.text(entry.get("sha256"), f"{at}: sha256")
            size, stored = entry.get("size"), entry.get("stored_size")
            if type(size) is not int or size < 0:
                scope.fail(f"{at}: size {shown(size, 60)} is not a byte count")
            if stored is not None and (type(stored) is not int or stored < 0):
                scope.fail(f"{at}: stored_size {shown(stored, 60)} is not a byte count")
            keyspace, table, name = (_printable(entry.get(k)) for k in ("keyspace", "table", "name"))
            what = f"{keyspace}.{table} {name} (node {_printable(address)})"
            # an encrypted repository names a blob by its keyed id (HMAC), not its SHA-256
            blob = scope.text(entry.get("blob"), f"{at}: blob") if "blob" in entry else None
            refs.append(BlobRef(store, sha, size, stored, what, blob))
    return refs


def _printable(value: object) -> str:
    """A name from a file list for a message: as it is when plain, else quoted and cut."""
    if isinstance(value, str) and value.isprintable() and 0 < len(value) <= 200 and " " not in value:
        return value
    return shown(value, 60)


def _tokens(scope: Scope, value: object, where: str) -> tuple[str, ...]:
    """A node's tokens (strings or integers), as strings."""
    tokens = scope.sequence(value, where)
    for token in tokens:
        if isinstance(token, bool) or not isinstance(token, str | int):
            scope.fail(f"{where}: token {shown(token, 60)} is not a string or an integer")
    return tuple(str(t) for t in tokens)


def _file_entry(scope: Scope, where: str, value: object, keyspaces: set[str], node: str) -> dict[str, Any]:
    """One entry of a node's file list, as the agents take it (only the fields they read)."""
    entry = scope.mapping(value, where)
    found: dict[str, Any] = {k: scope.text(entry.get(k), f"{where}: {k}") for k in FILE_FIELDS}
    scope.covered(found["keyspace"], keyspaces, where, "keyspace")
    size = entry.get("size")
    if type(size) is not int or size < 0:
        scope.fail(f"{where}: size {shown(size, 60)} is not a byte count")
    if "blob" in entry:  # an encrypted repository's keyed blob name (the agent checks its shape)
        found["blob"] = scope.text(entry.get("blob"), f"{where}: blob")
    return {**found, "size": size, "node": node}


def _read_json(scope: Scope, src: ArtifactReader, name: str) -> Any:
    """The JSON document in artifact ``name`` (refused in one line if it is not one)."""
    with src.open(name) as stream:
        data = stream.read(MAX_LISTING_BYTES + 1)
    if len(data) > MAX_LISTING_BYTES:
        scope.fail(f"{name}: more than {MAX_LISTING_BYTES} bytes")
    try:
        return strictjson.loads(data)
    except ValueError as exc:  # too deep, duplicate keys, json.JSONDecodeError, UnicodeDecodeError
        scope.fail(f"{name}: not JSON ({' '.join(str(exc).split())[:200]})")


def _node_info(client: AgentClient, label: str) -> _Node:
    """The address and tokens of the node an agent serves."""
    answer = client.call("info")
    node = answer.get("node") if isinstance(answer, dict) else None
    address = node.get("address") if isinstance(node, dict) else None
    tokens = node.get("tokens") if isinstance(node, dict) else None
    if not isinstance(address, str) or not isinstance(tokens, list):
        raise TargetError(f"{label}: agent {client.address}: info has no node address and tokens")
    return _Node(address, tuple(str(t) for t in tokens))


def _tokens_text(tokens: Sequence[Any]) -> str:
    shown = ",".join(str(t) for t in tokens[:4])
    return shown + (f",... ({len(tokens)} tokens)" if len(tokens) > 4 else "")


def _how_taken(answer: Mapping[str, Any]) -> dict[str, Any]:
    """``{"via": "jmx" | "nodetool", "ms": N}`` from an agent's snapshot answer (older agents
    say nothing of ``via``: they had only nodetool)."""
    via, ms = answer.get("via", "nodetool"), answer.get("ms")
    return {
        "via": via if via in ("jmx", "nodetool") else "?",
        "ms": ms if type(ms) is int and 0 <= ms < 10**9 else None,
    }


def _maybe_taken(exc: BaseException | None) -> bool:
    """After a failed snapshot call, might the snapshot exist anyway? (Not if the agent
    said nodetool failed, e.g. the node is down; yes if we lost the connection.)"""
    return not (
        isinstance(exc, TargetError)
        and ("nodetool snapshot failed" in str(exc) or "snapshot failed (JMX)" in str(exc))
    )


def _quietly(client: AgentClient, call: str, body: Mapping[str, Any]) -> None:
    try:
        client.call(call, body)
    except TxbackupError as exc:
        log.warning("%s: %s", call, exc)


def from_config(name: str, conf: Mapping[str, Any]) -> CassandraTarget:
    culprit = f'target "{name}"'
    token = resolve_secret(conf, "token", culprit=culprit)  # first: a literal token is refused by name
    check_keys(conf, _KEYS, culprit=culprit)
    agents = setting_str_list(conf, "agents", culprit=culprit, required=True)
    keyspaces = setting_str_list(conf, "keyspaces", culprit=culprit, required=True)
    coordinator = setting_optional_name(conf, "coordinator_keyspace", "coordinator", culprit=culprit)
    system = setting_optional_name(conf, "system_keyspace", "scalardb", culprit=culprit)
    tls_flag = setting_bool(conf, "tls", False, culprit=culprit)
    ca_file = setting_opt_str(conf, "tls_ca_file", culprit=culprit)
    server_name = setting_opt_str(conf, "tls_server_name", culprit=culprit)
    tls = AgentTls(ca_file, server_name) if (tls_flag or ca_file or server_name) else None
    method = setting_str(conf, "method", "snapshot", culprit=culprit)
    if method not in METHODS:
        raise UsageError(f"{culprit}: method must be one of {', '.join(METHODS)}")
    restore_with = setting_str(conf, "restore_with", "import", culprit=culprit)
    if restore_with not in RESTORE_WITH:
        raise UsageError(f"{culprit}: restore_with must be one of {', '.join(RESTORE_WITH)}")
    # snapshots (and the cold method's restart) happen inside the pause: bounded like every wait on it
    snapshot_timeout = setting_duration(conf, "snapshot_timeout", "20s", culprit=culprit, maximum=MAX_CALL_S)
    start_timeout = setting_duration(conf, "start_timeout", "5m", culprit=culprit, maximum=MAX_CALL_S)
    for keyspace in [*keyspaces, *(k for k in (coordinator, system) if k)]:
        if not keyspace.replace("_", "").isalnum():
            raise UsageError(f"{culprit}: {keyspace!r} is not a keyspace name")
    clients = [AgentClient(a, culprit=culprit, token=token, tls=tls) for a in agents]
    return CassandraTarget(
        name,
        clients,
        keyspaces,
        coordinator,
        snapshot_timeout,
        method,
        restore_with,
        start_timeout,
        token,
        tls,
        system,
    )
