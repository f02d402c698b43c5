"""What confirming every Pause with CheckPaused costs (issue 13, part 3).

    .venv/bin/python -m bench.pause_confirm_cost [--sizes 10,100] [--rounds 20] [--json]

``Fleet.pause()`` follows each endpoint's Pause with a CheckPaused (a node may
answer "paused" and serve on: ScalarDB Cluster before 3.15.9 / 3.16.6 / 3.17.4 /
3.18.1). Against the same N servers (``bench.fleet_server``, one separate
process, as in ``pause_latency``) this alternates, round by round so that any
other load on the machine hits both alike:

- **pause only**: fresh ``AdminClient`` per endpoint, every Pause in parallel (what
  ``Fleet.pause`` did before the confirmation), timed until every answer;
- **pause + check**: a fresh ``Fleet``, ``Fleet.pause()`` (Pause, then CheckPaused,
  per endpoint, in parallel), timed likewise;

each followed by an unpause and the same checks as ``pause_latency`` (all gates
paused, then all serving). It reports both medians / p95 and the median of the
per-round differences.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.pause_latency import BenchError, FleetProcess, p95, parse_sizes
from txbackup.admin.client import AdminClient
from txbackup.admin.fleet import Fleet


async def pause_only(fleet: FleetProcess) -> float:
    clients = [AdminClient(e) for e in fleet.endpoints]
    try:
        start = time.perf_counter()
        await asyncio.gather(*(c.pause() for c in clients))
        took = time.perf_counter() - start
        await fleet.check_all_paused("pause only")
        await asyncio.gather(*(c.unpause() for c in clients))
    finally:
        for c in clients:
            await c.close()
    await fleet.check_all_serving("pause only")
    return took


async def pause_and_check(fleet: FleetProcess) -> float:
    client = Fleet(fleet.endpoints)
    try:
        start = time.perf_counter()
        await client.pause()
        took = time.perf_counter() - start
        await fleet.check_all_paused("pause + check")
        await client.unpause()
    finally:
        await client.close()
    await fleet.check_all_serving("pause + check")
    return took


def summary(samples: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(samples) * 1000, 2), "p95_ms": round(p95(samples) * 1000, 2)}


async def measure(size: int, rounds: int) -> dict[str, Any]:
    fleet = await FleetProcess.start(size)
    try:
        await pause_only(fleet)  # warm-up: imports, first connects
        await pause_and_check(fleet)
        only: list[float] = []
        checked: list[float] = []
        for i in range(rounds):
            pair = (pause_only, pause_and_check) if i % 2 == 0 else (pause_and_check, pause_only)
            for run in pair:
                (only if run is pause_only else checked).append(await run(fleet))
    finally:
        await fleet.close()
    differences = [c - o for c, o in zip(checked, only, strict=True)]
    return {
        "servers": size,
        "pause_only": summary(only),
        "pause_and_check": summary(checked),
        "added_median_ms": round(statistics.median(differences) * 1000, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    description = "What confirming every Pause with CheckPaused costs."
    parser = argparse.ArgumentParser(prog="python -m bench.pause_confirm_cost", description=description)
    parser.add_argument("--sizes", type=parse_sizes, default=[10, 100], help="fleet sizes (10,100)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds per size, each way (20)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    load_before = os.getloadavg()[0]
    try:
        results = [asyncio.run(measure(size, args.rounds)) for size in args.sizes]
    except BenchError as exc:
        print(f"pause_confirm_cost: {exc}", file=sys.stderr)
        return 1
    load = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    if args.json:
        json.dump({"rounds": args.rounds, "load_average_1m": load, "results": results}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("servers  pause only (median/p95 ms)  pause + CheckPaused (median/p95 ms)  added (median ms)")
        for r in results:
            o, c = r["pause_only"], r["pause_and_check"]
            print(
                f"{r['servers']:>7}  {o['median_ms']:>10} / {o['p95_ms']:<13}  {c['median_ms']:>10} / "
                f"{c['p95_ms']:<22}  {r['added_median_ms']}"
            )
        print(f"({args.rounds} rounds each way, load average {load['before']} before, {load['after']} after)")
    if max(load_before, os.getloadavg()[0]) > (os.cpu_count() or 1):
        print("pause_confirm_cost: warning: the machine was busy (load above the CPU count): rerun quietly",
              file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
