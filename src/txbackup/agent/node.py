"""What an agent does on its own Cassandra node: JMX, nodetool, snapshot folders, CQL, staging.

- Snapshots (and their clearing) go through the agent's live JMX connection
  (``jmx``: a long-lived helper, so a snapshot inside the pause is one call);
  when it is unavailable, through nodetool, with a warning.
- ``nodetool`` is run as configured (``--nodetool-cmd``, e.g. ``nodetool -h
  127.0.0.1 -p 7199`` or a wrapper script); its error is reduced to one line.
- Uploads hash each file once: the digests of unchanged SSTables come from the
  agent's hash cache (``hashcache``).
- Snapshot files are read from ``<data dir>/<keyspace>/<table>-<id>/snapshots/<tag>/``
  in every data directory.
- CQL (the Python ``cassandra-driver``, talking to this node only) reads the
  node's identity and tokens from ``system.local``, the schema with the
  server's ``DESCRIBE KEYSPACE``, and creates or empties tables at restore.
- Files being restored are fetched into ``<staging dir>/<set id>/<keyspace>/<table>/``
  (by default ``txbackup-restore`` next to the first data directory, on the
  same file system so that ``nodetool import`` moves them instead of copying).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from txbackup.agent import blobs, hashcache, jmx
from txbackup.agent.schema import checked_statements, is_system_keyspace
from txbackup.errors import IntegrityError, TargetError, TxbackupError, UsageError
from txbackup.repository.age import Identity, parse_recipient
from txbackup.repository.config import read_config
from txbackup.repository.crypto import BlobKey, Keyring, UserKey, unlock
from txbackup.safepaths import join_inside, name_problem, shown
from txbackup.storage.base import Storage

log = logging.getLogger("txbackup.agent")

Progress = Callable[[dict[str, Any]], None]

_TABLE_DIR = re.compile(r"^(?P<table>[A-Za-z0-9_]+)-(?P<id>[0-9a-f]{32})$")
_NAME = re.compile(r"^[A-Za-z0-9_]{1,222}$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,200}$")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_NODETOOL_ERROR = re.compile(r"^(?:error|nodetool): (?P<message>.+)$")
UPLOAD_THREADS = 4
"""Files an agent's upload stores at once."""
SNAPSHOT_FILES = ("manifest.json", "schema.cql")
"""Files of a snapshot folder that are not SSTable components (uploaded too)."""


def check_keyspace(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(f"{shown(name)} is not a Cassandra keyspace or table name")
    return name


def check_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise UsageError(f"{shown(tag)} is not a usable snapshot tag")
    return tag


@dataclass
class AgentKeys:
    """What an agent of an encrypted repository holds (``txbackup agent`` options): the
    blob key to name and store blobs (backups), and a user key that unwraps the
    repository identity (restores only: a backup needs no secret but the blob key)."""

    blob_key: BlobKey | None = None
    user_key: UserKey | None = None


@dataclass
class NodeConfig:
    """How the agent reaches its node (from ``txbackup agent``'s options)."""

    nodetool: list[str]
    data_dirs: list[Path]
    cql_host: str = "127.0.0.1"
    cql_port: int = 9042
    cql_user: str | None = None
    cql_password: str | None = None
    staging_dir: Path | None = None
    sstableloader: list[str] = field(default_factory=list)
    stop_command: list[str] = field(default_factory=list)
    start_command: list[str] = field(default_factory=list)
    state_dir: Path | None = None
    nodetool_timeout: float = 600.0
    jmx_host: str | None = None
    """The node's JMX address for the agent's live connection (None: nodetool only)."""
    jmx_port: int = 7199
    jmx_user: str | None = None
    jmx_password: str | None = None
    java: list[str] = field(default_factory=lambda: ["java"])
    """How to run the JVM of the JMX helper (a JDK: the helper is a single-file source program)."""

    @property
    def loader_can_log_in(self) -> bool:
        """Whether sstableloader can log in to CQL without the password on its command
        line: no login needed, or its command brings an ``AuthProvider`` (``-ap``)."""
        return self.cql_user is None or bool({"-ap", "--auth-provider"} & set(self.sstableloader))

    @property
    def staging(self) -> Path:
        if self.staging_dir is not None:
            return self.staging_dir
        return self.data_dirs[0].resolve().parent / "txbackup-restore"


def parse_command(text: str, what: str) -> list[str]:
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}") from None
    if not argv:
        raise UsageError(f"{what}: empty command")
    return argv


@dataclass(frozen=True)
class SnapshotFile:
    keyspace: str
    table: str
    table_dir: str  # "<table>-<id>", as on the node
    name: str
    path: str


