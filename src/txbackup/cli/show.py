"""txbackup show: one backup set in detail (its manifest)."""

from __future__ import annotations

import argparse

from txbackup.cli.common import (
    add_json,
    add_key_args,
    add_repository_args,
    add_time_zone,
    open_keyring,
    open_repository,
    print_json,
    set_id_arg,
    window_lines,
    window_local,
    zone_from_args,
)
from txbackup.engine.manifest import read_manifest
from txbackup.errors import TxbackupError
from txbackup.targets.sql.restore_points import KINDS as POINT_KINDS
from txbackup.targets.sql.restore_points import is_point, recovery, recovery_lines

NAME = "show"
HELP = "show one backup set: pause window, positions, artifacts, recovery settings"
DESCRIPTION = """Show one backup set: its pause window and restore point, each target's
captured position and artifacts. A target in mode = "restore-point" stores no data:
for it, show prints the settings to give your own recovery tool (PostgreSQL:
recovery_target_name, or recovery_target_lsn, with restore_command and
recovery_target_timeline; MySQL/MariaDB: mysqlbinlog --stop-position, GTID and
--stop-datetime hints). With --json they are under "recovery", by target name."""


def register(parser: argparse.ArgumentParser) -> None:
    add_repository_args(parser)
    parser.add_argument("set_id", metavar="ID", type=set_id_arg)
    add_key_args(parser)
    add_time_zone(parser)
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    zone = zone_from_args(args)
    storage, catalog, _ = open_repository(args)
    row = catalog.get(args.set_id)
    if row is not None and row.status != "complete":
        raise TxbackupError(f"set {args.set_id} is {row.status}, not complete: {row.error or 'no manifest'}")
    manifest = read_manifest(storage, args.set_id, keyring=open_keyring(args, storage))
    # read_manifest checked every restore point's fields (they go into commands users paste)
    points = [t for t in manifest.targets if t.kind in POINT_KINDS and is_point(t.position)]
    if args.json:
        # the manifest as stored, and its window in --time-zone
        data = manifest.to_dict() | {"pause_local": window_local(manifest.pause, zone)}
        if points:
            data["recovery"] = {t.name: recovery(t.kind, t.position, manifest.restore_point) for t in points}
        print_json(data)
        return 0
    t = manifest.timings
    print(f"set            {manifest.set_id} (complete)")
    print(f"created        {manifest.created_at}, finished {manifest.finished_at}")
    w = manifest.pause
    for line in window_lines(w.started_at, w.ended_at, w.midpoint, t.pause_ms, zone):
        print(line)
    print(f"timings        drain {t.drain_ms} ms, capture {t.capture_ms} ms, export {t.export_ms} ms")
    print(f"applications   {', '.join(manifest.applications) or '-'}")
    for target in manifest.targets:
        print(f"target {target.name} ({target.kind})")
        for key, value in target.position.items():
            print(f"  {key}: {value}")
        for a in target.artifacts:
            print(f"  {a.path}  {a.size} bytes, stored {a.stored_size}, sha256 {a.sha256[:16]}...")
        if target in points:
            print("\n".join(recovery_lines(target.kind, target.position, manifest.restore_point)))
    return 0
