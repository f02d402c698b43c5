"""A mysql target in ``mode = "restore-point"`` (see ``targets.sql.restore_points``).

Preflight (nothing is paused if it fails, one line each): every database of the
target exists; binary logging is on (``log_bin``: otherwise no replay could reach
the point); the user may read the binary log position (``SHOW MASTER STATUS``:
MariaDB's ``BINLOG MONITOR`` or MySQL's ``REPLICATION CLIENT`` privilege).

Capture, inside the pause, on the session the preflight prepared: one round trip
reads the binary log file and position and the GTID state (MariaDB
``@@gtid_binlog_pos``; MySQL ``Executed_Gtid_Set``). The position is the server's,
so one covers every database on it. Nothing is exported. Sets taken in ``dump``
mode earlier are still restored as before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pymysql

from txbackup.errors import TargetError, UsageError
from txbackup.targets.base import ArtifactReader, ArtifactWriter, Recorded, Scope
from txbackup.targets.mysql.target import KIND, PREPARED_TTL_S, MysqlTarget, _close, _message
from txbackup.targets.sql.restore_points import RESTORE_POINT, check_position, is_point


def _status_statement(info: str) -> str:
    """SHOW MASTER STATUS, or its MySQL 8.2+ name (8.4 dropped the old one)."""
    if "mariadb" in info.lower():
        return "SHOW MASTER STATUS"
    match = re.match(r"(\d+)\.(\d+)", info)
    new = match is not None and (int(match.group(1)), int(match.group(2))) >= (8, 2)
    return "SHOW BINARY LOG STATUS" if new else "SHOW MASTER STATUS"


class MysqlPointCapture:
    """The binary log position read in the pause: nothing held, nothing to export."""

    def __init__(self, position: dict[str, Any]) -> None:
        self._position = position

    def position(self) -> Mapping[str, Any]:
        return dict(self._position)

    def export(self, out: ArtifactWriter) -> None:
        """No artifact: the user's binary log archive holds the data."""

    def release(self) -> None:
        """Nothing is held: the capture's session is closed as soon as it has read the position."""


class MysqlPointTarget(MysqlTarget):
    """A mysql target whose capture is a binary log position, not a snapshot to dump."""

    def describe(self) -> Mapping[str, Any]:
        return {**super().describe(), "mode": RESTORE_POINT}

    # -- preflight -----------------------------------------------------------------------------
    def preflight(self) -> None:
        self.close()  # a session an earlier preflight prepared and no capture took
        conn = self._capture_connection()
        try:
            self._check_point(conn)
        except BaseException:
            _close(conn)
            raise
        self._prepared.keep([conn], PREPARED_TTL_S)  # the dump target's shape: its sessions

    def _check_point(self, conn: Any) -> None:
        names = self.all_databases()
        marks = ",".join(["%s"] * len(names))
        try:
            with conn.cursor() as cur:
                cur.execute(
                    f"SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN ({marks})",
                    names,
                )
                found = {str(r[0]) for r in cur.fetchall()}
                cur.execute("SELECT @@log_bin")
                row = cur.fetchone()
        except pymysql.MySQLError as exc:
            raise self.error(_message(exc)) from None
        self._scalardb_found = found & {self.coordinator_database, self.system_database}
        missing = [db for db in self.databases if db not in found]
        if missing:
            raise self.error(f'database "{missing[0]}" not found (or not visible to the user)')
        if not row or not row[0]:
            raise self.error(
                "log_bin is OFF: the server writes no binary log, so no replay could reach a restore point;"
                ' start it with log_bin (and keep its binary logs), or use mode = "dump"'
            )
        statement = _status_statement(str(conn.get_server_info()))
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                status = cur.fetchone()
        except pymysql.MySQLError as exc:
            raise self.error(
                f"cannot read the binary log position ({statement}: {_message(exc)}); grant the user"
                " BINLOG MONITOR (MariaDB) or REPLICATION CLIENT (MySQL)"
            ) from None
        if not status:
            raise self.error(
                f"{statement} shows no binary log: grant the user BINLOG MONITOR or REPLICATION CLIENT"
            )

    # -- capture ---------------------------------------------------------------------------------
    def capture(self, set_id: str) -> MysqlPointCapture:  # type: ignore[override]  # another Capture
        """The binary log position, on the session the preflight prepared (or a new one)."""
        held = self._prepared.take()
        conn = held[0] if held else None
        try:
            if conn is None or not conn.open:
                conn = self._capture_connection()
                results = self._read(conn)
            else:
                try:
                    results = self._read(conn)
                except TargetError:  # the prepared session may have died since preflight
                    _close(conn)
                    conn = self._capture_connection()
                    results = self._read(conn)
        finally:
            _close(conn)
        return MysqlPointCapture(results)

    def _read(self, conn: Any) -> dict[str, Any]:
        info = str(conn.get_server_info())
        mariadb = "mariadb" in info.lower()
        gtid = "@@global.gtid_binlog_pos" if mariadb else "NULL"
        try:
            with conn.cursor(pymysql.cursors.DictCursor) as cur:
                # one round trip: the position first (the pause is on), then what describes it
                describe = f"SELECT @@version AS v, @@server_id AS id, {gtid} AS g"
                cur.execute(f"{_status_statement(info)};\n{describe}")
                status = cur.fetchone()
                cur.nextset()
                more = cur.fetchone()
        except pymysql.MySQLError as exc:
            raise self.error(f"reading the binary log position failed: {_message(exc)}") from None
        if not status or not more:
            raise self.error("the server shows no binary log position (log_bin turned off?)")
        position: dict[str, Any] = {
            "mode": RESTORE_POINT,
            "flavor": "mariadb" if mariadb else "mysql",
            "server_version": str(more["v"]),
            "server_id": int(more["id"]),
            "databases": [
                db for db in self.all_databases() if db in self.databases or db in self._scalardb_found
            ],
            "binlog_file": str(status["File"]),
            "binlog_position": int(status["Position"]),
        }
        if mariadb and more["g"]:
            position["gtid_binlog_pos"] = str(more["g"])
        executed = status.get("Executed_Gtid_Set")
        if not mariadb and executed:
            position["gtid_executed"] = "".join(str(executed).split())  # MySQL breaks it over lines
        try:
            check_position(KIND, position)  # what the manifest will be checked against
        except ValueError as exc:
            raise self.error(str(exc)) from None
        return position

    # -- restore ---------------------------------------------------------------------------------
    def check_record(self, record: Recorded) -> None:
        """A restore point's record: its databases are configured ones; a dump's: as ever."""
        if not is_point(record.position):
            super().check_record(record)
            return
        scope = Scope(self.label, record)
        try:
            check_position(KIND, record.position, len(record.names))
        except ValueError as exc:
            scope.fail(str(exc))
        covered = set(self.all_databases())
        where = "the position's databases"
        scope.all_covered(scope.sequence(record.position.get("databases"), where), covered, where, "database")
        described = scope.description(KIND)
        if described is not None:
            scope.described_covered(
                described, "databases", covered, "database", coordinator="coordinator_database"
            )

    def restore(self, src: ArtifactReader, dest: Mapping[str, str] | None, force: bool) -> None:
        if is_point(src.position):
            raise UsageError(
                f"{self.label}: the set holds a restore point, not data: replay your binary logs with"
                " the settings `txbackup show SET` prints"
            )
        super().restore(src, dest, force)
