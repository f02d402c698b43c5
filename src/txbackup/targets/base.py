"""The one small protocol every database target implements.

A target knows one database and nothing of the engine's flow. The engine calls,
in this order (all methods are synchronous; the engine runs them in threads):

1. ``preflight()`` before anything is paused: reach the database with the
   configured credentials, check privileges and prerequisites; raise
   ``TargetError`` naming the target otherwise.
2. ``capture(set_id)`` inside the pause: establish a consistent snapshot
   *handle* in constant time (an exported PostgreSQL snapshot, an InnoDB
   consistent-snapshot session, an SQLite read transaction...). Returns a
   ``Capture``. Nothing heavy here: the applications are waiting.
3. ``Capture.export(out)`` after unpause: stream the snapshot's data into
   artifacts through ``out`` (the engine compresses and checksums).
4. ``Capture.release()`` always, whatever happened: close held transactions
   and sessions. Must be idempotent.

Restore is ``restore(src, dest, force)``: read the artifacts of this target in
a committed backup set through ``src`` and load them into the destination,
refusing a non-empty one unless ``force``. Each artifact is verified as it is
read (the engine checked beforehand only that it is there, with its size): a
mismatch raises ``IntegrityError`` from ``read()``, and the last bytes of an
artifact come only once it is verified. So a target reads each artifact once,
lets that error through (after stopping whatever it fed), and makes nothing
final before the end of its input: a file renamed into place at EOF, one
transaction committed after the last byte.

A set is untrusted input (whoever can write to the storage can rewrite its
manifest, checksums included), and its artifact names fitting the kind's layout
(``layouts``) does not make them this target's: a tampered ``other.dump`` fits
the postgres layout and would be restored into database ``other``. So before a
restore contacts anything, ``check_record(Recorded)`` refuses a record naming a
database, table, keyspace, file or account that the target's configuration
does not cover (what it lists, plus what it always adds itself, such as
ScalarDB's coordinator). The engine calls it on the manifest's record before
verifying the set (``engine.restore.check_scope``, also run by ``verify -c``),
and every ``restore()`` calls it first on what its reader holds. Each kind
states only its own rule; :class:`Scope` does the typed reading (a value of
the wrong type or shape is refused, never a traceback) and the one-line
message. A restore to another name on purpose (``--to``) renames the
destination only: the source names stay the configured ones.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Any, NoReturn, Protocol, runtime_checkable

from txbackup.errors import IntegrityError, UsageError
from txbackup.jobs import StepJournal
from txbackup.safepaths import shown


class ArtifactWriter(Protocol):
    """Where a capture's export writes its artifacts (provided by the engine)."""

    def open(self, name: str) -> AbstractContextManager[IO[bytes]]:
        """A writable binary stream for artifact ``name`` (a relative path such
        as ``"accounts.dump"``). Compressed and checksummed on the way out;
        the artifact exists only once the context exits without error."""
        ...

    def add_file(self, name: str, path: str) -> None:
        """Store the local file ``path`` as artifact ``name``."""
        ...


class ArtifactReader(Protocol):
    """Read access to one target's artifacts in a backup set (provided by the engine)."""

    @property
    def restore_point(self) -> str | None:
        """The set's restore point: the pause midpoint, ISO-8601 UTC with ms
        (what point-in-time-restore targets restore to)."""
        ...

    @property
    def position(self) -> Mapping[str, Any]:
        """What this target's capture recorded (``Capture.position()``)."""
        ...

    @property
    def journal(self) -> StepJournal:
        """The steps of this target already done in this restore job: a target
        whose restore has several steps marks each one, and skips those
        already done when the job is resumed (``txbackup restore --resume``)."""
        ...

    def names(self) -> list[str]:
        """The artifact names of this target, in the order they were written."""
        ...

    def open(self, name: str) -> AbstractContextManager[IO[bytes]]:
        """A readable binary stream of the decompressed, verified artifact."""
        ...

    def extract(self, name: str, path: str, *, durable: bool = False) -> None:
        """Write the decompressed artifact to the local file ``path`` (``durable``: its
        data on disk before it appears there)."""
        ...


class Capture(Protocol):
    """A consistent snapshot handle, established inside the pause."""

    def position(self) -> Mapping[str, Any]:
        """What identifies the captured point (snapshot id, WAL LSN, binlog
        file/position or GTID, ...), recorded in the manifest. JSON-safe."""
        ...

    def export(self, out: ArtifactWriter) -> None:
        """Stream the captured data to artifacts. Called after unpause."""
        ...

    def release(self) -> None:
        """Close whatever the capture holds open. Always called; idempotent."""
        ...


