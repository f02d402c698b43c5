"""txbackup unpause: unpause every application (recovery after an interrupted pause)."""

from __future__ import annotations

import argparse

from txbackup.cli.common import add_fleet_args, add_json, fleet_from_args, print_json, run_async

NAME = "unpause"
HELP = "unpause every application instance"
DESCRIPTION = """\
Send Unpause to every endpoint. Harmless on instances that are not paused, so
it is the safe first step when a pause was interrupted. With --k8s-release,
every pod of the release that has an IP is unpaused, Ready or not (a paused
pod may fail its readiness probe); pods without an IP are named on stderr.

example: txbackup unpause --k8s-release scalardb --k8s-namespace prod"""


def register(parser: argparse.ArgumentParser) -> None:
    add_fleet_args(parser)
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    fleet, _ = fleet_from_args(args, strict=False)  # a paused pod may not be Ready

    async def main() -> None:
        try:
            await fleet.unpause()
        finally:
            await fleet.close()

    run_async(main())
    endpoints = [str(e) for e in fleet.endpoints]
    if args.json:
        print_json({"unpaused": endpoints})
    else:
        print(f"unpaused {len(endpoints)} endpoint(s): {', '.join(endpoints)}")
    return 0
