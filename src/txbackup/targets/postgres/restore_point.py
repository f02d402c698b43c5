"""A postgres target in ``mode = "restore-point"`` (see ``targets.sql.restore_points``).

Preflight (nothing is paused if it fails, one line each): every database of the
target exists; the server is a primary (a standby cannot create restore points);
``wal_level`` is ``replica`` or ``logical``, ``archive_mode`` is ``on`` or
``always`` and ``archive_command`` (or ``archive_library``) is set (otherwise no
archive would hold the point); the user may run
``pg_create_restore_point`` and ``pg_switch_wal`` (a superuser, or ``GRANT
EXECUTE`` on both). ``pg_dump`` is not needed.

Capture, inside the pause, on the connection the preflight prepared: one
statement creates the restore point ``txbackup-<set>`` and reads the WAL
position. A restore point is a record in the cluster's WAL, so one covers every
database of the server. Export, after the unpause: ``pg_switch_wal()`` closes the
segment holding the point, then ``pg_stat_archiver`` is polled until that
segment is archived (``archive_wait``; with ``--verbose``, a line every 15 s while
waiting). Sets taken in ``dump`` mode earlier are
still restored as before (this target is a postgres target in every other way).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import psycopg

from txbackup.errors import TargetError, UsageError
from txbackup.targets.base import ArtifactReader, ArtifactWriter, Recorded, Scope
from txbackup.targets.postgres.target import KIND, PREPARED_TTL_S, PostgresTarget, _close_all, _message
from txbackup.targets.sql.restore_points import RESTORE_POINT, check_position, is_point, point_name

_SETTINGS = """
SELECT current_setting('wal_level'), current_setting('archive_mode'), pg_is_in_recovery(),
       has_function_privilege('pg_create_restore_point(text)', 'EXECUTE'),
       has_function_privilege('pg_switch_wal()', 'EXECUTE'), current_user,
       (SELECT coalesce(bool_and(setting = ''), false) FROM pg_settings
        WHERE name IN ('archive_command', 'archive_library'))
"""
_SCHEMAS = "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)"
# one round trip inside the pause: the point, then where the WAL is
_POINT = """
SELECT p::text, pg_current_wal_lsn()::text, pg_walfile_name(p),
       current_setting('server_version')
