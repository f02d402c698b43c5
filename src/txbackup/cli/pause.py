"""txbackup pause: pause every application, hold, unpause, print the window."""

from __future__ import annotations

import argparse
import asyncio

from txbackup.admin.fleet import PauseWindow, paused
from txbackup.cli.common import (
    add_fleet_args,
    add_json,
    add_time_zone,
    flag_duration,
    fleet_from_args,
    print_json,
    run_async,
    window_lines,
    zone_from_args,
)

NAME = "pause"
HELP = "pause the applications, hold the pause, unpause, print the pause window"
DESCRIPTION = """\
Pause every application instance through scalar-admin (in parallel), hold the
pause for --hold, then unpause them all, and print the pause window: it starts
when the last instance confirmed it is paused and ends when the first unpause
is sent. Its midpoint is the restore point for point-in-time restores.

Every Pause is confirmed by CheckPaused (a node that says it paused but serves
fails the pause). ABORTED (ScalarDB Cluster 3.19: a race lost to another admin
request) is retried within the call's deadline.

If any instance fails to pause, every instance that may hold our pause is
unpaused at once and the command fails naming each failed endpoint; one whose
answer says another pause holds it (ErrorInfo TIMED_OUT_STILL_PAUSED) is left
paused, and named. Unpause also runs on Ctrl-C/SIGTERM. The servers' own pause
lease (if they have one) covers a killed txbackup.

The window is printed in UTC, in milliseconds since the epoch, and in the zone
of --time-zone with its offset (JSON: started_at, started_at_ms,
started_at_local, the same for ended_at and restore_point, and time_zone).

On Kubernetes (--k8s-release), the pods of the release are found first; a pod
not Ready or without an IP fails before anything is paused, and a pod that
restarts, is replaced, added or vanishes during the pause fails the command
(after the unpause).

example: txbackup pause --endpoints 10.0.0.5:50053,10.0.0.6:50053 --hold 10s --time-zone Asia/Tokyo
         txbackup pause --k8s-release scalardb --k8s-namespace prod --hold 10s"""


def register(parser: argparse.ArgumentParser) -> None:
    add_fleet_args(parser)
    parser.add_argument("--hold", default="0s", help="how long to hold the pause (default 0s)")
    parser.add_argument(
        "-n",
        "--no-wait",
        action="store_true",
        help="do not wait for in-flight requests to finish before answering",
    )
    parser.add_argument(
        "-m",
        "--max-pause-wait",
        metavar="DURATION",
        help="how long a server may wait for in-flight requests (server default if unset)",
    )
    add_time_zone(parser)
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    hold = flag_duration(args.hold, "--hold")
    zone = zone_from_args(args)  # before anything is paused
    given_wait = args.max_pause_wait
    max_wait_s = None if given_wait is None else flag_duration(given_wait, "--max-pause-wait")
    fleet, apps = fleet_from_args(args)
    wait = apps.wait_outstanding and not args.no_wait
    max_wait = apps.max_pause_wait_ms if max_wait_s is None else round(max_wait_s * 1000)

    async def main() -> PauseWindow:
        try:
            async with paused(fleet, wait, max_wait) as window:
                await asyncio.sleep(hold)
            return window
        finally:
            await fleet.close()

    window = run_async(main())
    data = window.to_json(zone) | {"endpoints": [str(e) for e in fleet.endpoints]}
    if fleet.names:  # a Kubernetes release's pods: pod name -> address
        data["pods"] = {name: str(e) for e, name in sorted(fleet.names.items(), key=lambda i: i[1])}
    if args.json:
        print_json(data)
    else:
        print(f"paused {len(fleet.endpoints)} endpoint(s): {', '.join(data['endpoints'])}")
        if fleet.names:
            print(f"pods           {', '.join(f'{n} ({e})' for n, e in data['pods'].items())}")
        w = window
        for line in window_lines(w.started_at, w.ended_at, w.midpoint, w.duration_ms, zone):
            print(line)
        if window.unverified:
            print(f"               not verified on {', '.join(window.unverified)} (no CheckPaused)")
    return 0
