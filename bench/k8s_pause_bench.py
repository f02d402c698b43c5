"""Pause and unpause of a 100-pod Kubernetes release: txbackup against the Java scalar-admin client.

    .venv/bin/python -m bench.k8s_pause_bench [--pods 100] [--rounds 5] [--json]

``bench.fleet_server`` starts the pods' servers (sample pausable servers, one
process); the FAKE Kubernetes API of the tests (``tests/servers/fake_k8s.py``,
HTTPS, a bearer token) lists them as the pods of release ``bench``: each pod's
container port named ``admin`` is its server's port, the target of the
release's ``*-headless`` Service (a named target port, so that every pod can
live on 127.0.0.1). Each round, interleaved:

- ``txbackup pause --k8s-release bench ... --hold 0s --json``: one process
  lists the pods and the Service, pauses every pod, lists the pods again with
  CheckPaused on each (churn), unpauses;
- ``txbackup pause -a <the same 100 endpoints> --hold 0s --json``: the same
  without Kubernetes (what discovery and the churn check cost);
- the Java scalar-admin CLI, ``-c PAUSE`` then ``-c UNPAUSE`` on the same 100
  endpoints (two JVMs; scalar-admin-for-kubernetes' own jar is not on Maven
  Central, so its client library stands in, given the endpoints: it does no
  discovery and no churn check).

Wall time from spawn to exit, medians; after every round each server must have
completed one Pause and one Unpause, every Pause before the first Unpause (all
paused at one instant), and all must serve again. Ratios: Java / ours.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.pause_latency import (
    BenchError,
    FleetProcess,
    Series,
    java_command,
    ratio,
    run_timed,
    txbackup_command,
)
from tests.servers.fake_k8s import FakeKubernetes
from txbackup.cli.common import print_table

RELEASE = NAMESPACE = "bench"


def release_in(api: FakeKubernetes, fleet: FleetProcess) -> None:
    """The fleet's servers as the pods of a ScalarDB Cluster release, with 2 Envoy pods."""
    for i, port in enumerate(fleet.ports):
        api.add_pod(NAMESPACE, f"scalardb-cluster-node-{i}", release=RELEASE, app="scalardb-cluster",
                    ip="127.0.0.1", port=port, port_name="admin")  # fmt: skip
    for i in range(2):
        api.add_pod(NAMESPACE, f"envoy-{i}", release=RELEASE, app="envoy", ip="127.0.0.1", port=1,
                    port_name="envoy")  # fmt: skip
    api.add_service(NAMESPACE, f"{RELEASE}-headless", release=RELEASE, app="scalardb-cluster",
                    ports=[("scalardb-cluster", 60053, "admin")])  # fmt: skip


async def ours_round(fleet: FleetProcess, command: list[str], what: str, series: Series) -> None:
    await fleet.stamps()  # forget earlier calls
    timed = await run_timed(command, what)
    await fleet.check_all_serving(what)
    fleet.check_stamps(await fleet.stamps(), what)
    window = json.loads(timed.result.stdout)
    if len(window["endpoints"]) != len(fleet.ports):
        raise BenchError(f"{what}: paused {len(window['endpoints'])} endpoints, not {len(fleet.ports)}")
    series.add(timed.wall)


async def java_round(fleet: FleetProcess, command: list[str], series: Series) -> None:
    what = f"Java PAUSE/UNPAUSE, {len(fleet.ports)} endpoints"
    await fleet.stamps()
    paused = await run_timed([*command, "-c", "PAUSE", "-a", fleet.addresses], f"{what} (PAUSE)")
    await fleet.check_all_paused(what)
    unpaused = await run_timed([*command, "-c", "UNPAUSE", "-a", fleet.addresses], f"{what} (UNPAUSE)")
    await fleet.check_all_serving(what)
    fleet.check_stamps(await fleet.stamps(), what)
    series.add(paused.wall + unpaused.wall)


async def measure(pods: int, rounds: int) -> dict[str, Any]:
    java = java_command()
    ours = txbackup_command()
    results = {"k8s": Series(), "list": Series(), "java": Series()}
    fleet = await FleetProcess.start(pods)
    try:
        with tempfile.TemporaryDirectory() as folder, FakeKubernetes(Path(folder)) as api:
            release_in(api, fleet)
            kubeconfig = api.kubeconfig(Path(folder) / "kubeconfig", token=api.token())
            k8s = [*ours, "pause", "--k8s-release", RELEASE, "--k8s-namespace", NAMESPACE,
                   "--kubeconfig", str(kubeconfig), "--hold", "0s", "--json"]  # fmt: skip
            listed = [*ours, "pause", "-a", fleet.addresses, "--hold", "0s", "--json"]
            # a warm-up round of each (page cache, JIT-less JVM start), not counted
            for counted in [False] + [True] * rounds:
                scratch = {k: (v if counted else Series()) for k, v in results.items()}
                await ours_round(fleet, k8s, f"txbackup pause --k8s-release, {pods} pods", scratch["k8s"])
                await ours_round(fleet, listed, f"txbackup pause -a, {pods} endpoints", scratch["list"])
                await java_round(fleet, java, scratch["java"])
            requests = len(api.requests)
    finally:
        await fleet.close()
    return {
        "pods": pods,
        "rounds": rounds,
        "k8s_api_requests": requests,
        "ours_k8s": results["k8s"].to_json(),
        "ours_list": results["list"].to_json(),
        "java": results["java"].to_json(),
        "ratio_java_over_ours_k8s": ratio(results["java"], results["k8s"]),
        "ratio_java_over_ours_list": ratio(results["java"], results["list"]),
        "load_average": os.getloadavg(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pods", type=int, default=100, help="pods in the release (default 100)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.pods <= 1000 or not 1 <= args.rounds <= 100:
        parser.error("--pods must be 1-1000 and --rounds 1-100")
    try:
        result = asyncio.run(measure(args.pods, args.rounds))
    except BenchError as exc:
        print(f"k8s_pause_bench: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
        return 0

    def cell(key: str) -> str:
        data = result[key]
        return f"{data['median_ms']:.0f} ms (p95 {data['p95_ms']:.0f})"

    def times(key: str) -> str:
        value = result[key]
        return "-" if value is None else f"{value:.2f}x"

    print(f"{args.pods} pods, {args.rounds} rounds, load average {result['load_average'][0]:.2f}")
    print_table(
        ["CLIENT", "PAUSE+UNPAUSE WALL (median)", "JAVA / THIS"],
        [
            ["txbackup --k8s-release (discovery, churn check)", cell("ours_k8s"),
             times("ratio_java_over_ours_k8s")],
            ["txbackup -a (the same endpoints)", cell("ours_list"), times("ratio_java_over_ours_list")],
            ["Java scalar-admin (PAUSE + UNPAUSE, 2 JVMs)", cell("java"), "1.00x"],
        ],
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
