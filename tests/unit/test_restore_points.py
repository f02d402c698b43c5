"""Restore points (mode = "restore-point"), without a server: the setting as the cluster
file reader takes it, the recorded point checked when a manifest is read back (its fields
end up in commands users paste), and the recovery settings `show` derives from it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from txbackup.config import load_cluster
from txbackup.engine.drill import resolve_places
from txbackup.engine.manifest import (
    Manifest,
    PauseWindow,
    TargetRecord,
    Timings,
    check_manifest,
    parse_manifest,
)
from txbackup.errors import IntegrityError, UsageError
from txbackup.targets.base import Recorded
from txbackup.targets.postgres.restore_point import PostgresPointTarget, archived
from txbackup.targets.sql.restore_points import check_position, recovery, recovery_lines

SET_ID = "20261128T101500Z-ab12"
PG_POINT: dict[str, Any] = {
    "mode": "restore-point",
    "name": f"txbackup-{SET_ID}",
    "lsn": "0/3000090",
    "wal_lsn": "0/30000C8",
    "wal_file": "000000010000000000000003",
    "timeline": 1,
    "server_version": "15.10 (Debian 15.10-0+deb12u1)",
    "databases": ["ledger"],
}
MARIA_POINT: dict[str, Any] = {
    "mode": "restore-point",
    "flavor": "mariadb",
    "server_version": "10.11.19-MariaDB-0+deb12u1-log",
    "server_id": 1,
    "databases": ["orders", "coordinator"],
    "binlog_file": "binlog.000002",
    "binlog_position": 1234,
    "gtid_binlog_pos": "0-1-42",
}
MYSQL_POINT: dict[str, Any] = {
    **{k: v for k, v in MARIA_POINT.items() if k != "gtid_binlog_pos"},
    "flavor": "mysql",
    "server_version": "8.4.3",
    "gtid_executed": "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5:7,4e11fa47-71ca-11e1-9e33-c80aa9429562:tag:1",
}


def _cluster(tmp_path: Path, target: str) -> str:
    path = tmp_path / "cluster.toml"
    path.write_text(f'[applications]\nendpoints = ["127.0.0.1:1"]\n[[targets]]\nname = "t"\n{target}\n')
    return str(path)


def _load_error(tmp_path: Path, target: str) -> str:
    with pytest.raises(UsageError) as err:
        load_cluster(_cluster(tmp_path, target))
    assert "\n" not in str(err.value)
    return str(err.value)


def test_the_mode_is_read_with_the_target(tmp_path: Path) -> None:
    pg = 'kind = "postgres"\ndatabases = ["ledger"]\n'
    config = load_cluster(_cluster(tmp_path, pg + 'mode = "restore-point"\narchive_wait = "30s"'))
    target = config.targets[0]
    assert isinstance(target, PostgresPointTarget) and target.archive_wait_s == 30
    assert target.describe()["mode"] == "restore-point"
    assert (
        type(load_cluster(_cluster(tmp_path, pg + 'mode = "dump"')).targets[0]).__name__ == "PostgresTarget"
    )
    maria = 'kind = "mysql"\ndatabases = ["orders"]\nmode = "restore-point"'
    assert type(load_cluster(_cluster(tmp_path, maria)).targets[0]).__name__ == "MysqlPointTarget"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ('kind = "postgres"\ndatabases = ["a"]\nmode = "restore_point"', 'did you mean "restore-point"?'),
        ('kind = "mysql"\ndatabases = ["a"]\nmode = 1', "mode must be a non-empty string"),
        (
            'kind = "postgres"\ndatabases = ["a"]\narchive_wait = "1m"',
            'archive_wait applies to mode = "restore-point"',
        ),
        (
            'kind = "postgres"\ndatabases = ["a"]\nmode = "restore-point"\ninclude = ["app"]',
            "include does not apply",
        ),
        ('kind = "postgres"\ndatabases = ["a"]\nmode = "restore-point"\narchive_wait = "0s"', "archive_wait"),
        ('kind = "mysql"\ndatabases = ["a"]\narchive_wait = "1m"', 'unknown setting "archive_wait"'),
    ],
)
def test_bad_modes_are_refused_when_the_file_is_read(tmp_path: Path, target: str, expected: str) -> None:
    assert expected in _load_error(tmp_path, target)


@pytest.mark.parametrize(
    "kind, point", [("postgres", PG_POINT), ("mysql", MARIA_POINT), ("mysql", MYSQL_POINT)]
)
def test_recorded_points_pass(kind: str, point: dict[str, Any]) -> None:
    check_position(kind, point)
    check_position(kind, {**point, "server_version": "15.3, compiled by Visual C++ build 1914, 64-bit"})


@pytest.mark.parametrize(
    ("kind", "change", "expected"),
    [
        ("postgres", {"lsn": "0/3000090'; COPY x TO PROGRAM 'sh"}, "lsn"),
        ("postgres", {"lsn": "0/3000090\n"}, "lsn"),
        ("postgres", {"name": "txbackup-x' recovery_target_action = 'shutdown"}, "name"),
        ("postgres", {"wal_file": "../../etc/passwd"}, "wal_file"),
        ("postgres", {"timeline": 2}, "not of the recorded timeline"),
        ("postgres", {"timeline": True}, "timeline"),
        ("postgres", {"databases": "ledger"}, "databases"),
        ("postgres", {"extra": 1}, "unknown field 'extra'"),
        ("postgres", {"server_version": "15.3\nrecovery_target_action = 'shutdown'"}, "server_version"),
        ("mysql", {"binlog_file": "/var/lib/mysql/binlog.000002"}, "binlog_file"),
        ("mysql", {"binlog_file": "binlog.000002 | sh"}, "binlog_file"),
        ("mysql", {"binlog_position": "1234"}, "binlog_position"),
        ("mysql", {"binlog_position": 2}, "binlog_position"),
        ("mysql", {"gtid_binlog_pos": "0-1-42; rm -rf /"}, "gtid_binlog_pos"),
        ("mysql", {"gtid_executed": "x"}, "gtid_executed is not recorded by mariadb"),
        ("mysql", {"flavor": "oracle"}, "flavor"),
    ],
)
def test_tampered_points_are_refused(kind: str, change: dict[str, Any], expected: str) -> None:
    point = {**(PG_POINT if kind == "postgres" else MARIA_POINT), **change}
    with pytest.raises(ValueError, match="restore point") as err:
        check_position(kind, point)
    assert expected in str(err.value)


def _manifest(position: dict[str, Any], kind: str = "postgres") -> Manifest:
    return Manifest(
        set_id=SET_ID,
        created_at="2026-11-28T10:15:00.123Z",
        finished_at="2026-11-28T10:16:00.000Z",
        pause=PauseWindow("2026-11-28T10:15:01.000Z", "2026-11-28T10:15:01.200Z", "2026-11-28T10:15:01.100Z"),
        applications=["127.0.0.1:1"],
        timings=Timings(),
        targets=[TargetRecord("ledger", kind, {"kind": kind, "databases": ["ledger"]}, position, [])],
    )


def test_a_manifest_read_back_checks_its_points() -> None:
    good = _manifest(PG_POINT)
    text = json.dumps(good.to_dict()).encode()
    assert parse_manifest(text, "m.json", SET_ID).targets[0].position == PG_POINT
    bad = _manifest({**PG_POINT, "lsn": "0/1' ; x"})
    with pytest.raises(IntegrityError, match=r"target 'ledger' \(postgres\): restore point: lsn"):
        parse_manifest(json.dumps(bad.to_dict()).encode(), "m.json", SET_ID)
    with pytest.raises(IntegrityError, match="restore point: lsn"):
        check_manifest(bad)
    # a point does not bring artifacts along (a restore would never read them)
    stuffed = dataclasses.replace(good)
    data = stuffed.to_dict()
    data["targets"][0]["artifacts"] = [
        {"name": "ledger.dump", "path": f"sets/{SET_ID}/ledger/ledger.dump.zst", "size": 1,
         "sha256": "ab" * 32, "stored_size": 1, "stored_sha256": "cd" * 32}
    ]  # fmt: skip
    with pytest.raises(IntegrityError, match="stores no artifact"):
        parse_manifest(json.dumps(data).encode(), "m.json", SET_ID)
    # a dump's position is not a point: unchanged rules
    dump = _manifest({"databases": {"ledger": {"snapshot": "x", "lsn": "0/1"}}})
    check_manifest(dump)


def test_a_point_names_only_configured_databases(tmp_path: Path) -> None:
    config = load_cluster(
        _cluster(tmp_path, 'kind = "postgres"\ndatabases = ["ledger"]\nmode = "restore-point"')
    )
    target = config.targets[0]
    target.check_record(Recorded((), PG_POINT, {"kind": "postgres", "databases": ["ledger"]}))
    with pytest.raises(IntegrityError, match="names database 'other'"):
        target.check_record(Recorded((), {**PG_POINT, "databases": ["other"]}))
    with pytest.raises(IntegrityError, match="lsn"):
        target.check_record(Recorded((), {**PG_POINT, "lsn": "x"}))


def test_postgres_recovery_settings() -> None:
    found = recovery("postgres", PG_POINT, "2026-11-28T10:15:01.100Z")
    assert found["settings"]["recovery_target_name"] == f"txbackup-{SET_ID}"
    assert found["settings"]["recovery_target_timeline"] == "1"
    assert found["settings"]["recovery_target_action"] == "promote"
    assert found["alternative"]["recovery_target_lsn"] == "0/3000090"
    assert found["by_time"] == {"recovery_target_time": "2026-11-28T10:15:01.100Z"}
    assert "by_time" not in recovery("postgres", PG_POINT, None)
    lines = recovery_lines("postgres", PG_POINT, None)
    assert f"    recovery_target_name = 'txbackup-{SET_ID}'" in lines
    assert any("recovery_target_lsn = '0/3000090'" in line for line in lines)


def test_mysql_recovery_commands() -> None:
    maria = recovery("mysql", MARIA_POINT, "2026-11-28T10:15:01.100Z")
    assert maria["stop_position"] == 1234 and maria["binlog_file"] == "binlog.000002"
    commands = "\n".join(maria["commands"])
    assert "--stop-position=1234" in commands and "--stop-position=0-1-42" in commands
    assert "TZ=UTC mysqlbinlog --stop-datetime='2026-11-28 10:15:01'" in commands
    mysql = recovery("mysql", MYSQL_POINT, None)
    assert f"--include-gtids='{MYSQL_POINT['gtid_executed']}'" in "\n".join(mysql["commands"])
    assert "stop_datetime_utc" not in mysql
    for command in [*mysql["commands"], *maria["commands"]]:  # each pastes into a shell as one
        assert command.count("'") % 2 == 0, command
    assert recovery_lines("mysql", MARIA_POINT, None)[0].endswith("binlog.000002 position 1234:")


@pytest.mark.parametrize(
    ("last", "expected"),
    [
        (None, False),
        ("000000010000000000000002", False),
        ("000000010000000000000003", True),
        ("000000010000000000000004", True),
        ("000000010000000000000003.00000028.backup", False),
        ("000000010000000000000003.partial", False),
        ("000000020000000000000003.partial", True),  # a later timeline
        ("00000002.history", False),
        ("zzzzzzzzzzzzzzzzzzzzzzzz", False),
    ],
)
def test_the_archived_segment_is_read_from_pg_stat_archiver(last: object, expected: bool) -> None:
    assert archived(last, "000000010000000000000003") is expected


def test_a_drill_refuses_a_target_in_restore_point_mode(tmp_path: Path) -> None:
    maria = 'kind = "mysql"\ndatabases = ["orders"]\nmode = "restore-point"'
    config = load_cluster(_cluster(tmp_path, maria))
    with pytest.raises(UsageError, match=r'drill: target t \(mysql\) is in mode = "restore-point"'):
        resolve_places(config.targets, {"t": {"dsn": "mysql://root@elsewhere/orders"}})