FROM pg_create_restore_point(%s) AS p
"""
_ARCHIVER = "SELECT last_archived_wal, last_failed_wal, last_failed_time FROM pg_stat_archiver"
_POLL_S = 0.2
_PROGRESS_S = 15.0
log = logging.getLogger(__name__)


class PostgresPointCapture:
    """The restore point made in the pause; the export waits for it to be archived."""

    def __init__(
        self, target: PostgresPointTarget, conn: psycopg.Connection[Any], position: dict[str, Any]
    ) -> None:
        self.target = target
        self.conn: psycopg.Connection[Any] | None = conn
        self._position = position

    def position(self) -> Mapping[str, Any]:
        return dict(self._position)

    def export(self, out: ArtifactWriter) -> None:
        """No artifact: close the WAL segment holding the point and wait until the archive has it
        (a set is complete only once its point can be recovered)."""
        conn = self.conn
        if conn is None:
            raise self.target.error("export after release")
        wal_file = str(self._position["wal_file"])
        try:
            conn.execute("SELECT pg_switch_wal()")
        except psycopg.Error as exc:
            raise self.target.error(f"pg_switch_wal failed: {_message(exc)}") from None
        self.target.wait_archived(conn, wal_file)

    def release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


def archived(last: object, wal_file: str) -> bool:
    """Whether ``pg_stat_archiver.last_archived_wal`` = ``last`` means ``wal_file`` is archived:
    the archiver archives segments in order, so the same one or a later one (a ``.backup``
    or ``.partial`` file of the same segment does not count; a ``.history`` file says nothing)."""
    if not isinstance(last, str) or len(last) < 24:
        return False
    segment = last[:24]
    try:
        int(segment, 16)
    except ValueError:
        return False
    return segment > wal_file or last == wal_file


class PostgresPointTarget(PostgresTarget):
    """A postgres target whose capture is a restore point, not a snapshot to dump."""

    archive_wait_s = 300.0

    def describe(self) -> Mapping[str, Any]:
        return {**super().describe(), "mode": RESTORE_POINT}

    # -- preflight -----------------------------------------------------------------------------
    def preflight(self) -> None:
        self.close()  # a connection an earlier preflight prepared and no capture took
        opened: dict[str, psycopg.Connection[Any]] = {}
        try:
            self._check_point(opened)
        except BaseException:
            _close_all(opened)
            raise
        first = self.databases[0]
        keep = {first: opened.pop(first)}
        _close_all(opened)
        self._prepared.keep(keep, PREPARED_TTL_S)

    def _check_point(self, opened: dict[str, psycopg.Connection[Any]]) -> None:
        scalardb = [n for n in (self.coordinator_namespace, self.system_namespace) if n]
        found: set[str] = set()
        for db in self.databases:  # each must exist: the set says it covers them
            conn = opened[db] = self.connect(db)
            try:
                found |= {str(r[0]) for r in conn.execute(_SCHEMAS, (scalardb,))}
            except psycopg.Error as exc:
                raise self.error(f'database "{db}": {_message(exc)}') from None
        self._scalardb_found = found
        conn = opened[self.databases[0]]
        try:
            row = conn.execute(_SETTINGS).fetchone()
        except psycopg.Error as exc:
            raise self.error(_message(exc)) from None
        assert row is not None
        wal_level, archive_mode, in_recovery, may_mark, may_switch, user, no_command = row
        if in_recovery:
            raise self.error(
                "the server is a standby (in recovery): restore points are created on the primary;"
                " point the target at it"
            )
        if wal_level not in ("replica", "logical"):
            raise self.error(
                f"wal_level is {wal_level}: a restore point needs replica or logical (and archived WAL);"
                ' set it, or use mode = "dump"'
            )
        if archive_mode not in ("on", "always"):
            raise self.error(
                f"archive_mode is {archive_mode}: WAL is not archived, so no recovery could reach a"
                ' restore point; set archive_mode = on and archive_command, or use mode = "dump"'
            )
        if no_command:  # (false when the settings are hidden from this user: not checked then)
            raise self.error(
                "archive_mode is on but archive_command and archive_library are empty: WAL is kept, not"
                " archived, so no recovery could reach a restore point; set archive_command"
            )
        if not (may_mark and may_switch):
            raise self.error(
                f"user {user} may not run pg_create_restore_point and pg_switch_wal: make it a superuser"
                f" or GRANT EXECUTE ON FUNCTION pg_create_restore_point(text), pg_switch_wal() TO {user}"
            )

    # -- capture ---------------------------------------------------------------------------------
    def capture(self, set_id: str) -> PostgresPointCapture:  # type: ignore[override]  # another Capture
        """The restore point, on the connection the preflight prepared (or a new one)."""
        prepared = self._prepared.take()
        first = self.databases[0]
        conn = prepared.pop(first, None)
        _close_all(prepared)
        try:
            if conn is None or conn.closed:
                conn = self.connect(first)
                row = self._mark(conn, set_id)
            else:
                try:
                    row = self._mark(conn, set_id)
                except TargetError:
                    # the prepared connection may have died since preflight: one more try on a new
                    # one (a second point of the same name is harmless: recovery stops at the first)
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                    conn = self.connect(first)
                    row = self._mark(conn, set_id)
        except BaseException:
            if conn is not None:
                with contextlib.suppress(psycopg.Error):
                    conn.close()
            raise
        lsn, wal_lsn, wal_file, version = (str(v) for v in row)
        position = {
            "mode": RESTORE_POINT,
            "name": point_name(set_id),
            "lsn": lsn,
            "wal_lsn": wal_lsn,
            "wal_file": wal_file,
            "timeline": int(wal_file[:8], 16),
            "server_version": version,
            "databases": list(self.databases),
        }
        try:
            check_position(KIND, position)  # what the manifest will be checked against
        except ValueError as exc:
            conn.close()
            raise self.error(str(exc)) from None
        return PostgresPointCapture(self, conn, position)

    def _mark(self, conn: psycopg.Connection[Any], set_id: str) -> tuple[Any, ...]:
        try:
            row = conn.execute(_POINT, (point_name(set_id),)).fetchone()
        except psycopg.Error as exc:
            raise self.error(f"pg_create_restore_point failed: {_message(exc)}") from None
        assert row is not None
        return tuple(row)

    def wait_archived(self, conn: psycopg.Connection[Any], wal_file: str) -> None:
        """Return once ``pg_stat_archiver`` shows ``wal_file`` archived; TargetError after
        ``archive_wait_s``, naming the archiver's last failure if it has one."""
        started = time.monotonic()
        deadline, shown = started + self.archive_wait_s, started
        while True:
            try:
                row = conn.execute(_ARCHIVER).fetchone()
            except psycopg.Error as exc:
                raise self.error(f"pg_stat_archiver: {_message(exc)}") from None
            assert row is not None
            last, failed, failed_at = row
            if archived(last, wal_file):
                return
            if time.monotonic() >= deadline:
                failure = f"; last failure: {failed} at {failed_at} (see the server log)" if failed else ""
                raise self.error(
                    f"WAL segment {wal_file} holding the restore point was not archived within"
                    f" {self.archive_wait_s:g}s (last archived: {last or 'none'}){failure}"
                )
            if time.monotonic() - shown >= _PROGRESS_S:  # the same cadence as the Azure waits (--verbose)
                shown = time.monotonic()
                elapsed = round(shown - started)
                log.info("%s: waiting %ds for %s to be archived (last archived: %s)", self.label, elapsed,
                         wal_file, last or "none")  # fmt: skip
            time.sleep(_POLL_S)

    # -- restore ---------------------------------------------------------------------------------
    def check_record(self, record: Recorded) -> None:
        """A restore point's record: its databases are the configured ones; a dump's: as ever."""
        if not is_point(record.position):
            super().check_record(record)
            return
        scope = Scope(self.label, record)
        try:
            check_position(KIND, record.position, len(record.names))
        except ValueError as exc:
            scope.fail(str(exc))
        covered = set(self.databases)
        where = "the position's databases"
        scope.all_covered(scope.sequence(record.position.get("databases"), where), covered, where, "database")
        described = scope.description(KIND)
        if described is not None:
            scope.described_covered(described, "databases", covered, "database")

    def restore(self, src: ArtifactReader, dest: Mapping[str, str] | None, force: bool) -> None:
        if is_point(src.position):
            raise UsageError(
                f"{self.label}: the set holds a restore point, not data: recover it with your own tool"
                " and the settings `txbackup show SET` prints"
            )
        super().restore(src, dest, force)
