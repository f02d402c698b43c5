"""Restore points: ``mode = "restore-point"`` of the postgres and mysql targets.

Teams that already archive their write-ahead logs or binary logs (pgBackRest,
WAL-G, Barman, binlog backups) want no dump: they want one point, consistent
across every database of the set, expressed in each database's own log. In this
mode a target's capture (inside the pause) only marks that point:

- PostgreSQL: ``pg_create_restore_point('txbackup-<set>')`` (the LSN it returns),
  ``pg_current_wal_lsn()``, the WAL segment and timeline holding the point. After
  the unpause the export switches to a new WAL segment and waits until the
  archiver has archived the one holding the point: a set is complete only once
  its point is in the archive (``archive_wait``, default 5 minutes).
- MySQL/MariaDB: the binary log file and position (``SHOW MASTER STATUS``), and
  the GTID state (MariaDB ``@@gtid_binlog_pos``, MySQL ``Executed_Gtid_Set``).

No artifact is stored. ``txbackup show`` prints, per target, the settings to give
one's own recovery tool (:func:`recovery`); ``txbackup restore`` refuses such a
target in one line pointing there. The manifest records the point in the target's
position (``"mode": "restore-point"``); read back it is untrusted, so every field
is checked for its syntax (LSN, WAL file, binlog file, GTID) before it is printed
into a command a user will paste (:func:`check_position`).

This module needs no database driver: reading a manifest (``show``, ``verify``)
never does. The targets live in ``pg_restore_point`` and ``mysql_restore_point``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from txbackup.errors import UsageError
from txbackup.safepaths import shown
from txbackup.settings import nearest, setting_str

DUMP = "dump"
RESTORE_POINT = "restore-point"
MODES = (DUMP, RESTORE_POINT)
KINDS = ("postgres", "mysql")
"""The kinds that have a ``mode`` setting."""

_LSN = re.compile(r"[0-9A-F]{1,8}/[0-9A-F]{1,8}")
_WAL_FILE = re.compile(r"[0-9A-F]{24}")
_POINT_NAME = re.compile(r"txbackup-[0-9A-Za-z_.-]{1,120}")
# shown, never pasted: any printable text (builds write "15.3, compiled by Visual C++ ...")
_VERSION = re.compile(r"[^\x00-\x1f\x7f]{1,200}")
# a binlog file name: the server's log_bin basename (no path) and a numeric extension
_BINLOG_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,200}\.[0-9]{6,10}")
_DOMAIN_GTID = r"[0-9]{1,10}-[0-9]{1,10}-[0-9]{1,20}"  # MariaDB: domain-server-sequence
_MARIADB_GTID = re.compile(rf"{_DOMAIN_GTID}(?:,{_DOMAIN_GTID})*")
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_INTERVAL = r"[0-9]{1,20}(?:-[0-9]{1,20})?"
_TAG = r"[a-z_][a-z0-9_]{0,31}"  # MySQL 8.3+ tagged GTIDs: uuid:tag:1-5
_MYSQL_UUID_SET = rf"{_UUID}(?::(?:{_TAG}|{_INTERVAL}))+"
_MYSQL_GTID = re.compile(rf"{_MYSQL_UUID_SET}(?:,{_MYSQL_UUID_SET})*")
_MAX_GTID = 64 << 10  # a GTID set of many servers is long, not megabytes


def read_mode(conf: Mapping[str, Any], culprit: str) -> str:
    """The target's ``mode`` setting: ``"dump"`` (default) or ``"restore-point"``."""
    mode = setting_str(conf, "mode", DUMP, culprit=culprit)
    if mode not in MODES:
        near = nearest(mode, MODES)
        hint = f'did you mean "{near}"? ' if near else ""
        raise UsageError(f"{culprit}: mode {shown(mode, 40)} is not a mode ({hint}known: {', '.join(MODES)})")
    return mode