class Target(Protocol):
    """One database (or database server) of the cluster file.

    A target may also define ``min_pause_s: float``: the shortest pause it
    needs (point-in-time-restore services need a pause long enough for their
    restore granularity and clock uncertainty); the engine holds the pause for
    the longest of these. It may define ``capture_delay_s: float`` too: how long
    its capture waits inside the pause before it can act; the capture deadline
    is extended by the longest of these. And ``close()``: called at the end of
    every backup run, to drop what ``preflight`` prepared for the capture
    (e.g. open connections) when the run ended before capturing.

    A target whose capture makes something that lives outside the repository
    (DynamoDB on-demand backups) defines ``discard(record: Recorded) -> list[str]``:
    delete what a forgotten set's ``record`` names (checked like a restore's
    record first: it is untrusted), return what was deleted; what is already
    gone counts as deleted. ``OUTSIDE`` names where its position lists them.
    """

    name: str
    kind: str

    def describe(self) -> Mapping[str, Any]:
        """What this target backs up, without secrets (for the manifest)."""
        ...

    def preflight(self) -> None: ...

    def capture(self, set_id: str) -> Capture: ...

    def check_record(self, record: Recorded) -> None:
        """Refuse (``IntegrityError`` naming this target and the foreign name) a set's
        record naming anything this target's configuration does not cover (see the
        module doc). Reads nothing but ``record``: contacts nothing."""
        ...

    def restore(self, src: ArtifactReader, dest: Mapping[str, str] | None, force: bool) -> None:
        """Load the artifacts into ``dest`` (connection settings overriding the
        target's own, e.g. from ``--to NAME=DSN``), or into the target itself.
        Starts with ``check_record(Recorded.of_reader(src))``."""
        ...


OUTSIDE: dict[str, str] = {"dynamodb": "backups"}
"""Kinds whose set owns things outside the repository: the position key (a mapping
of strings) that lists them. A set of such a target needs its ``discard`` when it goes."""


def owned_outside(kind: str, position: Mapping[str, Any]) -> list[str]:
    """What a set's target (``kind``, its recorded ``position``) owns outside the repository."""
    key = OUTSIDE.get(kind)
    value = position.get(key) if key is not None else None
    if not isinstance(value, Mapping):
        return []
    return sorted(str(v) for v in value.values())

RENAME = "rename."
"""A restore destination key ``rename.OLD`` = ``NEW``: database OLD of the set is restored
as NEW (``--rename-db``, ``[restore.NAME] rename``), for the targets that have databases."""


@runtime_checkable
class DestinationCheck(Protocol):
    """What a target may add so that a restore refuses a bad destination before anything
    happens: the engine calls ``check_destination`` before reading the storage (without a
    record) and again with the set's record, before it verifies the set."""

    def check_destination(self, dest: Mapping[str, str] | None, record: Recorded | None = None) -> None:
        """UsageError for destination settings that do not parse, or a rename that does not
        fit the target (or the set's ``record``). Contacts nothing, reads no secret."""
        ...


@runtime_checkable
class Drillable(Protocol):
    """A target a restore drill can use (postgres, mysql, sqlite): where its data lives, and
    the same target as a restore into a destination leaves it (``engine.drill``)."""

    name: str
    kind: str

    def places(self) -> set[tuple[str, ...]]:
        """One entry per database or file (kind, host, port, database / kind, real path):
        a drill place equal to any target's is production, and refused."""
        ...

    def placed(self, dest: Mapping[str, str] | None) -> Drillable:
        """This target with its settings pointing at the copy a restore into ``dest`` makes
        (``dest`` holds its password); contacts nothing."""
        ...


@runtime_checkable
class CheckedDestination(DestinationCheck, Protocol):
    """... and, for the targets holding databases (postgres, mysql), renames and a probe:
    ``probe_destination`` (which contacts the destination) runs before the set is verified
    and before a restore job exists, so a refusal there leaves nothing behind."""

    def rename_databases(self) -> list[str]:
        """The databases that ``rename.OLD`` destination keys may name (``--rename-db``)."""
        ...

    def probe_destination(self, dest: Mapping[str, str] | None, force: bool, record: Recorded) -> None:
        """Reach the destination (``dest`` holds its password) and refuse one that
        ``restore`` would refuse (not empty without ``force``). Writes nothing."""
        ...


@dataclass(frozen=True)
class Recorded:
    """What a set records of one target (untrusted): its artifact names, its
    position and, from the manifest, the description of the target at backup
    (None when only a reader is at hand)."""

    names: tuple[str, ...]
    position: Mapping[str, Any]
    description: Mapping[str, Any] | None = None

    @classmethod
    def of_reader(cls, src: ArtifactReader) -> Recorded:
        return cls(tuple(src.names()), src.position)


