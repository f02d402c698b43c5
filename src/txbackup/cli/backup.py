"""txbackup backup: one transactionally-consistent backup set of every target."""

from __future__ import annotations

import argparse
from zoneinfo import ZoneInfo

from txbackup.admin.fleet import Fleet
from txbackup.catalog import Catalog
from txbackup.cli.common import (
    add_config,
    add_json,
    add_k8s_args,
    add_time_zone,
    fleet_of,
    run_async,
    window_lines,
    window_local,
    with_k8s_flags,
    zone_from_args,
)
from txbackup.cli.runmetrics import Run, add_metrics_arg, recorded
from txbackup.config import check_places, load_cluster
from txbackup.durations import parse_duration
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

One backup at a time: the run first takes a lock in the storage (locks/);
if another backup holds it, the run fails at once naming it, or waits for it
with --wait-lock. Then it cleans what killed runs left (see txbackup cleanup).
Before unpausing, every application must confirm it is still paused: if one
was unpaused meanwhile (by someone else, its lease, a restart) the set fails
naming it. Older servers without CheckPaused cannot confirm: the set is kept
with a warning. On Kubernetes (--k8s-release, or [applications] kubernetes)
the release's pods are found first (one not Ready or without an IP fails
before anything is paused) and listed again before the unpause: a pod
restarted, replaced, added or vanished fails the set, naming it.

Progress goes to stderr; with --json, one JSON object per event on stdout,
the last one {"event": "result", ...}. The pause window is shown in UTC, in ms
since the epoch, and in the zone of --time-zone with its offset (the manifest
records UTC and ms).

Metrics: with --metrics-file or a [metrics] table, every run (failed ones too)
leaves Prometheus metrics: last run and last success time, duration, exit code,
pause window, bytes, and per target bytes, durations and status (README: Metrics).
Exit codes: 0 set complete, 1 failed (nothing left paused), 2 bad input (nothing
done), 130/143 stopped by SIGINT/SIGTERM (cleaned up).

example: txbackup backup -c cluster.toml
         txbackup backup -c cluster.toml --k8s-release scalardb --k8s-namespace prod"""


def register(parser: argparse.ArgumentParser) -> None:
    add_config(parser, required=True)
    add_k8s_args(parser.add_argument_group("applications on Kubernetes (instead of the file's)"))  # type: ignore[arg-type]
    parser.add_argument(
        "--wait-lock",
        metavar="DURATION",
        default="0s",
        help="if another backup holds the storage lock, wait up to this long (e.g. 10m; default 0s: fail)",
    )
    add_metrics_arg(parser)
    add_time_zone(parser)
    add_json(parser)


def summary(manifest: Manifest, unverified: list[str], zone: ZoneInfo | None = None) -> dict[str, object]:
    local = {} if zone is None else window_local(manifest.pause, zone)
    return {
        "set_id": manifest.set_id,
        "pause": manifest.pause.__dict__ | local | {"verified": not unverified, "unverified": unverified},
        "restore_point": manifest.restore_point,
        "timings": manifest.timings.__dict__,
        "targets": {
            t.name: {"kind": t.kind, "bytes": sum(a.size for a in t.artifacts),
                     "stored_bytes": sum(a.stored_size for a in t.artifacts)}
            for t in manifest.targets
        },
    }  # fmt: skip


def run(args: argparse.Namespace) -> int:
    shown: Reporter = JsonReporter() if args.json else HumanReporter()
    with recorded(NAME, args, shown) as metrics:  # every outcome leaves metrics, when configured
        return _run(args, metrics)


def _run(args: argparse.Namespace, metrics: Run) -> int:
    wait_lock = parse_duration(args.wait_lock)
    zone = zone_from_args(args)
    config = load_cluster(args.config)
    metrics.configure(config.metrics)
    metrics.expect_targets(config.targets)
    # before anything is paused
    check_places(config.storage, config.catalog, writable=True, options=config.storage_options)
    reporter = metrics.reporter  # the engine's events, also read for the metrics
    catalog = Catalog(config.catalog)
    apps = with_k8s_flags(config.applications, args)
    fleets: list[Fleet] = []  # the window is the fleet's, once paused

    async def main() -> Manifest:
        fleet = fleet_of(apps)  # Kubernetes pods found now, before anything is paused
        fleets.append(fleet)
        plan = BackupPlan(
            fleet=fleet,
            targets=config.targets,
            storage=open_storage(config.storage, config.storage_options),
            catalog=catalog,
            wait_outstanding=apps.wait_outstanding,
            max_pause_wait_ms=apps.max_pause_wait_ms,
            capture_deadline_s=config.capture_deadline_s,
            min_pause_s=config.min_pause_s,
            lock_wait_s=wait_lock,
            reporter=reporter,
            coordinator=config.coordinator(),
        )
        return await run_backup(plan)

    manifest = run_async(main())
    unverified = fleets[-1].window.unverified if fleets else []
    result = summary(manifest, unverified, zone)
    metrics.summary = result
    metrics.succeeded()
    if args.json:
        reporter.event("result", **result)
    else:
        t = manifest.timings
        print(f"backup set     {manifest.set_id}  (complete)")
        w = manifest.pause
        for line in window_lines(w.started_at, w.ended_at, w.midpoint, t.pause_ms, zone):
            print(line)
        if unverified:
            print(f"               not verified on {', '.join(unverified)} (no CheckPaused)")
        print(f"capture        {t.capture_ms} ms inside the pause; export {t.export_ms} ms after it")
        for name, info in result["targets"].items():  # type: ignore[attr-defined]
            print(f"  {name:<16} {info['kind']:<9} {info['bytes']} bytes ({info['stored_bytes']} stored)")
    return 0
