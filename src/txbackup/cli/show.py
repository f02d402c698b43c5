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

NAME = "show"
HELP = "show one backup set: pause window, positions, artifacts"


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
    if args.json:
        # the manifest as stored, and its window in --time-zone
        print_json(manifest.to_dict() | {"pause_local": window_local(manifest.pause, zone)})
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
    return 0