class Scope:
    """Typed reading of a :class:`Recorded`, for one target's ``check_record``: each
    read refuses (``IntegrityError``, one line naming the target, where in the
    record, and the culprit) a missing field, a value of another type, or a name
    that is not one the configuration covers."""

    def __init__(self, label: str, record: Recorded) -> None:
        self.label = label
        self.record = record

    def fail(self, problem: str) -> NoReturn:
        raise IntegrityError(f"{self.label}: {problem}")

    def wrong(self, value: object, where: str, expected: str) -> NoReturn:
        """Refuse ``value`` (from ``where``), which is not ``expected`` ("a list")."""
        if value is None:
            self.fail(f"{where} is missing")
        self.fail(f"{where} is a {type(value).__name__}, not {expected}")

    def covered(self, name: object, covered: Collection[str], where: str, what: str) -> str:
        """``name`` (from ``where``) if it is a string among ``covered`` (the configured
        ``what``s, e.g. "database")."""
        if not isinstance(name, str):
            self.wrong(name, f"{where}: a {what} name", "a string")
        if name not in covered:
            listed = ", ".join(sorted(covered)) or "none"
            listed = listed if len(listed) <= 200 else listed[:197] + "..."
            self.fail(
                f"{where} names {what} {shown(name, 80)}, which this target does not cover "
                f"(its configuration has {listed})"
            )
        return name

    def all_covered(
        self, names: Iterable[object], covered: Collection[str], where: str, what: str
    ) -> list[str]:
        return [self.covered(name, covered, where, what) for name in names]

    def mapping(self, value: object, where: str, *, required: bool = True) -> Mapping[str, Any]:
        """``value`` as a JSON object (an absent optional one reads as empty)."""
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            self.wrong(value, where, "an object")
        return value

    def sequence(self, value: object, where: str, *, required: bool = True) -> Sequence[Any]:
        """``value`` as a JSON list (an absent optional one reads as empty)."""
        if value is None and not required:
            return []
        if not isinstance(value, list):
            self.wrong(value, where, "a list")
        return value

    def text(self, value: object, where: str, *, required: bool = True) -> str:
        """``value`` as a string (an absent optional one reads as "")."""
        if value is None and not required:
            return ""
        if not isinstance(value, str):
            self.wrong(value, where, "a string")
        return value

    def same(self, value: object, expected: str, where: str, what: str) -> None:
        """``value``, when recorded, must be ``expected`` (what the configuration says)."""
        if value is not None and value != expected:
            self.fail(f"{where} is {what} {shown(value, 80)}; the cluster file says {expected!r}")

    def description(self, kind: str) -> Mapping[str, Any] | None:
        """The record's description (None if not at hand), which must be of ``kind``."""
        described = self.record.description
        if described is None:
            return None
        self.same(
            self.text(described.get("kind"), "the description's kind"), kind, "the description", "of kind"
        )
        return described

    def described_covered(
        self,
        described: Mapping[str, Any],
        key: str,
        covered: Collection[str],
        what: str,
        *,
        coordinator: str = "",
    ) -> None:
        """The description's list ``key`` (the ``what``s backed up) and, where the kind
        records one, its optional ``coordinator`` field: every name among ``covered``."""
        where = f"the description's {key}"
        self.all_covered(self.sequence(described.get(key), where), covered, where, what)
        if coordinator:
            where = f"the description's {coordinator}"
            name = self.text(described.get(coordinator), where, required=False)
            if name:
                self.covered(name, covered, where, what)


def iter_chunks(stream: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    """Read a binary stream in chunks until EOF."""
    while chunk := stream.read(size):
        yield chunk


def refuse_unknown_destination(
    dest: Mapping[str, str], known: Collection[str], label: str, *, renames: bool = False
) -> None:
    """A restore destination (``--to``, ``[restore.NAME]``) naming settings the target does
    not know is refused in one line naming them; ``rename.OLD`` keys pass only where the
    target has databases to rename (``renames``: it checks them itself)."""
    unknown = sorted(k for k in dest if k not in known and not (renames and k.startswith(RENAME)))
    if unknown:
        raise UsageError(f"{label}: unknown restore destination setting(s) {unknown}")


def dsn_only(dest: Mapping[str, str] | None, label: str) -> str | None:
    """The ``dsn`` of a destination that may hold nothing else (DynamoDB, Cosmos DB), or
    None when none is given."""
    if not dest:
        return None
    refuse_unknown_destination(dest, ("dsn",), label)
    if "dsn" not in dest:
        raise UsageError(f"{label}: the restore destination has no dsn (give --to NAME=...)")
    return dest["dsn"]