class Node:
    """One Cassandra node, as seen by its agent."""

    def __init__(self, config: NodeConfig, storage: Storage, keys: AgentKeys | None = None) -> None:
        self.config = config
        self.storage = storage
        self.keys = keys or AgentKeys()
        self._keyring: Keyring | None = None
        self._cql_lock = threading.Lock()
        self._driver: Any = None
        self._session: Any = None
        self._tags_lock = threading.Lock()
        self._tags: dict[str, tuple[threading.Lock, int]] = {}
        self.hashes = hashcache.HashCache(config.state_dir)
        self.jmx: jmx.Supervisor | None = None
        if config.jmx_host is not None:
            self.jmx = jmx.Supervisor(self._new_helper, self._check_helper)

    # -- JMX --------------------------------------------------------------------------------------
    def _new_helper(self) -> jmx.JmxHelper:
        cfg = self.config
        assert cfg.jmx_host is not None
        helper = jmx.JmxHelper(cfg.jmx_host, cfg.jmx_port, cfg.java, cfg.jmx_user, cfg.jmx_password)
        helper.start()
        return helper

    def _check_helper(self, helper: jmx.JmxHelper) -> None:
        """The JMX address must reach this agent's own node (the one it reads over CQL)."""
        mine = self.identity()["host_id"]
        if helper.host_id != mine:
            raise TargetError(
                f"JMX {helper.host}:{helper.port} reaches node {helper.host_id[:80]}, not this agent's "
                f"node {mine} (--jmx)"
            )

    def jmx_state(self) -> dict[str, Any]:
        """How snapshots are taken now (for ``info``): ``jmx`` with the helper's pid, or
        ``nodetool`` with the reason."""
        helper = None if self.jmx is None else self.jmx.current()
        if helper is not None:
            return {"snapshots_via": "jmx", "jmx_helper_pid": helper.pid}
        reason = "no --jmx" if self.jmx is None else self.jmx.last_error
        return {"snapshots_via": "nodetool", "jmx_unavailable": reason}

    def _helper_or_warn(self, what: str, warn: bool = True) -> jmx.JmxHelper | None:
        if self.jmx is None:
            return None
        helper = self.jmx.current()
        if helper is None and warn:
            log.warning("JMX helper unavailable (%s): %s through nodetool", self.jmx.last_error, what)
        return helper

    def flush(self, keyspaces: Sequence[str], timeout: float | None = None) -> int | None:
        """Flush the memtables of ``keyspaces`` through the JMX helper (before a pause, so
        that the snapshot's own flush inside it has little left to write); the ms it took,
        or None without a helper (nothing done: nodetool would cost a JVM start)."""
        helper = None if self.jmx is None else self.jmx.ensure()
        if helper is None:
            return None
        keyspaces = [check_keyspace(k) for k in keyspaces]
        return helper.call("flush", timeout or self.config.nodetool_timeout, keyspaces=keyspaces)

    @contextlib.contextmanager
    def tag_lock(self, tag: str) -> Iterator[None]:
        """Hold snapshot ``tag`` for one call: snapshot, upload and clear of the same tag
        never interleave (a clear never removes files an upload is reading); other tags
        go on in parallel. A second call for the tag waits for the first. (The restore
        calls of one set hold ``restore/<set id>`` likewise.)"""
        with self._tags_lock:
            lock, users = self._tags.get(tag, (threading.Lock(), 0))
            self._tags[tag] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._tags_lock:
                lock, users = self._tags[tag]
                if users == 1:
                    del self._tags[tag]
                else:
                    self._tags[tag] = (lock, users - 1)

    # -- nodetool ---------------------------------------------------------------------------------
    def nodetool(self, *args: str, timeout: float | None = None) -> str:
        """Run nodetool; its stdout. ``TargetError`` with nodetool's own one-line message."""
        argv = [*self.config.nodetool, *args]
        timeout = timeout or self.config.nodetool_timeout
        return _run_tool(argv, f"nodetool {args[0]}", timeout, late="no answer")

    # -- CQL --------------------------------------------------------------------------------------
    def session(self) -> Any:
        """A driver session talking to this node only (created once)."""
        with self._cql_lock:
            if self._session is not None:
                return self._session
            try:
                from cassandra.auth import PlainTextAuthProvider  # type: ignore[import-untyped]
                from cassandra.cluster import (  # type: ignore[import-untyped]
                    EXEC_PROFILE_DEFAULT,
                    Cluster,
                    ExecutionProfile,
                )
                from cassandra.policies import WhiteListRoundRobinPolicy  # type: ignore[import-untyped]
            except ImportError:
                raise TargetError(
                    "the agent needs the Python cassandra-driver: pip install 'txbackup[cassandra]'"
                ) from None
            cfg = self.config
            auth = None
            if cfg.cql_user is not None:
                auth = PlainTextAuthProvider(username=cfg.cql_user, password=cfg.cql_password or "")
            driver = Cluster(
                [cfg.cql_host],
                port=cfg.cql_port,
                auth_provider=auth,
                execution_profiles={
                    EXEC_PROFILE_DEFAULT: ExecutionProfile(
                        load_balancing_policy=WhiteListRoundRobinPolicy([cfg.cql_host]), request_timeout=120
                    )
                },
                connect_timeout=10,
                control_connection_timeout=10,
                protocol_version=5,
            )
            try:
                session = driver.connect()
            except Exception as exc:
                driver.shutdown()
                raise TargetError(f"CQL {cfg.cql_host}:{cfg.cql_port}: {_driver_message(exc)}") from None
            self._driver, self._session = driver, session
            return session

    def cql(self, query: str, params: Sequence[Any] | None = None, timeout: float | None = None) -> list[Any]:
        try:
            return list(self.session().execute(query, params, timeout=timeout or 120))
        except TxbackupError:
            raise
        except Exception as exc:
            raise TargetError(f"CQL {query.split('(')[0].strip()[:80]}: {_driver_message(exc)}") from None

    def close(self, helper: bool = False) -> None:
        """Close the CQL session (and, with ``helper``, the JMX helper: the agent stops)."""
        if helper and self.jmx is not None:
            self.jmx.close()
        with self._cql_lock:
            if self._driver is not None:
                with contextlib.suppress(Exception):
                    self._driver.shutdown()
            self._driver = self._session = None

    def identity(self) -> dict[str, Any]:
        """This node: address, host id, cluster, datacenter, rack, tokens, version."""
        rows = self.cql(
            "SELECT host_id, cluster_name, partitioner, release_version, data_center, rack, tokens,"
            " broadcast_address, listen_address FROM system.local"
        )
        if not rows:
            raise TargetError("system.local is empty")
        row = rows[0]
        address = str(row.broadcast_address or row.listen_address)
        peers = sorted(str(r.peer) for r in self.cql("SELECT peer FROM system.peers_v2"))
        return {
            "address": address,
            "host_id": str(row.host_id),
            "cluster_name": str(row.cluster_name),
            "partitioner": str(row.partitioner),
            "release_version": str(row.release_version),
            "datacenter": str(row.data_center),
            "rack": str(row.rack),
            "tokens": sorted((str(t) for t in (row.tokens or ())), key=_token_key),
            "ring": sorted({address, *peers}),
        }

    def existing_keyspaces(self) -> set[str]:
        return {str(r.keyspace_name) for r in self.cql("SELECT keyspace_name FROM system_schema.keyspaces")}

    def tables(self, keyspace: str) -> list[str]:
        rows = self.cql("SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", [keyspace])
        return sorted(str(r.table_name) for r in rows)

    def describe(self, keyspaces: Sequence[str]) -> list[dict[str, str]]:
        """The schema of ``keyspaces``: one CQL statement per keyspace, type, table, index..."""
        statements = []
        for keyspace in keyspaces:
            for row in self.cql(f'DESCRIBE KEYSPACE "{check_keyspace(keyspace)}"'):
                statements.append(
                    {
                        "keyspace": str(row.keyspace_name),
                        "type": str(row.type),
                        "name": str(row.name),
                        "statement": str(row.create_statement),
                    }
                )
        return statements

    # -- snapshots --------------------------------------------------------------------------------
    def snapshot(self, tag: str, keyspaces: Sequence[str], timeout: float | None = None) -> str:
        """Snapshot ``tag`` of ``keyspaces`` (flushes first; fails if TAG exists): one call
        on the JMX helper, else ``nodetool snapshot -t TAG KS...``. Returns ``jmx`` or
        ``nodetool``: how it was taken.

        Inside the pause a missing helper is never started (a JVM start is what the
        helper saves): nodetool takes this snapshot and the supervisor starts a helper
        for the next. A helper that fails during the call leaves the snapshot's state
        unknown: ``TargetError`` (the capture fails, and clears the tag everywhere)."""
        keyspaces = [check_keyspace(k) for k in keyspaces]
        with self.tag_lock(check_tag(tag)):
            helper = self._helper_or_warn(f"snapshot {tag}")
            limit = timeout or self.config.nodetool_timeout
            if helper is not None:
                try:
                    helper.call("snapshot", limit, tag=tag, keyspaces=keyspaces)
                except (jmx.HelperUnavailable, jmx.CallUncertain):
                    self._remember(tag, keyspaces)  # it may be on disk: cleared at the next start
                    raise
                self._remember(tag, keyspaces)
                return "jmx"
            self.nodetool("snapshot", "-t", tag, *keyspaces, timeout=limit)
            self._remember(tag, keyspaces)
            return "nodetool"

    def clear(self, tag: str, keyspaces: Sequence[str]) -> None:
        """Clear snapshot ``tag`` (that snapshot only, never another): through the JMX
        helper, else ``nodetool clearsnapshot -t TAG -- KS...``."""
        keyspaces = [check_keyspace(k) for k in keyspaces]
        with self.tag_lock(check_tag(tag)):
            helper = self._helper_or_warn(f"clear {tag}", warn=False)
            try:
                if helper is None:
                    raise jmx.HelperUnavailable("no helper")
                helper.call("clear", self.config.nodetool_timeout, tag=tag, keyspaces=keyspaces)
            except jmx.HelperUnavailable:
                self.nodetool("clearsnapshot", "-t", tag, "--", *keyspaces)
            self._forget(tag)

    def snapshot_files(self, tag: str, keyspaces: Sequence[str]) -> list[SnapshotFile]:
        """The regular files of snapshot ``tag`` of ``keyspaces`` in every data directory
        (SSTable components, ``manifest.json``, ``schema.cql``; index sub-folders are
        left out: ``nodetool import`` rebuilds secondary indexes)."""
        found: list[SnapshotFile] = []
        tables_seen = 0
        for data_dir in self.config.data_dirs:
            for keyspace in keyspaces:
                ks_dir = data_dir / check_keyspace(keyspace)
                if not ks_dir.is_dir():
                    continue
                for table_dir in sorted(ks_dir.iterdir()):
                    match = _TABLE_DIR.match(table_dir.name)
                    snap = table_dir / "snapshots" / check_tag(tag)
                    if not match or not snap.is_dir():
                        continue
                    tables_seen += 1
                    for entry in sorted(snap.iterdir()):
                        if entry.is_file():
                            found.append(
                                SnapshotFile(keyspace, match["table"], table_dir.name, entry.name, str(entry))
                            )
        if tables_seen == 0:
            raise TargetError(f"no snapshot {tag!r} of {', '.join(keyspaces)} in {self._data_dirs()}")
        return found

    # -- an encrypted repository ------------------------------------------------------------------
    def sealing(self) -> blobs.Sealing | None:
        """How blobs are stored: sealed (encrypted, keyed names) when the repository's
        config says it is encrypted, which needs the agent's blob key; else None."""
        config = read_config(self.storage)
        if config is None or config.encryption is None:
            return None
        key = self.keys.blob_key
        if key is None:
            raise TxbackupError(
                f"agent: repository {config.repository_id} is encrypted: start the agent with "
                "--blob-key-file FILE (txbackup key blob-key writes it)"
            )
        if key.repository_id != config.repository_id:
            raise TxbackupError(
                f"agent: --blob-key-file holds the blob key of repository {key.repository_id}, "
                f"not of {config.repository_id}"
            )
        return blobs.Sealing(parse_recipient(config.encryption.recipient), key.key)

    def opening(self) -> Identity | None:
        """The repository identity that opens the blobs of an encrypted repository,
        unwrapped with the agent's user key (once); None if it is not encrypted."""
        config = read_config(self.storage)
        if config is None or config.encryption is None:
            return None
        if self._keyring is None or self._keyring.recipient != config.encryption.recipient:
            if self.keys.user_key is None:
                raise TxbackupError(
                    f"agent: repository {config.repository_id} is encrypted: restoring needs the agent "
                    "started with --identity-file FILE (or --passphrase-file/--passphrase-env)"
                )
            self._keyring = unlock(
                self.storage, config.encryption.recipient, config.repository_id, self.keys.user_key
            )
        return self._keyring.identity

    def upload(self, tag: str, keyspaces: Sequence[str], store: str, progress: Progress) -> dict[str, Any]:
        """Put every file of snapshot ``tag`` in the store; the node's file list."""
        with self.tag_lock(check_tag(tag)):
            return self._upload(tag, keyspaces, store, progress)

    def _upload(self, tag: str, keyspaces: Sequence[str], store: str, progress: Progress) -> dict[str, Any]:
        files = self.snapshot_files(tag, keyspaces)
        sealing = self.sealing()
        blob_key_id = hashcache.key_id(None if sealing is None else sealing.blob_key)
        records: list[dict[str, Any]] = []
        uploaded = uploaded_bytes = total_bytes = hashed_bytes = cache_hits = 0
        # a few files at once: each blob's fsync (and zstd, which releases the GIL) overlaps the
        # others'; the list stays in snapshot order
        pool = ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="agent-upload")
        try:
            futures = [pool.submit(self._put, f, store, sealing, blob_key_id) for f in files]
            for i, (f, future) in enumerate(zip(files, futures, strict=True)):
                stored = future.result()
                total_bytes += stored.size
                if stored.hashed:
                    hashed_bytes += stored.size
                else:
                    cache_hits += 1
                if stored.uploaded:
                    uploaded += 1
                    uploaded_bytes += stored.size
                records.append(
                    {
                        "keyspace": f.keyspace,
                        "table": f.table,
                        "table_dir": f.table_dir,
                        "name": f.name,
                        "sha256": stored.sha256,
                        "size": stored.size,
                        "stored_size": stored.stored_size,
                    }
                    | ({} if sealing is None else {"blob": stored.blob})  # the keyed name
                )
                progress({"files_done": i + 1, "files": len(files), "bytes_done": total_bytes})
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self.hashes.save()  # what was hashed before a failure counts for the retry
        return {
            "files": records,
            "file_count": len(records),
            "bytes": total_bytes,
            "uploaded_files": uploaded,
            "uploaded_bytes": uploaded_bytes,
            "hashed_bytes": hashed_bytes,
            "hash_cache_hits": cache_hits,
        }

    def _put(
        self, f: SnapshotFile, store: str, sealing: blobs.Sealing | None, blob_key_id: str
    ) -> blobs.Stored:
        """Store one snapshot file, its digests from the hash cache when it is unchanged."""
        try:
            st = os.stat(f.path, follow_symlinks=False)
            cacheable = f.name not in SNAPSHOT_FILES  # written anew by every snapshot
            key = hashcache.key_of(f.path, st)
            cached = self.hashes.get(key, blob_key_id) if cacheable else None
            if cached is not None:
                blob = cached.blob if sealing is not None else cached.sha256
                try:
                    return blobs.put_file(
                        self.storage, store, f.path, sealing, known=(cached.sha256, st.st_size, blob)
                    )
                except blobs.StaleDigest:
                    log.warning("hash cache: %s changed without a new mtime or inode; hashed again", f.path)
                    self.hashes.drop(key)
            stored = blobs.put_file(self.storage, store, f.path, sealing)
            # kept only if the file did not change while it was read (the digest is of these bytes)
            if cacheable and hashcache.key_of(f.path, os.stat(f.path, follow_symlinks=False)) == key:
                digests = hashcache.Digests(
                    stored.sha256, stored.blob if sealing is not None else "", blob_key_id
                )
                self.hashes.put(key, digests)
            return stored
        except OSError as exc:
            raise TargetError(f"reading {f.path}: {exc.strerror}") from None

    # -- restore ----------------------------------------------------------------------------------
    def staging_for(self, set_id: str) -> Path:
        return self.config.staging / check_tag(set_id)

    def prepare(
        self, set_id: str, store: str, files: Sequence[dict[str, Any]], progress: Progress
    ) -> dict[str, Any]:
        """Fetch and verify ``files`` (SSTable components only) into the staging folder.

        Every file is checked against its SHA-256; the first bad one is named and
        the staging folder removed: nothing reaches Cassandra."""
        root = self.staging_for(set_id)
        identity = self.opening()  # before anything is staged: no key, nothing fetched
        if root.is_symlink():
            root.unlink()
        elif root.exists():
            shutil.rmtree(root)
        self._private_dir(self.config.staging)
        self._private_dir(root)
        tables: dict[tuple[str, str, str], Path] = {}
        done_bytes = 0
        try:
            for i, f in enumerate(files):
                # the list comes from the set's artifacts: untrusted, checked field by field
                if not isinstance(f, dict):
                    raise IntegrityError(f"file #{i + 1} of the list is not an object")
                keyspace, table = (check_keyspace(_text(f.get(k))) for k in ("keyspace", "table"))
                name, size = f.get("name"), f.get("size")
                if name in SNAPSHOT_FILES or (isinstance(name, str) and name.startswith(".")):
                    continue
                problem = name_problem(name) or ("holds a '/'" if "/" in str(name) else None)
                if problem is not None:
                    raise IntegrityError(f"{keyspace}.{table}: file name {shown(name)} {problem}")
                if type(size) is not int or size < 0:
                    raise IntegrityError(f"{keyspace}.{table} {name}: size {shown(size)} is not a byte count")
                source = _SAFE.sub("_", str(f.get("node", "node"))).lstrip(".")[:100] or "node"
                folder = tables.get((source, keyspace, table))
                if folder is None:
                    # one folder per backed-up node (their files have the same names); sstableloader
                    # takes the keyspace and table from the last two components of the path
                    folder = Path(join_inside(str(root), f"{source}/{keyspace}/{table}", "staging folder"))
                    for level in (root / source, root / source / keyspace, folder):
                        self._private_dir(level)
                    tables[(source, keyspace, table)] = folder
                what = f"{keyspace}.{table} {name} (from node {shown(f.get('node', '?'))})"
                dest = join_inside(str(folder), str(name), f"{keyspace}.{table} file")
                blob = None if identity is None else _text(f.get("blob"))  # keyed names when sealed
                sha256 = _text(f.get("sha256"))
                blobs.fetch_file(self.storage, store, sha256, size, dest, what, blob=blob, identity=identity)
                self._hand_over(Path(dest))
                done_bytes += size
                progress({"files_done": i + 1, "files": len(files), "bytes_done": done_bytes})
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return {
            "staging": str(root),
            "tables": [
                {"node": n, "keyspace": k, "table": t, "dir": str(p)}
                for (n, k, t), p in sorted(tables.items())
            ],
            "bytes": done_bytes,
        }

    def _private_dir(self, path: Path) -> None:
        """``path`` as a folder only its owner reads (0700 whatever the umask)."""
        path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
        self._hand_over(path)

    def _hand_over(self, path: Path) -> None:
        """An agent running as root gives what it stages to the owner of the data
        directory (Cassandra's user), which reads and moves it at import; nobody else can."""
        if os.geteuid() != 0:
            return
        try:
            owner = self.config.data_dirs[0].stat()
        except OSError:  # no data directory yet: nobody to hand over to (import will say so)
            return
        if owner.st_uid != 0 or owner.st_gid != 0:
            os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)

    def import_staged(self, set_id: str, progress: Progress) -> dict[str, Any]:
        """``nodetool import KS TABLE DIR`` for every staged table (the files are moved in):
        through the JMX helper when it runs (the same operation with nodetool's defaults,
        without a JVM start per table), else nodetool."""
        imported = []
        helper = None if self.jmx is None else self.jmx.ensure()
        if helper is None and self.jmx is not None:
            log.warning("JMX helper unavailable (%s): importing through nodetool", self.jmx.last_error)
        for keyspace, table, folder in self._staged(set_id):
            if not any(folder.iterdir()):
                continue
            if helper is not None and not helper.alive:
                log.warning("JMX helper died: importing through nodetool")
                helper = None
            if helper is not None:
                try:
                    timeout = self.config.nodetool_timeout
                    helper.call("import", timeout, keyspace=keyspace, table=table, dir=str(folder))
                except jmx.HelperUnavailable as exc:
                    # sent, maybe running on the node still: no second import of the folder now
                    raise TargetError(
                        f"import of {keyspace}.{table} through JMX: {exc}; the node may still be importing "
                        f"{folder}: see its log, then resume the restore"
                    ) from None
            else:
                self.nodetool("import", keyspace, table, str(folder))
            leftover = [p.name for p in folder.iterdir() if p.name.endswith("-Data.db")]
            if leftover:
                raise TargetError(
                    f"nodetool import {keyspace} {table} left {len(leftover)} SSTable(s) in {folder} "
                    f"(e.g. {leftover[0]}): they were not imported; see the node's log"
                )
            imported.append(f"{keyspace}.{table}")
            progress({"imported": len(imported)})
        return {"imported": imported}

    def load_staged(self, set_id: str, progress: Progress) -> dict[str, Any]:
        """``sstableloader -d <this node> DIR`` for every staged table: it learns the ring
        from this agent's own node (``--cql``) and streams to the replicas.

        Never given the CQL password: sstableloader 5.0 takes it only on its command
        line (``-pw``), which every local user can read. When the agent logs in to CQL,
        ``--sstableloader-cmd`` must bring its own credentials (``-ap CLASS``: an
        ``AuthProvider`` with a no-argument constructor reading its secret from a file)."""
        cfg = self.config
        if not cfg.sstableloader:
            raise TargetError("no --sstableloader-cmd configured on this agent")
        if not cfg.loader_can_log_in:
            raise TargetError(
                "sstableloader takes CQL credentials only on its command line, where every local user "
                "can read them; the agent does not pass them: add -ap CLASS (an AuthProvider reading "
                "its own secret) to --sstableloader-cmd, or restore with nodetool import"
            )
        loaded = []
        for keyspace, table, folder in self._staged(set_id):
            if not any(folder.iterdir()):
                continue
            argv = [*cfg.sstableloader, "-d", cfg.cql_host, "-p", str(cfg.cql_port)]
            _run_tool([*argv, str(folder)], f"sstableloader {keyspace}.{table}", cfg.nodetool_timeout)
            loaded.append(f"{keyspace}.{table}")
            progress({"loaded": len(loaded)})
        return {"loaded": loaded}

    def cleanup(self, set_id: str) -> None:
        shutil.rmtree(self.staging_for(set_id), ignore_errors=True)

    def _staged(self, set_id: str) -> Iterator[tuple[str, str, Path]]:
        root = self.staging_for(set_id)
        if not root.is_dir():
            raise TargetError(f"nothing staged for set {set_id} in {root}")
        for source_dir in sorted(root.iterdir()):
            for ks_dir in sorted(source_dir.iterdir()):
                for table_dir in sorted(ks_dir.iterdir()):
                    yield ks_dir.name, table_dir.name, table_dir

    def apply_schema(
        self,
        records: Sequence[Any],
        keyspaces: Sequence[str],
        tables: Sequence[str],
        force: bool,
        apply: bool,
    ) -> dict[str, Any]:
        """Create what is missing of the schema; refuse non-empty tables unless ``force``
        (then truncate them). With ``apply`` false, only check.

        ``records`` are the set's ``schema.json``; only its CREATE statements run, each
        checked first (``txbackup.agent.schema``); ``tables`` (``ks.table``) must be in
        ``keyspaces``, none a system keyspace: nothing else is created or truncated."""
        keyspaces = [check_keyspace(k) for k in keyspaces]
        for keyspace in keyspaces:
            if is_system_keyspace(keyspace):
                raise UsageError(f"keyspace {keyspace}: a system keyspace is never restored")
        pairs = []
        for qualified in tables:
            keyspace, _, table = qualified.partition(".")
            if keyspace not in keyspaces:
                raise UsageError(f"table {qualified!r} is not in the set's keyspaces")
            pairs.append((keyspace, check_keyspace(table)))
        statements, skipped = checked_statements(records, keyspaces)  # all checked before any runs
        existing_ks = self.existing_keyspaces()
        existing_tables = {ks: set(self.tables(ks)) for ks in {k for k, _ in pairs}}
        non_empty = []
        for keyspace, table in pairs:
            exists = keyspace in existing_ks and table in existing_tables.get(keyspace, set())
            if exists and self.cql(f'SELECT * FROM "{keyspace}"."{table}" LIMIT 1'):
                non_empty.append(f"{keyspace}.{table}")
        if non_empty and not force:
            more = f" (and {len(non_empty) - 1} more)" if len(non_empty) > 1 else ""
            raise TargetError(
                f"table {non_empty[0]}{more} is not empty; restore with --force to truncate it first"
            )
        created: list[str] = []
        if not apply:
            return {"non_empty": non_empty, "created": created}
        for statement in statements:
            keyspace, kind, name = statement.keyspace, statement.kind, statement.name
            if kind == "keyspace":
                exists = keyspace in existing_ks
            elif kind == "table":
                exists = name in existing_tables.get(keyspace, set()) or (
                    keyspace in existing_ks and name in self.tables(keyspace)
                )
            else:
                exists = keyspace in existing_ks and self._object_exists(keyspace, kind, name)
            if not exists:
                self.cql(statement.text, timeout=120)
                created.append(f"{kind} {keyspace}.{name}" if kind != "keyspace" else f"keyspace {keyspace}")
                if kind == "keyspace":
                    existing_ks.add(keyspace)
        for qualified in non_empty:
            keyspace, table = qualified.split(".", 1)
            self.cql(f'TRUNCATE "{keyspace}"."{table}"', timeout=300)
        return {"non_empty": non_empty, "created": created, "truncated": non_empty, "skipped": skipped}

    def _object_exists(self, keyspace: str, kind: str, name: str) -> bool:
        queries = {
            "type": "SELECT type_name FROM system_schema.types WHERE keyspace_name = %s AND type_name = %s",
            "index": "SELECT index_name FROM system_schema.indexes WHERE keyspace_name = %s"
            " AND index_name = %s ALLOW FILTERING",
            "materialized_view": "SELECT view_name FROM system_schema.views WHERE keyspace_name = %s"
            " AND view_name = %s",
            "function": "SELECT function_name FROM system_schema.functions WHERE keyspace_name = %s"
            " AND function_name = %s",
            "aggregate": "SELECT aggregate_name FROM system_schema.aggregates WHERE keyspace_name = %s"
            " AND aggregate_name = %s",
        }
        query = queries.get(kind)
        if query is None:
            return False
        return bool(self.cql(query, [keyspace, name]))

    # -- the cold method (stop, snapshot, start) -------------------------------------------------
    def stop_node(self) -> None:
        """Drain (memtables flushed, no more writes accepted), then the stop command."""
        if not self.config.stop_command:
            raise TargetError("no --stop-cmd configured on this agent")
        self.nodetool("drain")
        self.close()
        _run_tool(self.config.stop_command, "stop command", self.config.nodetool_timeout)

    def start_node(self, wait_s: float) -> None:
        if not self.config.start_command:
            raise TargetError("no --start-cmd configured on this agent")
        _run_tool(self.config.start_command, "start command", self.config.nodetool_timeout)
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.close()
                self.identity()
                return
            except TxbackupError as exc:
                if time.monotonic() > deadline:
                    raise TargetError(f"node not answering CQL {wait_s:g} s after start: {exc}") from None
                time.sleep(1)

    def offline_snapshot(self, tag: str, keyspaces: Sequence[str]) -> int:
        """What ``nodetool snapshot`` does, on a stopped node: hard links of every
        SSTable component into ``<table>/snapshots/<tag>/``. Returns the file count."""
        with self.tag_lock(check_tag(tag)):
            return self._offline_snapshot(tag, keyspaces)

    def _offline_snapshot(self, tag: str, keyspaces: Sequence[str]) -> int:
        count = 0
        for data_dir in self.config.data_dirs:
            for keyspace in keyspaces:
                ks_dir = data_dir / check_keyspace(keyspace)
                if not ks_dir.is_dir():
                    continue
                for table_dir in sorted(ks_dir.iterdir()):
                    if not _TABLE_DIR.match(table_dir.name):
                        continue
                    snap = table_dir / "snapshots" / check_tag(tag)
                    if snap.exists():
                        raise TargetError(f"snapshot {tag} already exists in {table_dir}")
                    snap.mkdir(parents=True)
                    components = [p for p in sorted(table_dir.iterdir()) if p.is_file()]
                    for path in components:
                        os.link(path, snap / path.name)
                        count += 1
                    manifest = {"files": [p.name for p in components if p.name.endswith("-Data.db")]}
                    (snap / "manifest.json").write_text(json.dumps(manifest, indent=2))
        self._remember(tag, keyspaces)
        return count

    def offline_clear(self, tag: str, keyspaces: Sequence[str]) -> None:
        with self.tag_lock(check_tag(tag)):
            self._offline_clear(tag, keyspaces)

    def _offline_clear(self, tag: str, keyspaces: Sequence[str]) -> None:
        for data_dir in self.config.data_dirs:
            for keyspace in keyspaces:
                ks_dir = data_dir / check_keyspace(keyspace)
                if ks_dir.is_dir():
                    for table_dir in ks_dir.iterdir():
                        snap = table_dir / "snapshots" / check_tag(tag)
                        if _TABLE_DIR.match(table_dir.name) and snap.is_dir():
                            shutil.rmtree(snap)
        self._forget(tag)

    # -- state: snapshots taken and not cleared yet ----------------------------------------------
    def _remember(self, tag: str, keyspaces: Sequence[str]) -> None:
        if self.config.state_dir is None:
            return
        self.config.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.config.state_dir / f"{tag}.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with open(fd, "w") as out:
            out.write(json.dumps({"keyspaces": list(keyspaces)}))

    def _forget(self, tag: str) -> None:
        if self.config.state_dir is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.config.state_dir / f"{tag}.json").unlink()

    def leftover_snapshots(self) -> dict[str, list[str]]:
        """Snapshots this agent took and never cleared (it was stopped or killed meanwhile)."""
        if self.config.state_dir is None or not self.config.state_dir.is_dir():
            return {}
        found = {}
        for path in sorted(self.config.state_dir.glob("*.json")):
            try:
                keyspaces = json.loads(path.read_text())["keyspaces"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            found[path.stem] = [str(k) for k in keyspaces]
        return found

    def _data_dirs(self) -> str:
        return ", ".join(str(d) for d in self.config.data_dirs)


def _text(value: object) -> str:
    """A string field of a request; anything else becomes its (short) repr, which the
    checks that follow refuse by name."""
    return value if isinstance(value, str) else shown(value)


def nodetool_message(output: str) -> str:
    """nodetool's own error line (``error: X`` or ``nodetool: X``), else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        match = _NODETOOL_ERROR.match(line)
        if match:
            return match["message"]
    meaningful = [line for line in lines if not line.startswith(("at ", "WARNING:", "See 'nodetool help"))]
    return (meaningful or lines or ["no output"])[-1][:400]


def _run_tool(argv: Sequence[str], what: str, timeout: float, late: str = "did not finish") -> str:
    """Run a local tool; its stdout. ``TargetError`` naming ``what`` with the tool's
    own one-line message when it fails, is missing or outlives ``timeout``."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise TargetError(f"{what}: {argv[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise TargetError(f"{what}: {late} within {timeout:g} s") from None
    except OSError as exc:
        raise TargetError(f"{what}: cannot run {argv[0]}: {exc.strerror}") from None
    log.info("%s: exit %s in %.1fs", what, done.returncode, time.monotonic() - started)
    if done.returncode != 0:
        raise TargetError(f"{what} failed: {nodetool_message(done.stdout + done.stderr)}")
    return done.stdout


def _driver_message(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    errors = getattr(exc, "errors", None)
    if isinstance(errors, dict) and errors:
        first = next(iter(errors.values()))
        text = " ".join(str(first).split()) or text
    return text[:400]


def _token_key(token: str) -> tuple[int, str]:
    try:
        return (int(token), "")
    except ValueError:
        return (0, token)
