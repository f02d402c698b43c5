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
a committed backup set through ``src`` (the engine has verified checksums) and
load them into the destination, refusing a non-empty one unless ``force``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import IO, Any, Protocol

from txbackup.jobs import StepJournal


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

    def extract(self, name: str, path: str) -> None:
        """Write the decompressed artifact to the local file ``path``."""
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
    """

    name: str
    kind: str

    def describe(self) -> Mapping[str, Any]:
        """What this target backs up, without secrets (for the manifest)."""
        ...

    def preflight(self) -> None: ...

    def capture(self, set_id: str) -> Capture: ...

    def restore(self, src: ArtifactReader, dest: Mapping[str, str] | None, force: bool) -> None:
        """Load the artifacts into ``dest`` (connection settings overriding the
        target's own, e.g. from ``--to NAME=DSN``), or into the target itself."""
        ...


def iter_chunks(stream: IO[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    """Read a binary stream in chunks until EOF."""
    while chunk := stream.read(size):
        yield chunk
