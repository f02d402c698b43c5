"""txbackup backup: one transactionally-consistent backup set of every target."""

from __future__ import annotations

import argparse

from txbackup.admin.fleet import Fleet
from txbackup.catalog import Catalog
from txbackup.cli.common import add_config, add_json, run_async
from txbackup.config import check_places, load_cluster
from txbackup.engine.backup import BackupPlan, run_backup
from txbackup.engine.manifest import Manifest
from txbackup.engine.progress import HumanReporter, JsonReporter, Reporter
from txbackup.storage import open_storage

NAME = "backup"
HELP = "take one consistent backup set of every target in the cluster file"
DESCRIPTION = """\
Preflight (every application and database reachable; nothing is paused if not),
pause the applications, capture a consistent snapshot of every database in
parallel (constant time: no data is copied inside the pause), unpause, export
the snapshots to storage (zstd-compressed, SHA-256 checksummed), and write the
manifest last. A set without a manifest does not exist: on any failure the set
is marked FAILED and its partial files are removed.

Progress goes to stderr; with --json, one JSON object per event on stdout,
the last one {"event": "result", ...}.

example: txbackup backup -c cluster.toml"""


def register(parser: argparse.ArgumentParser) -> None:
    add_config(parser, required=True)
    add_json(parser)


def summary(manifest: Manifest) -> dict[str, object]:
    return {
        "set_id": manifest.set_id,
        "pause": manifest.pause.__dict__,
        "restore_point": manifest.restore_point,
        "timings": manifest.timings.__dict__,
        "targets": {
            t.name: {"kind": t.kind, "bytes": sum(a.size for a in t.artifacts),
                     "stored_bytes": sum(a.stored_size for a in t.artifacts)}
            for t in manifest.targets
        },
    }  # fmt: skip


def run(args: argparse.Namespace) -> int:
    config = load_cluster(args.config)
    check_places(config.storage, config.catalog, writable=True)  # before anything is paused
    reporter: Reporter = JsonReporter() if args.json else HumanReporter()
    catalog = Catalog(config.catalog)

    async def main() -> Manifest:
        apps = config.applications
        plan = BackupPlan(
            fleet=Fleet(apps.resolve(), apps.options),
            targets=config.targets,
            storage=open_storage(config.storage),
            catalog=catalog,
            wait_outstanding=apps.wait_outstanding,
            max_pause_wait_ms=apps.max_pause_wait_ms,
            capture_deadline_s=config.capture_deadline_s,
            min_pause_s=config.min_pause_s,
            reporter=reporter,
        )
        return await run_backup(plan)

    manifest = run_async(main())
    result = summary(manifest)
    if args.json:
        reporter.event("result", **result)
    else:
        t = manifest.timings
        print(f"backup set     {manifest.set_id}  (complete)")
        print(f"pause window   {manifest.pause.started_at} .. {manifest.pause.ended_at} ({t.pause_ms} ms)")
        print(f"restore point  {manifest.restore_point}")
        print(f"capture        {t.capture_ms} ms inside the pause; export {t.export_ms} ms after it")
        for name, info in result["targets"].items():  # type: ignore[attr-defined]
            print(f"  {name:<16} {info['kind']:<9} {info['bytes']} bytes ({info['stored_bytes']} stored)")
    return 0
