"""txbackup status: is each application instance paused?"""

from __future__ import annotations

import argparse

from txbackup.admin.fleet import EndpointStatus
from txbackup.cli.common import (
    add_fleet_args,
    add_json,
    fleet_from_args,
    print_json,
    print_table,
    run_async,
)

NAME = "status"
HELP = "show whether each application instance is paused"
DESCRIPTION = """\
Ask every endpoint (CheckPaused) and print a table. An older server that only
has the legacy Stats call shows as "unknown (old server)". With a Kubernetes
release (--k8s-release, or the cluster file's [applications] kubernetes), each
pod is listed by name and address. Exit code: 0 when every endpoint answered,
1 when any could not be reached.

example: txbackup status --k8s-release scalardb --k8s-namespace prod"""


def register(parser: argparse.ArgumentParser) -> None:
    add_fleet_args(parser)
    add_json(parser)


def run(args: argparse.Namespace) -> int:
    fleet, _ = fleet_from_args(args, strict=False)  # a paused pod may not be Ready

    async def main() -> list[EndpointStatus]:
        try:
            return await fleet.status()
        finally:
            await fleet.close()

    statuses = run_async(main())
    pods = fleet.names  # endpoint -> pod name, for the pods of a Kubernetes release
    if args.json:
        print_json(
            [
                {"endpoint": str(s.endpoint), "state": s.state, "paused": s.paused, "error": s.error}
                | ({"pod": pods.get(s.endpoint)} if pods else {})
                for s in statuses
            ]
        )
    elif pods:
        rows = [[pods.get(s.endpoint, ""), s.endpoint, s.state, s.error or ""] for s in statuses]
        print_table(["POD", "ADDRESS", "STATE", "DETAIL"], rows)
    else:
        print_table(["ENDPOINT", "STATE", "DETAIL"], [[s.endpoint, s.state, s.error or ""] for s in statuses])
    return 1 if any(s.error for s in statuses) else 0
