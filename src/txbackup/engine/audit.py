"""Audit a backup set at ScalarDB's level: would ScalarDB see one consistent point?

ScalarDB's Consensus Commit keeps its transaction metadata in the rows themselves
and in one coordinator table, so a restored set can be judged from its data alone.
Every constant below was read in ScalarDB's sources (scalar-labs/scalardb, checked
against v3.13.6 and the 2026 main branch):

- ``core/.../api/TransactionState.java``: PREPARED=1, DELETED=2, COMMITTED=3,
  ABORTED=4, UNKNOWN=5.
- ``consensuscommit/Attribute.java``: the record columns ``tx_id``, ``tx_state``,
  ``tx_version``, ``tx_prepared_at``, ``tx_committed_at`` (and ``before_*``); the
  coordinator columns ``tx_id``, ``tx_state``, ``tx_created_at``, ``tx_child_ids``.
- ``consensuscommit/Coordinator.java`` (3.13; ``CoordinatorStateAccessor.java``
  later): the coordinator is table ``state`` of namespace ``coordinator``
  (configurable); only terminal states (COMMITTED, ABORTED) are ever written;
  ``tx_child_ids`` is a comma-separated list.
- ``consensuscommit/TransactionResult.java``: a NULL ``tx_state`` is deemed
  COMMITTED (a record imported without metadata).
- ``consensuscommit/RecoveryHandler.java``: lazy recovery of a PREPARED/DELETED
  record reads its writer's coordinator row: COMMITTED -> roll forward, any
  other state -> roll back; no row and ``now > tx_prepared_at + 15000 ms``
  (TRANSACTION_LIFETIME_MILLIS) -> write ABORTED, roll back; no row and not
  expired -> nothing (the writer may still be in flight).
- ``util/groupcommit/DefaultGroupCommitKeyManipulator.java``: with group commit a
  transaction id is ``<parent:24 chars>$<child>``; its state is the parent's row
  when that row lists the child in ``tx_child_ids``, else the row of the full id
  (a delayed group, or an abort).
- ``storage/jdbc/RdbEngineSqlite.java``: on SQLite a table of namespace ``ns`` is
  named ``ns$table``.

Records are committed in the storages only *after* the coordinator row says
COMMITTED, and coordinator rows are never overwritten (put-if-not-exists). So in any
real instant of a ScalarDB system, a COMMITTED record's writer has a COMMITTED
coordinator row. A copy of the databases taken one after the other breaks that:
the checks marked *torn* below catch the ways it shows in the metadata.

Checks (``exact``: follows from the protocol; heuristic: depends on clocks):

- ``committed-without-coordinator`` (torn, exact*): a COMMITTED record whose writer
  has no coordinator row: the coordinator was copied before that transaction
  committed. *Exact for ScalarDB up to 3.18 with one-phase commit off; ScalarDB
  3.19's coordinator cleanup and the one-phase commit optimisation commit records
  without a lasting row.
- ``committed-but-aborted`` (torn, exact): a COMMITTED record whose writer's
  coordinator row says ABORTED.
- ``split-transaction`` (torn, exact): one transaction whose records end
  differently after lazy recovery (some committed or rolled forward, others rolled
  back): a transaction half applied.
- ``prepared`` / ``deleted`` (recovery, exact): a record left PREPARED or DELETED,
  with how lazy recovery will resolve it (roll forward, roll back, or pending: no
  coordinator row and its writer not yet expired at the audit's time). A
  consistent set may hold these (a transaction caught between its phases); they
  are reported but do not make the set unclean unless ``strict``.
- ``newer-than-restore-point`` (heuristic): a record committed or prepared, or a
  coordinator row created, after the end of the set's pause window (plus the
  allowed clock skew): that database was copied later than the pause.
- ``bad-state`` (error, exact): a state code ScalarDB never writes there.
- ``no-coordinator`` (error): no coordinator table in the set, so nothing can be
  resolved.

The engine reads tables through ``TableSource``s (SQLite files here; PostgreSQL and
MySQL after a scratch restore: see ``engine.audit_sources``) and never names a
database kind itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from txbackup.engine.artifacts import SetReader
from txbackup.engine.manifest import Manifest, check_manifest
from txbackup.engine.progress import Reporter, SilentReporter
from txbackup.engine.restore import check_scope
from txbackup.errors import TxbackupError, UsageError
from txbackup.repository.crypto import Keyring
from txbackup.storage.base import Storage
from txbackup.targets.audit_tables import KINDS, LIVE, AuditKind
from txbackup.targets.base import Target
from txbackup.targets.sql.restore_points import is_point

PREPARED, DELETED, COMMITTED, ABORTED, UNKNOWN = 1, 2, 3, 4, 5
STATE_NAMES = {PREPARED: "PREPARED", DELETED: "DELETED", COMMITTED: "COMMITTED", ABORTED: "ABORTED",
               UNKNOWN: "UNKNOWN"}  # fmt: skip
TRANSACTION_LIFETIME_MS = 15000  # RecoveryHandler.TRANSACTION_LIFETIME_MILLIS
PARENT_KEY_SIZE = 24  # DefaultGroupCommitKeyManipulator.PRIMARY_KEY_SIZE
GROUP_DELIMITER = "$"
CHILD_IDS_DELIMITER = ","
COORDINATOR_NAMESPACE = "coordinator"
COORDINATOR_TABLE = "state"

RECORD_COLUMNS = ("tx_id", "tx_state", "tx_version", "tx_prepared_at", "tx_committed_at")
"""A table holding all of these is a ScalarDB transactional table."""
COORDINATOR_COLUMNS = ("tx_id", "tx_state", "tx_created_at")

# finding levels; "torn", "warning" and "error" make a set unclean, "recovery" only with strict
TORN, WARNING, ERROR, RECOVERY = "torn", "warning", "error", "recovery"
FAILING = (TORN, WARNING, ERROR)


@dataclass(frozen=True)
class Finding:
    check: str
    level: str
    exact: bool
    verdict: str
    target: str = ""
    table: str = ""
    key: Mapping[str, Any] = field(default_factory=dict)
    tx_id: str | None = None
    state: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "level": self.level,
            "exact": self.exact,
            "target": self.target,
            "table": self.table,
            "key": {k: _jsonable(v) for k, v in self.key.items()},
            "tx_id": self.tx_id,
            "state": self.state,
            "verdict": self.verdict,
        }

    def line(self) -> str:
        where = f"{self.target}:{self.table}" if self.table else self.target
        key = ", ".join(f"{k}={_jsonable(v)}" for k, v in self.key.items())
        parts = [f"[{self.level}] {self.check}", where]
        if key:
            parts.append(f"key ({key})")
        if self.tx_id is not None:
            parts.append(f"tx {self.tx_id}")
        return " ".join(p for p in parts if p) + f": {self.verdict}"


@dataclass
class AuditReport:
    set_id: str
    findings: list[Finding] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    records: int = 0
    coordinator_rows: int = 0
    not_audited: list[str] = field(default_factory=list)
    strict: bool = False

    @property
    def clean(self) -> bool:
        failing = FAILING + ((RECOVERY,) if self.strict else ())
        return not any(f.level in failing for f in self.findings) and not self.not_audited

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.findings:
            out[f.check] = out.get(f.check, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "set_id": self.set_id,
            "clean": self.clean,
            "strict": self.strict,
            "tables": list(self.tables),
            "records": self.records,
            "coordinator_rows": self.coordinator_rows,
            "not_audited": list(self.not_audited),
            "counts": self.counts(),
            "findings": [f.to_dict() for f in self.findings],
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class TableSource(Protocol):
    """One table of one target, as the audit reads it."""

    @property
    def target(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def table(self) -> str: ...
    @property
    def columns(self) -> Sequence[str]: ...
    @property
    def key_columns(self) -> Sequence[str]: ...

    def rows(self, columns: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        """Every row, as tuples of ``columns`` in that order (streamed)."""
        ...


def is_group_id(tx_id: str) -> bool:
    """DefaultGroupCommitKeyManipulator.isFullKey."""
    return len(tx_id) > PARENT_KEY_SIZE and tx_id[PARENT_KEY_SIZE] == GROUP_DELIMITER


NULL_STATE = 0  # how a NULL coordinator tx_state is kept (never a real state code)
_NO_CHILDREN: frozenset[str] = frozenset()


class Coordinator:
    """Every coordinator row of the set (usually one table in one target). Kept as plain
    dicts (tx id -> state; parent id -> child ids, for group rows only): a coordinator
    of millions of rows must fit in memory beside nothing else."""

    def __init__(self) -> None:
        self.states: dict[str, int] = {}
        self.children: dict[str, frozenset[str]] = {}
        self.tables: list[str] = []
        self.conflicts: list[Finding] = []

    def add(self, tx_id: str, state: int | None, child_ids: frozenset[str], where: str) -> None:
        code = NULL_STATE if state is None else state
        seen = self.states.get(tx_id)
        if seen is not None:
            if (seen, self.children.get(tx_id, _NO_CHILDREN)) != (code, child_ids):
                self.conflicts.append(
                    Finding("coordinator-conflict", ERROR, True,
                            f"two coordinator rows for one transaction disagree ({_state(seen)}, then"
                            f" {_state(code)} in {where})", target=where, tx_id=tx_id)
                )  # fmt: skip
            return
        self.states[tx_id] = code
        if child_ids:
            self.children[tx_id] = child_ids

    def state_of(self, tx_id: str) -> tuple[str, int] | None:
        """(the coordinator row's id, its state) for a writer, as ScalarDB's getState
        resolves it: a group id through its parent's row when that lists the child."""
        if len(tx_id) > PARENT_KEY_SIZE and tx_id[PARENT_KEY_SIZE] == GROUP_DELIMITER:
            parent = tx_id[:PARENT_KEY_SIZE]
            if tx_id[PARENT_KEY_SIZE + 1 :] in self.children.get(parent, _NO_CHILDREN):
                return parent, self.states[parent]
        state = self.states.get(tx_id)
        return None if state is None else (tx_id, state)


def _state(code: int | None) -> str:
    if code is None or code == NULL_STATE:
        return "NULL"
    return STATE_NAMES.get(code, f"state {code}")


def iso_to_ms(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    """A metadata number as read from any driver; None for NULL or junk (junk is reported)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def is_record_table(columns: Iterable[str]) -> bool:
    names = {c.lower() for c in columns}
    return all(c in names for c in RECORD_COLUMNS)


def is_coordinator_table(source: TableSource, namespace: str) -> bool:
    names = {c.lower() for c in source.columns}
    return (
        source.namespace == namespace
        and source.table == COORDINATOR_TABLE
        and all(c in names for c in COORDINATOR_COLUMNS)
        and "tx_version" not in names
    )


@dataclass
class _Pending:
    """A non-committed record kept for the cross-record checks (few in a sane set)."""

    target: str
    table: str
    key: dict[str, Any]
    tx_id: str
    state: int
    outcome: str  # "forward", "back", "pending"


@dataclass
class AuditOptions:
    coordinator_namespace: str = COORDINATOR_NAMESPACE
    window_end_ms: int | None = None  # the end of the set's pause window
    clock_skew_ms: int = 1000
    now_ms: int | None = None  # "now" for expiry (default: the audit's own clock)
    strict: bool = False


class Auditor:
    """Feed it every table of the set (coordinator tables first), then ``finish()``."""

    def __init__(self, set_id: str, options: AuditOptions,
                 progress: Callable[[int], None] | None = None) -> None:  # fmt: skip
        self.options = options
        self.report = AuditReport(set_id, strict=options.strict)
        self.coordinator = Coordinator()
        self.now_ms = options.now_ms if options.now_ms is not None else int(time.time() * 1000)
        self._pending: list[_Pending] = []
        # tx ids of committed records whose coordinator row is not COMMITTED, with one example
        # (a transaction the coordinator says COMMITTED can only roll forward, so only these
        # can be split: not keeping every committed tx id keeps memory flat per record)
        self._committed_orphans: dict[str, Finding] = {}
        self._progress = progress
        self._limit = (
            options.window_end_ms + options.clock_skew_ms if options.window_end_ms is not None else None
        )

    def add_coordinator(self, source: TableSource) -> None:
        names = {c.lower(): c for c in source.columns}
        wanted = [names["tx_id"], names["tx_state"], names["tx_created_at"]]
        if "tx_child_ids" in names:
            wanted.append(names["tx_child_ids"])
        where = f"{source.target}:{source.namespace}.{source.table}"
        self.coordinator.tables.append(where)
        self.report.tables.append(where)
        table = f"{source.namespace}.{source.table}"
        add = self.coordinator.add
        limit = self._limit
        count = 0
        for row in source.rows(wanted):
            count += 1
            tx_id = row[0] if type(row[0]) is str else str(row[0])
            state = row[1] if type(row[1]) is int else _int(row[1])
            children = row[3] if len(row) > 3 else None
            child_ids = (
                frozenset(c for c in children.split(CHILD_IDS_DELIMITER) if c)
                if type(children) is str and children else _NO_CHILDREN
            )  # fmt: skip
            if state != COMMITTED and state != ABORTED:
                self.report.findings.append(
                    Finding("bad-state", ERROR, True,
                            f"coordinator row in {_state(state)}: ScalarDB writes only COMMITTED or ABORTED",
                            target=source.target, table=table, key={"tx_id": tx_id}, tx_id=tx_id,
                            state=_state(state))
                )  # fmt: skip
            if limit is not None:
                created = _int(row[2])
                if created is not None and created > limit:
                    self.report.findings.append(
                        Finding("newer-than-restore-point", WARNING, False,
                                f"coordinator row created {created - limit + self.options.clock_skew_ms} ms"
                                " after the pause window ended: this database was copied after the pause",
                                target=source.target, table=table, key={"tx_id": tx_id}, tx_id=tx_id,
                                state=_state(state))
                    )  # fmt: skip
            add(tx_id, state, child_ids, where)
        self.report.coordinator_rows += count

    def add_records(self, source: TableSource) -> None:
        names = {c.lower(): c for c in source.columns}
        meta = [names[c] for c in RECORD_COLUMNS]
        keys = list(source.key_columns)
        table = f"{source.namespace}.{source.table}" if source.namespace else source.table
        self.report.tables.append(f"{source.target}:{table}")
        have_coordinator = bool(self.coordinator.tables)
        count = 0
        state_of = self.coordinator.state_of
        limit = self._limit
        progress = self._progress
        for row in source.rows([*meta, *keys]):
            count += 1
            if progress is not None and count % 100_000 == 0:
                progress(100_000)
            tx_id, state = row[0], row[1]
            if tx_id is None:
                # no writer to look up: imported without metadata, deemed committed
                # (TransactionResult.isDeemedAsCommitted keys off tx_id alone)
                continue
            if type(state) is not int:
                state = _int(state)
            tx = tx_id if type(tx_id) is str else str(tx_id)
            if limit is not None:
                stamp = _int(row[4] if state == COMMITTED else row[3])
                if stamp is not None and stamp > limit:
                    what = "committed" if state == COMMITTED else "prepared"
                    self._add(source, table, keys, row, tx, state, "newer-than-restore-point", WARNING, False,
                              f"{what} {stamp - limit + self.options.clock_skew_ms} ms after the pause"
                              " window ended: this database was copied after the pause")  # fmt: skip
            if state == COMMITTED or state is None:
                if not have_coordinator:
                    continue
                coord = state_of(tx)
                if coord is None:
                    self._committed_orphan(source, table, keys, row, tx, "committed-without-coordinator",
                                           "record COMMITTED but the coordinator has no row for its"
                                           " transaction: the coordinator was copied before it committed")
                elif coord[1] == ABORTED:
                    self._committed_orphan(source, table, keys, row, tx, "committed-but-aborted",
                                           "record COMMITTED but the coordinator says ABORTED")
                continue
            if state != PREPARED and state != DELETED:
                self._add(source, table, keys, row, tx, state, "bad-state", ERROR, True,
                          f"record in {_state(state)}: ScalarDB leaves records only PREPARED, DELETED"
                          " or COMMITTED")  # fmt: skip
                continue
            if not have_coordinator:
                continue
            outcome, verdict = self._resolve(tx, _int(row[3]))
            check = "prepared" if state == PREPARED else "deleted"
            level = WARNING if outcome == "pending" else RECOVERY
            self._add(source, table, keys, row, tx, state, check, level, True, verdict)
            self._pending.append(
                _Pending(source.target, table, dict(zip(keys, row[5:], strict=True)), tx, state, outcome)
            )
        self.report.records += count
        if self._progress is not None:
            self._progress(count % 100_000)

    def _resolve(self, tx_id: str, prepared_at: int | None) -> tuple[str, str]:
        coord = self.coordinator.state_of(tx_id)
        via = ""
        if coord is not None and coord[0] != tx_id:
            via = f" (group commit: parent row {coord[0]} lists it in tx_child_ids)"
        if coord is not None and coord[1] == COMMITTED:
            return "forward", f"lazy recovery rolls it forward: the coordinator says COMMITTED{via}"
        if coord is not None:
            return "back", f"lazy recovery rolls it back: the coordinator says {_state(coord[1])}{via}"
        if prepared_at is not None and self.now_ms > prepared_at + TRANSACTION_LIFETIME_MS:
            return "back", (
                "lazy recovery aborts its transaction and rolls it back: no coordinator row, and it"
                " expired (prepared more than 15 s ago)"
            )
        return "pending", (
            "no coordinator row and not yet expired: lazy recovery waits until 15 s after"
            " tx_prepared_at, then rolls it back"
        )

    def _committed_orphan(self, source: TableSource, table: str, keys: list[str], row: tuple[Any, ...],
                          tx: str, check: str, verdict: str) -> None:  # fmt: skip
        finding = self._add(source, table, keys, row, tx, COMMITTED, check, TORN, True, verdict)
        self._committed_orphans.setdefault(tx, finding)

    def _add(self, source: TableSource, table: str, keys: list[str], row: tuple[Any, ...], tx: str,
             state: int | None, check: str, level: str, exact: bool, verdict: str) -> Finding:  # fmt: skip
        key = dict(zip(keys, row[5:], strict=True))
        finding = Finding(check, level, exact, verdict, source.target, table, key, tx, _state(state))
        self.report.findings.append(finding)
        return finding

    def not_audited(self, target: str, why: str) -> None:
        self.report.not_audited.append(f"{target}: {why}")

    def finish(self) -> AuditReport:
        report = self.report
        report.findings.extend(self.coordinator.conflicts)
        if not self.coordinator.tables:
            report.findings.append(
                Finding("no-coordinator", ERROR, True,
                        f"no coordinator table ({self.options.coordinator_namespace}.{COORDINATOR_TABLE})"
                        " in the set: no transaction state can be checked; back up the coordinator"
                        " namespace with the data")
            )  # fmt: skip
            return report
        # a transaction half applied: its records end differently once recovered
        by_tx: dict[str, list[_Pending]] = {}
        for p in self._pending:
            by_tx.setdefault(p.tx_id, []).append(p)
        for tx, records in by_tx.items():
            if tx not in self._committed_orphans:
                continue
            for p in records:
                report.findings.append(
                    Finding("split-transaction", TORN, True,
                            "its transaction is COMMITTED in another record of the set, but this record"
                            " will be rolled back: the transaction is half applied",
                            p.target, p.table, p.key, tx, _state(p.state))
                )  # fmt: skip
        return report


# -- a whole set --------------------------------------------------------------------------------------

SYSTEM_NAMESPACE = "scalardb"  # DatabaseConfig.DEFAULT_SYSTEM_NAMESPACE_NAME
METADATA_TABLE = "metadata"  # JdbcAdmin.METADATA_TABLE; column full_table_name = "ns.table"


@dataclass
class AuditPlan:
    storage: Storage
    manifest: Manifest
    targets: Sequence[Target]  # from the cluster file (needed for the kinds restored to scratch)
    # NAME -> {"dsn": ..., "password": ...}: where a postgres/mysql target is restored to be read
    scratch: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    options: AuditOptions = field(default_factory=AuditOptions)
    system_namespace: str = SYSTEM_NAMESPACE
    keep_scratch: bool = False
    reporter: Reporter = field(default_factory=SilentReporter)
    keyring: Keyring | None = None  # an encrypted repository's (its artifacts are read)


def audit_set(plan: AuditPlan) -> AuditReport:
    """Read every target of the set that can be read (SQLite from its artifact, PostgreSQL
    and MySQL through a scratch restore) and audit it; see the module doc."""
    manifest = plan.manifest
    check_manifest(manifest)  # before any name of it is used
    configured = {t.name: t for t in plan.targets}
    for name in plan.scratch:
        if name not in {r.name for r in manifest.targets}:
            raise UsageError(f"--scratch {name}=...: set {manifest.set_id} has no target {name!r}")
    options = plan.options
    if options.window_end_ms is None:
        options = dataclasses.replace(options, window_end_ms=iso_to_ms(manifest.pause.ended_at))
    report = plan.reporter
    tables: list[TableSource] = []
    with contextlib.ExitStack() as stack:
        auditor = Auditor(manifest.set_id, options)
        for record in manifest.targets:
            kind = KINDS.get(record.kind)
            if kind is None:
                auditor.not_audited(record.name, f"not audited (kind {record.kind}: not read by the audit)")
                continue
            if is_point(record.position):  # no data in the set: the user's recovery has it
                auditor.not_audited(
                    record.name,
                    "not audited (a restore point: recover it with your own tool, then audit the copy"
                    " with audit --live)",
                )
                continue
            report.event("target", name=record.name, phase="reading", kind=record.kind)
            started = time.monotonic()
            reader = SetReader(plan.storage, manifest.set_id, record.name, record.artifacts,
                               restore_point=manifest.restore_point, position=record.position,
                               keyring=plan.keyring)  # fmt: skip
            if kind.scratch:
                scratch = plan.scratch.get(record.name)
                target = configured.get(record.name)
                if scratch is None:
                    auditor.not_audited(
                        record.name,
                        f"not audited (kind {record.kind} is read from a scratch restore: give"
                        f" --scratch {record.name}=DSN)",
                    )
                    continue
                if target is None or target.kind != record.kind:
                    raise UsageError(
                        f"target {record.name!r} ({record.kind}) of set {manifest.set_id}: a scratch"
                        " restore needs it in the cluster file (--config) with the same kind"
                    )
                check_scope(manifest.set_id, record, target)
                target.restore(reader, scratch, False)
                report.event("target", name=record.name, phase="restored",
                             ms=round((time.monotonic() - started) * 1000))  # fmt: skip
                if not plan.keep_scratch:
                    stack.callback(_drop, auditor, kind, record.name, reader.names(), scratch)
            found = stack.enter_context(kind.open(record.name, reader, plan.scratch.get(record.name)))
            tables.extend(found)
        return audit_tables(auditor, tables, plan.system_namespace, report)


def audit_live(
    targets: Sequence[Target],
    options: AuditOptions,
    system_namespace: str = SYSTEM_NAMESPACE,
    reporter: Reporter | None = None,
) -> AuditReport:
    """Audit the databases the targets of a cluster file name, in place: a restored copy
    (a drill's scratch places, copies loaded by hand), or a stopped system. Not a running
    one: its tables are read one after the other, so transactions committing meanwhile
    would look torn."""
    report = reporter or SilentReporter()
    auditor = Auditor("live", options)
    tables: list[TableSource] = []
    with contextlib.ExitStack() as stack:
        for target in targets:
            opener = LIVE.get(target.kind)
            if opener is None:
                auditor.not_audited(target.name, f"not audited (kind {target.kind}: not read by the audit)")
                continue
            report.event("target", name=target.name, phase="reading", kind=target.kind)
            tables.extend(stack.enter_context(opener(target)))
        return audit_tables(auditor, tables, system_namespace, report)


def _drop(
    auditor: Auditor, kind: AuditKind, target: str, names: list[str], scratch: Mapping[str, str]
) -> None:
    """Drop a target's scratch databases; a failure is reported, it does not hide the audit."""
    try:
        kind.drop(target, names, scratch)
    except TxbackupError as exc:
        auditor.report.findings.append(
            Finding("scratch-left", WARNING, True, f"{exc} (drop them by hand)", target=target)
        )


def audit_tables(
    auditor: Auditor,
    tables: Sequence[TableSource],
    system_namespace: str = SYSTEM_NAMESPACE,
    report: Reporter | None = None,
) -> AuditReport:
    """Audit ``tables`` (every table of the set, any kind): the coordinator tables first,
    then every table with ScalarDB's metadata columns."""
    namespace = auditor.options.coordinator_namespace
    system = [t for t in tables if (t.namespace, t.table) == (system_namespace, METADATA_TABLE)]
    coordinators = [t for t in tables if is_coordinator_table(t, namespace)]
    records = [t for t in tables if all(t is not c for c in coordinators) and is_record_table(t.columns)]
    for source in coordinators:
        auditor.add_coordinator(source)
    for source in records:
        if report is not None:
            table = f"{source.namespace}.{source.table}"
            report.event("target", name=source.target, phase="auditing", table=table)
        auditor.add_records(source)
    _check_system_namespace(auditor, system, records, system_namespace)
    return auditor.finish()


def _check_system_namespace(
    auditor: Auditor, system: Sequence[TableSource], records: Sequence[TableSource], namespace: str
) -> None:
    """ScalarDB reads a table only through its metadata (``scalardb.metadata``): without it
    the restored data is unreadable ("CORE-10016: The table does not exist")."""
    if not records:
        return
    if not system:
        auditor.report.findings.append(
            Finding("no-system-namespace", ERROR, True,
                    f"no {namespace}.{METADATA_TABLE} table in the set: ScalarDB cannot read the restored"
                    " tables (CORE-10016); back up the system namespace with the data")
        )  # fmt: skip
        return
    known: set[str] = set()
    for source in system:
        names = {c.lower(): c for c in source.columns}
        if "full_table_name" not in names:
            continue
        known.update(str(row[0]) for row in source.rows([names["full_table_name"]]))
    for source in records:
        full = f"{source.namespace}.{source.table}"
        if full not in known:
            auditor.report.findings.append(
                Finding("table-not-in-metadata", WARNING, True,
                        f"{full} holds ScalarDB metadata columns but {namespace}.{METADATA_TABLE} does not"
                        " list it: ScalarDB cannot read it after a restore", target=source.target, table=full)
            )  # fmt: skip