def point_name(set_id: str) -> str:
    """The name of the PostgreSQL restore point of set ``set_id``."""
    return f"txbackup-{set_id}"


def is_point(position: Mapping[str, Any]) -> bool:
    """Whether a target's recorded position is a restore point (not a dump's snapshot)."""
    return position.get("mode") == RESTORE_POINT


def refusal(set_id: str, name: str, others: bool = False) -> str:
    """Why a restore point is not restored, and where to look instead (``others``: the set
    has other targets, which ``--target`` restores)."""
    more = "; restore the set's other targets with --target NAME" if others else ""
    return (
        f'target {name} of set {set_id} is a restore point (mode = "restore-point"): no data is '
        f"stored to restore; recover your own base backup with the settings `txbackup show {set_id}` "
        f"prints{more}"
    )


# -- the recorded point, checked ------------------------------------------------------------------
_PG_KEYS = {"mode", "name", "lsn", "wal_lsn", "wal_file", "timeline", "server_version", "databases"}
_MYSQL_KEYS = {
    "mode", "flavor", "server_version", "server_id", "databases", "binlog_file", "binlog_position",
    "gtid_binlog_pos", "gtid_executed",
}  # fmt: skip


def check_position(kind: str, position: Mapping[str, Any], artifacts: int = 0) -> None:
    """Refuse (ValueError naming the field) a restore point record whose fields are
    missing, of the wrong type or syntax, or that has artifacts (a restore point stores
    none). The fields end up in commands a user pastes: nothing else gets through."""
    if artifacts:
        raise ValueError("a restore point stores no artifact, yet the record lists some")
    if kind == "postgres":
        _only(position, _PG_KEYS)
        _text(position, "name", _POINT_NAME)
        _text(position, "lsn", _LSN)
        _text(position, "wal_lsn", _LSN)
        _text(position, "wal_file", _WAL_FILE)
        _count(position, "timeline", 1, 0xFFFFFFFF)
        if int(position["wal_file"][:8], 16) != position["timeline"]:
            raise ValueError("restore point: wal_file is not of the recorded timeline")
    elif kind == "mysql":
        _only(position, _MYSQL_KEYS)
        flavor = _text(position, "flavor", re.compile("mariadb|mysql"))
        _text(position, "binlog_file", _BINLOG_FILE)
        _count(position, "binlog_position", 4, (1 << 63) - 1)  # 4: past the file's magic bytes
        _count(position, "server_id", 0, 0xFFFFFFFF, required=False)
        gtid_key = "gtid_binlog_pos" if flavor == "mariadb" else "gtid_executed"
        other = "gtid_executed" if flavor == "mariadb" else "gtid_binlog_pos"
        if other in position:
            raise ValueError(f"restore point: {other} is not recorded by {flavor}")
        _text(position, gtid_key, _MARIADB_GTID if flavor == "mariadb" else _MYSQL_GTID, required=False)
    else:
        raise ValueError(f"restore point: kind {shown(kind, 40)} has no restore points")
    _text(position, "server_version", _VERSION)
    databases = position.get("databases")
    if not isinstance(databases, list) or not all(isinstance(d, str) and d for d in databases):
        raise ValueError("restore point: databases must be a list of names")


def _only(position: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(position) - known)
    if unknown:
        raise ValueError(f"restore point: unknown field {shown(unknown[0], 60)}")


def _text(position: Mapping[str, Any], key: str, pattern: re.Pattern[str], *, required: bool = True) -> str:
    value = position.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or len(value) > _MAX_GTID or not pattern.fullmatch(value):
        raise ValueError(f"restore point: {key} {shown(value, 80)} is not valid")
    return value


def _count(position: Mapping[str, Any], key: str, low: int, high: int, *, required: bool = True) -> None:
    value = position.get(key)
    if value is None and not required:
        return
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"restore point: {key} {shown(value, 40)} is not an integer in [{low}, {high}]")


