"""Prune time on a repository of 100 sets: a local folder and moto S3.

    .venv/bin/python -m bench.prune_bench [--sets 100] [--blobs 20] [--stores local,s3] [--json]

Builds a repository of ``--sets`` Cassandra-like sets (each: one node file list
referencing ``--blobs`` blobs, half of them shared with a neighbouring set, the
way SSTables persist between backups), as the tests do (``tests/prune_support``),
then forgets every second set and times, under an exclusive lock:

- ``prune --dry-run`` with nothing to delete after a first prune (the steady
  state: every manifest and file list read, every blob listed);
- the first ``prune`` that deletes the forgotten sets' unreferenced blobs.

moto server runs on 127.0.0.1 (``tests/servers``); its latency is not AWS's, so
the S3 numbers count requests more than they predict a real bucket. Not a
pass/fail test: it prints numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.prune_support import cassandra_set
from tests.servers.s3 import MotoS3Server
from txbackup.catalog import Catalog
from txbackup.engine.manifest import list_manifests
from txbackup.engine.prune import Report, forget_set, prune
from txbackup.locks import EXCLUSIVE, acquire
from txbackup.storage import LocalStorage, open_storage
from txbackup.storage.base import Storage


def build(storage: Storage, scratch: Path, sets: int, blobs: int) -> float:
    started = time.monotonic()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(sets):
        # half the blobs are shared with the neighbouring set (SSTables that persist), half new
        contents = [(f"shared {n // 2}-{i}" if i < blobs // 2 else f"own {n}-{i}").encode() * 64
                    for i in range(blobs)]  # fmt: skip
        cassandra_set(storage, scratch, f"2026{n:04d}T000000Z-{n:04x}", start + timedelta(hours=n), contents)
    return time.monotonic() - started


def timed_prune(storage: Storage, dry_run: bool) -> tuple[float, Report]:
    lock = asyncio.run(acquire(storage, "prune", mode=EXCLUSIVE))
    try:
        started = time.monotonic()
        report = prune(storage, lock, {}, grace_s=0.0, dry_run=dry_run)
        return time.monotonic() - started, report
    finally:
        lock.release()


def measure(storage: Storage, scratch: Path, sets: int, blobs: int) -> dict[str, Any]:
    build_s = build(storage, scratch, sets, blobs)
    catalog = Catalog(str(scratch / "catalog.db"))
    forgotten = Report()
    started = time.monotonic()
    for manifest in list_manifests(storage)[::2]:
        forget_set(storage, catalog, manifest, {}, forgotten)
    forget_s = time.monotonic() - started
    first_s, first = timed_prune(storage, dry_run=False)
    steady_s, steady = timed_prune(storage, dry_run=True)
    return {
        "sets": sets, "blobs_per_set": blobs, "build_s": round(build_s, 2),
        "forget_s": round(forget_s, 2), "forgotten": len(forgotten.forgotten),
        "prune_s": round(first_s, 2), "removed_objects": first.objects_removed,
        "removed_bytes": first.bytes_removed, "steady_prune_s": round(steady_s, 2),
        "referenced_blobs": steady.blobs_referenced,
    }  # fmt: skip


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--sets", type=int, default=100)
    parser.add_argument("--blobs", type=int, default=20)
    parser.add_argument("--stores", default="local,s3")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="prune-bench-") as folder:
        scratch = Path(folder)
        if "local" in args.stores:
            results["local"] = measure(LocalStorage(str(scratch / "repo")), scratch, args.sets, args.blobs)
        if "s3" in args.stores:
            with MotoS3Server() as server:
                bucket = server.new_bucket("bench")
                os.environ.update(bucket.env())
                storage = open_storage(bucket.url("repo/"), {"path_style": True})
                (scratch / "s3").mkdir()
                results["moto-s3"] = measure(storage, scratch / "s3", args.sets, args.blobs)
    results["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for store, found in results.items():
        if store == "load_average":
            print(f"load average: {found}")
            continue
        print(f"{store}: {found['sets']} sets x {found['blobs_per_set']} blobs, built in {found['build_s']}s;"
              f" forget {found['forgotten']} sets {found['forget_s']}s; prune (deleting"
              f" {found['removed_objects']} objects, {found['removed_bytes']} bytes) {found['prune_s']}s;"
              f" prune with nothing to delete ({found['referenced_blobs']} referenced blobs)"
              f" {found['steady_prune_s']}s")  # fmt: skip


if __name__ == "__main__":
    main()
