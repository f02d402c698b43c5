"""SQLite restore, ours against ``zstd -d`` of a compressed copy, alternated.

    .venv/bin/python -m bench.sqlite_restore_bench [--sizes 1000] [--rounds 4] [--sync-first] [--json]

One SQLite file of ``backup_bench``'s rows per size (``--sizes``: MB of rows;
1000 makes an 843 MB file), one txbackup backup of it (the real engine, local
folder storage) and, untimed, a ``zstd`` (level 3) copy of the file. Then
``--rounds`` times, the order reversed every other round (so that neither side
always runs after the other's writes):

- **ours**: ``restore_set`` of the set into a new path (decompressed, verified
  as it streams, written back as it goes, fsynced, the folder fsynced);
- **zstd -d**: ``zstd -d -o FILE`` of the copy (nothing synced);
- **zstd -d + sync**: the same, then ``sync FILE`` (as durable as ours).

``--sync-first``: ``sync`` before every restore, so that none starts with
another's writeback still running. Ratio = ours / native: below 1 we are faster.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.backup_bench import ROW_BYTES, App, Ours, fill_sqlite, ms_since, sqlite_target
from bench.common import closing_line, sizes_rounds_parser
from txbackup.cli.common import print_table

SIDES = ("ours", "zstd -d", "zstd -d + sync")


def say(text: str) -> None:
    print(f"[sqlite_restore_bench] {text}", file=sys.stderr, flush=True)


async def measure(work: Path, app: App, mb: int, rounds: int, sync_first: bool) -> dict[str, Any]:
    folder = work / f"{mb}mb"
    folder.mkdir()
    ours = Ours(folder, app.endpoint)
    lite = folder / "lite.db"
    say(f"[{mb} MB] filling")
    size = fill_sqlite(lite, max(1000, mb * 1_000_000 // ROW_BYTES))
    target = sqlite_target("lite", lite)
    manifest, _ = await ours.backup([target])
    packed = folder / "copy.db.zst"
    subprocess.run(["zstd", "-q", "-f", "-o", str(packed), str(lite)], check=True)

    def zstd(dest: Path, sync: bool) -> float:
        started = time.monotonic()
        subprocess.run(["zstd", "-q", "-d", "-f", "-o", str(dest), str(packed)], check=True)
        if sync:
            subprocess.run(["sync", str(dest)], check=True)
        return ms_since(started)

    run: dict[str, Callable[[Path], float]] = {
        "ours": lambda dest: ours.restore(manifest, [target], {"lite": str(dest)}),
        "zstd -d": lambda dest: zstd(dest, False),
        "zstd -d + sync": lambda dest: zstd(dest, True),
    }
    samples: dict[str, list[float]] = {side: [] for side in SIDES}
    try:
        for r in range(rounds):
            say(f"[{mb} MB] round {r + 1}/{rounds}")
            for side in SIDES if r % 2 == 0 else SIDES[::-1]:
                dest = folder / "restored.db"
                if sync_first:
                    os.sync()
                samples[side].append(round(run[side](dest), 1))
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{dest}{suffix}").unlink(missing_ok=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"mb": mb, "file_bytes": size, "stored_bytes": ours.stored_bytes(manifest), "samples_ms": samples}


async def bench(sizes: Sequence[int], rounds: int, sync_first: bool) -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="txb-sqlite-restore-bench-"))
    app = App()
    try:
        return [await measure(work, app, mb, rounds, sync_first) for mb in sizes]
    finally:
        app.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = sizes_rounds_parser(
        "sqlite_restore_bench",
        "txbackup's SQLite restore against zstd -d (and zstd -d + sync), alternated.",
        sizes=1000,
        rounds=4,
    )
    parser.add_argument("--sync-first", action="store_true", help="sync before every restore")
    args = parser.parse_args(argv)
    sizes = args.sizes
    if shutil.which("zstd") is None:
        print("sqlite_restore_bench: the zstd command is needed", file=sys.stderr)
        return 1
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    results = asyncio.run(bench(sizes, args.rounds, args.sync_first))
    load = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    if args.json:
        print(json.dumps({"rounds": args.rounds, "sync_first": args.sync_first, "load_average_1m": load,
                          "results": results}, indent=2))  # fmt: skip
        return 0
    rows = []
    for r in results:
        medians = {side: statistics.median(r["samples_ms"][side]) for side in SIDES}
        rows.append(
            [
                r["mb"],
                f"{r['file_bytes'] / 1e6:.0f}",
                f"{medians['ours']:.0f}",
                f"{medians['zstd -d']:.0f}",
                f"{medians['ours'] / medians['zstd -d']:.2f}",
                f"{medians['zstd -d + sync']:.0f}",
                f"{medians['ours'] / medians['zstd -d + sync']:.2f}",
            ]
        )
    synced = ", sync before each" if args.sync_first else ""
    print(f"\nSQLite restore (medians of {args.rounds}, alternated{synced}):")
    print_table(["MB", "file MB", "ours ms", "zstd -d ms", "ratio", "zstd -d + sync ms", "ratio"], rows)
    for r in results:
        print(f"  {r['mb']} MB: " + ", ".join(f"{side} {r['samples_ms'][side]}" for side in SIDES))
    print(closing_line(time.monotonic() - started, load))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