# -- what to give one's own tool ------------------------------------------------------------------
def recovery(kind: str, position: Mapping[str, Any], restore_point: str | None) -> dict[str, Any]:
    """The recovery settings of a (checked) restore point, for ``show --json``; ``restore_point``
    is the set's pause midpoint (ISO-8601 UTC)."""
    if kind == "postgres":
        return {
            "tool": "postgresql",
            "settings": {
                "restore_command": "cp /path/to/wal-archive/%f %p",
                "recovery_target_name": position["name"],
                "recovery_target_timeline": str(position["timeline"]),
                "recovery_target_action": "promote",
            },
            "alternative": {"recovery_target_lsn": position["lsn"], "recovery_target_inclusive": "on"},
            # commit times: the pause midpoint is between the last commit before and the first after
            **({"by_time": {"recovery_target_time": restore_point}} if restore_point else {}),
            "wal_file": position["wal_file"],
            "notes": [
                "start from a base backup (pg_basebackup, your tool's) taken before the point",
                "restore_command is an example: use your archive's (pgBackRest, WAL-G, Barman...)",
                "create recovery.signal in the data directory, then start the server",
            ],
        }
    file, stop = position["binlog_file"], position["binlog_position"]
    found: dict[str, Any] = {
        "tool": "mysqlbinlog",
        "binlog_file": file,
        "stop_position": stop,
        "commands": [
            f"mysqlbinlog --start-position=<position of your full backup> <binlog files from that of your "
            f"full backup through {file}> --stop-position={stop} | mysql",
        ],
        "notes": [
            f"--stop-position applies to the last file given: end the list with {file}",
        ],
    }
    stop_time = _binlog_datetime(restore_point)
    if stop_time:
        found["stop_datetime_utc"] = stop_time
        found["commands"].append(
            f"TZ=UTC mysqlbinlog --stop-datetime='{stop_time}' <binlog files> | mysql   # approximate:"
            " whole seconds, prefer the position"
        )
    if position.get("gtid_binlog_pos"):
        gtid = position["gtid_binlog_pos"]
        found["gtid_binlog_pos"] = gtid
        found["commands"].append(
            f"mysqlbinlog --start-position=<gtid_binlog_pos of your full backup> --stop-position={gtid}"
            " <binlog files> | mariadb   # MariaDB 10.8+: GTID positions"
        )
    if position.get("gtid_executed"):
        gtid = position["gtid_executed"]
        found["gtid_executed"] = gtid
        found["commands"].append(
            f"mysqlbinlog --include-gtids='{gtid}' --exclude-gtids=<gtid_executed of your full backup>"
            " <binlog files> | mysql"
        )
    return found


def _binlog_datetime(restore_point: str | None) -> str | None:
    """The pause midpoint as mysqlbinlog reads a time, to the second."""
    if not restore_point:
        return None
    try:
        return datetime.fromisoformat(restore_point).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None


def recovery_lines(kind: str, position: Mapping[str, Any], restore_point: str | None) -> list[str]:
    """:func:`recovery` as ``txbackup show`` prints it (indented lines)."""
    found = recovery(kind, position, restore_point)
    if kind == "postgres":
        lines = ["  restore point: recover a base backup taken before it with (postgresql.conf,"
                 " plus an empty recovery.signal):"]  # fmt: skip
        lines += [f"    {k} = '{v}'" for k, v in found["settings"].items()]
        lines.append(f"    # or by position: recovery_target_lsn = '{position['lsn']}'")
        if restore_point:
            lines.append(f"    # or by time (commit times): recovery_target_time = '{restore_point}'")
        lines.append(f"    # the archive must hold WAL up to segment {position['wal_file']}")
        lines.append("    # restore_command above is an example: use your archive's")
        return lines
    lines = [f"  restore point: replay the binary logs through {position['binlog_file']}"
             f" position {position['binlog_position']}:"]  # fmt: skip
    lines += [f"    {c}" for c in found["commands"]]
    return lines
