"""txbackup pause: pause every application, hold, unpause, print the window."""

from __future__ import annotations

import argparse
import asyncio

from txbackup.admin.fleet import PauseWindow, paused
from txbackup.cli.common import (
    add_fleet_args,
    add_json,
    flag_duration,
    fleet_from_args,
    print_json,
    run_async,
)

NAME = "pause"
HELP = "pause the applications, hold the pause, unpause, print the pause window"
DESCRIPTION = """\
Pause every application instance through scalar-admin (in parallel), hold the
pause for --hold, then unpause them all, and print the pause window: it starts
when the last instance confirmed it is paused and ends when the first unpause
is sent. Its midpoint is the restore point for point-in-time restores.

If any instance fails to pause, every instance is unpaused at once and the
command fails naming each failed endpoint. Unpause also runs on Ctrl-C/SIGTERM.
The servers' own pause lease (if they have one) covers a killed txbackup.

On Kubernetes (--k8s-release), the pods of the release are found first; a pod
not Ready or without an IP fails before anything is paused, and a pod that
restarts, is replaced, added or vanishes during the pause fails the command
(after the unpause).

example: txbackup pause --endpoints 10.0.0.5:50053,10.0.0.6:50053 --hold 10s
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
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    hold = flag_duration(args.hold, "--hold")
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
    data = window.to_json() | {"endpoints": [str(e) for e in fleet.endpoints]}
    if fleet.names:  # a Kubernetes release's pods: pod name -> address
        data["pods"] = {name: str(e) for e, name in sorted(fleet.names.items(), key=lambda i: i[1])}
    if args.json:
        print_json(data)
    else:
        print(f"paused {len(fleet.endpoints)} endpoint(s): {', '.join(data['endpoints'])}")
        if fleet.names:
            print(f"pods           {', '.join(f'{n} ({e})' for n, e in data['pods'].items())}")
        print(f"pause window   {data['started_at']} .. {data['ended_at']} ({data['duration_ms']} ms)")
        print(f"restore point  {data['restore_point']}")
    return 0
