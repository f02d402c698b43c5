"""Pause latency of a fleet of local servers: our client against the Java scalar-admin client.

    .venv/bin/python -m bench.pause_latency [--sizes 1,10,100] [--rounds 20] [--cli-rounds 5] [--json]

For each fleet size N, ``bench.fleet_server`` starts N sample pausable servers
on 127.0.0.1 in one separate Python process, then this process measures:

- our client in-process: ``Fleet.pause()`` (call -> every server confirmed) and
  ``Fleet.unpause()`` (call -> every server answered), a fresh ``Fleet`` (so
  fresh channels, connect included) per round;
- our CLI, ``txbackup pause -a ... --hold 0s --json`` (one process pauses and
  unpauses), and the Java CLI ``com.scalar.admin.AdminCommand -c PAUSE`` then
  ``-c UNPAUSE`` (two JVMs), wall time from spawn to exit, rounds interleaved;
- inside the CLI processes, from the log/JSON timestamps the clients print and
  the servers' own handler timestamps (same host clock): first Pause reaching a
  server -> the client reports every server paused, and the unpause likewise.

After every measured pause it checks that every gate was really paused at one
instant (each server completed a Pause, and the last Pause completed before the
first Unpause arrived; for the in-process and Java runs also the gates' state),
and after every unpause that no gate is paused and every server answers a real
``Work`` request. Any failed check stops the benchmark (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc

from txbackup.admin.client import Endpoint
from txbackup.admin.fleet import Fleet
from txbackup.cli.common import print_table
from txbackup.demo.sample_service import WORK_METHOD

REPO = Path(__file__).resolve().parents[1]
ADMIN_JARS = REPO / ".cache" / "jars" / "admin"
JAVA_MAIN = "com.scalar.admin.AdminCommand"
# the same quick-start options the interop tests give this short-lived CLI
JVM_OPTS = ["-Xms16m", "-Xmx128m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]
CLI_TIMEOUT = 120.0
HELPER_TIMEOUT = 60.0
HALF_MS = 0.0005  # client stamps are truncated to the ms: take the middle of that ms

_JAVA_PAUSED = re.compile(r"Pause completed at .*\((\d+)\)")
_JAVA_UNPAUSE = re.compile(r"Unpause started at .*\((\d+)\)")


class BenchError(Exception):
    """A check failed or a peer misbehaved: the numbers would mean nothing."""


# statistics


def p95(values: Sequence[float]) -> float:
    """Nearest-rank 95th percentile (the maximum for fewer than 20 values)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


@dataclass
class Series:
    """Samples of one measurement, in seconds."""

    samples: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.samples) * 1000 if self.samples else None

    @property
    def p95_ms(self) -> float | None:
        return p95(self.samples) * 1000 if self.samples else None

    def cell(self) -> str:
        if not self.samples:
            return "-"
        return f"{_ms(self.median_ms)} / {_ms(self.p95_ms)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "median_ms": _round(self.median_ms),
            "p95_ms": _round(self.p95_ms),
            "samples_ms": [round(s * 1000, 3) for s in self.samples],
        }


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def ratio(java: Series, ours: Series) -> float | None:
    """Java median / our median."""
    j, o = java.median_ms, ours.median_ms
    if j is None or o is None or o <= 0:
        return None
    return j / o


def _ratio_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


# the server fleet in its own process


class FleetProcess:
    """``bench.fleet_server`` with N servers, asked for its gates' state and handler stamps."""

    def __init__(self, process: asyncio.subprocess.Process, ports: list[int]) -> None:
        self.process = process
        self.ports = ports
        self.endpoints = [Endpoint("127.0.0.1", p) for p in ports]
        self.addresses = ",".join(str(e) for e in self.endpoints)
        self._channels = [grpc.aio.insecure_channel(str(e)) for e in self.endpoints]

    @classmethod
    async def start(cls, count: int) -> FleetProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.fleet_server",
            "--count",
            str(count),
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        try:
            ready = await cls._read(process)
            ports = [int(p) for p in ready["ports"]]
            if len(ports) != count:
                raise BenchError(f"fleet_server started {len(ports)} servers, not {count}")
        except BaseException:
            await cls._stop(process)
            raise
        return cls(process, ports)

    @staticmethod
    async def _read(process: asyncio.subprocess.Process) -> dict[str, Any]:
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), HELPER_TIMEOUT)
        except TimeoutError:
            raise BenchError(f"fleet_server said nothing in {HELPER_TIMEOUT:g}s") from None
        if not line:
            raise BenchError(f"fleet_server exited ({await process.wait()}) without answering")
        data: dict[str, Any] = json.loads(line)
        if "error" in data:
            raise BenchError(f"fleet_server: {data['error']}")
        return data

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        return await self._read(self.process)

    async def paused_ports(self) -> list[int]:
        return list((await self.ask("state"))["paused"])

    async def stamps(self) -> dict[str, Any]:
        return await self.ask("stamps")

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()
        await self._stop(self.process)

    @staticmethod
    async def _stop(process: asyncio.subprocess.Process) -> None:
        if process.stdin is not None:
            process.stdin.close()  # fleet_server stops its servers and exits at end of stdin
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()

    # checks

    async def check_all_paused(self, what: str) -> None:
        paused = await self.paused_ports()
        if len(paused) != len(self.ports):
            raise BenchError(f"{what}: only {len(paused)} of {len(self.ports)} gates are paused")

    async def check_all_serving(self, what: str) -> None:
        paused = await self.paused_ports()
        if paused:
            raise BenchError(f"{what}: {len(paused)} of {len(self.ports)} gates are still paused")

        async def work(channel: Any) -> bytes:
            response: bytes = await channel.unary_unary(WORK_METHOD)(b"0", timeout=5.0)
            return response

        results = await asyncio.gather(*(work(c) for c in self._channels), return_exceptions=True)
        bad = [(p, r) for p, r in zip(self.ports, results, strict=True) if r != b"done 0"]
        if bad:
            port, result = bad[0]
            raise BenchError(f"{what}: {len(bad)} servers did not serve Work (port {port}: {result!r})")

    async def check_requests_held(self, what: str) -> None:
        """While paused, a Work request must wait at the gate (not be answered)."""
        try:
            answer = await self._channels[0].unary_unary(WORK_METHOD)(b"0", timeout=0.3)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return
            raise BenchError(f"{what}: Work failed with {exc.code()} instead of waiting") from exc
        raise BenchError(f"{what}: a paused server answered Work ({answer!r})")

    def check_stamps(self, stamps: dict[str, Any], what: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Every server completed a Pause, every one an Unpause, and all were paused at one instant."""
        pause, unpause = stamps["pause"], stamps["unpause"]
        n = len(self.ports)
        if pause["servers"] != n:
            raise BenchError(f"{what}: {pause['servers']} of {n} servers completed a Pause")
        if unpause["servers"] != n:
            raise BenchError(f"{what}: {unpause['servers']} of {n} servers completed an Unpause")
        if pause["last_done"] > unpause["first_arrival"]:
            raise BenchError(f"{what}: an Unpause arrived before the last server was paused")
        return pause, unpause


# measurements


@dataclass
class Result:
    servers: int
    inproc_pause: Series = field(default_factory=Series)
    inproc_unpause: Series = field(default_factory=Series)
    ours_cli_wall: Series = field(default_factory=Series)
    ours_cli_to_paused: Series = field(default_factory=Series)
    ours_cli_pause: Series = field(default_factory=Series)
    ours_cli_fanout: Series = field(default_factory=Series)
    ours_cli_unpause: Series = field(default_factory=Series)
    java_pause_wall: Series = field(default_factory=Series)
    java_unpause_wall: Series = field(default_factory=Series)
    java_cycle_wall: Series = field(default_factory=Series)
    java_to_paused: Series = field(default_factory=Series)
    java_pause: Series = field(default_factory=Series)
    java_fanout: Series = field(default_factory=Series)
    java_unpause: Series = field(default_factory=Series)

    def ratios(self) -> dict[str, float | None]:
        return {
            "cli_wall": ratio(self.java_cycle_wall, self.ours_cli_wall),
            "cli_to_paused": ratio(self.java_to_paused, self.ours_cli_to_paused),
            "cli_pause": ratio(self.java_pause, self.ours_cli_pause),
            # one server has no fan-out: both are just its handler's run time
            "cli_unpause_fanout": ratio(self.java_fanout, self.ours_cli_fanout) if self.servers > 1 else None,
            "cli_unpause": ratio(self.java_unpause, self.ours_cli_unpause),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "servers": self.servers,
            "ours_in_process": {
                "pause": self.inproc_pause.to_json(),
                "unpause": self.inproc_unpause.to_json(),
            },
            "ours_cli": {
                "wall": self.ours_cli_wall.to_json(),
                "start_to_paused": self.ours_cli_to_paused.to_json(),
                "pause": self.ours_cli_pause.to_json(),
                "unpause_fanout": self.ours_cli_fanout.to_json(),
                "unpause": self.ours_cli_unpause.to_json(),
            },
            "java_cli": {
                "pause_wall": self.java_pause_wall.to_json(),
                "unpause_wall": self.java_unpause_wall.to_json(),
                "wall": self.java_cycle_wall.to_json(),
                "start_to_paused": self.java_to_paused.to_json(),
                "pause": self.java_pause.to_json(),
                "unpause_fanout": self.java_fanout.to_json(),
                "unpause": self.java_unpause.to_json(),
            },
            "ratios_java_over_ours": {k: _round(v) for k, v in self.ratios().items()},
        }


@dataclass
class Timed:
    spawned_at: float  # epoch seconds, just before the spawn
    wall: float  # seconds, spawn to exit
    result: subprocess.CompletedProcess[str]


def _run_timed(command: list[str]) -> Timed:
    spawned_at = time.time()
    start = time.perf_counter()
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL, cwd=REPO
    )
    wall = time.perf_counter() - start
    return Timed(spawned_at, wall, result)


async def run_timed(command: list[str], what: str) -> Timed:
    timed = await asyncio.to_thread(_run_timed, command)
    if timed.result.returncode != 0:
        tail = (timed.result.stdout + timed.result.stderr).strip().splitlines()[-5:]
        raise BenchError(f"{what} exited {timed.result.returncode}: " + " | ".join(tail))
    return timed


def txbackup_command() -> list[str]:
    script = Path(sys.executable).with_name("txbackup")
    return [str(script)] if script.exists() else [sys.executable, "-m", "txbackup"]


def java_command() -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise BenchError("java is not on PATH (the Java client needs a JRE)")
    if not list(ADMIN_JARS.glob("scalar-admin-*.jar")):
        raise BenchError(f"no scalar-admin jars in {ADMIN_JARS}: run tests/java/fetch-jars")
    return [java, *JVM_OPTS, "-cp", str(ADMIN_JARS / "*"), JAVA_MAIN]


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def inproc_round(fleet: FleetProcess, result: Result | None, check_held: bool) -> None:
    what = f"in-process round, {len(fleet.ports)} servers"
    await fleet.stamps()  # forget earlier calls
    client = Fleet(fleet.endpoints)
    try:
        start = time.perf_counter()
        await client.pause()
        paused = time.perf_counter()
        await fleet.check_all_paused(what)
        if check_held:
            await fleet.check_requests_held(what)
        start_unpause = time.perf_counter()
        await client.unpause()
        unpaused = time.perf_counter()
    finally:
        await client.close()
    await fleet.check_all_serving(what)
    fleet.check_stamps(await fleet.stamps(), what)
    if result is not None:
        result.inproc_pause.add(paused - start)
        result.inproc_unpause.add(unpaused - start_unpause)


async def ours_cli_round(fleet: FleetProcess, result: Result | None, command: list[str]) -> None:
    what = f"txbackup pause, {len(fleet.ports)} servers"
    await fleet.stamps()
    timed = await run_timed([*command, "pause", "-a", fleet.addresses, "--hold", "0s", "--json"], what)
    await fleet.check_all_serving(what)
    pause, unpause = fleet.check_stamps(await fleet.stamps(), what)
    window = json.loads(timed.result.stdout)
    if len(window["endpoints"]) != len(fleet.ports):
        raise BenchError(f"{what}: paused {len(window['endpoints'])} endpoints")
    all_paused = _epoch(window["started_at"]) + HALF_MS
    unpause_started = _epoch(window["ended_at"]) + HALF_MS
    if result is not None:
        result.ours_cli_wall.add(timed.wall)
        result.ours_cli_to_paused.add(all_paused - timed.spawned_at)
        result.ours_cli_pause.add(all_paused - pause["first_arrival"])
        result.ours_cli_fanout.add(unpause["last_done"] - unpause["first_arrival"])
        result.ours_cli_unpause.add(unpause["last_done"] - unpause_started)


def _java_stamp(pattern: re.Pattern[str], output: str, what: str) -> float:
    match = pattern.search(output)
    if match is None:
        raise BenchError(f"{what}: no {pattern.pattern!r} line in the output")
    return int(match.group(1)) / 1000 + HALF_MS


async def java_round(fleet: FleetProcess, result: Result | None, command: list[str]) -> None:
    what = f"Java PAUSE/UNPAUSE, {len(fleet.ports)} servers"
    await fleet.stamps()
    paused = await run_timed([*command, "-c", "PAUSE", "-a", fleet.addresses], f"{what} (PAUSE)")
    await fleet.check_all_paused(what)
    unpaused = await run_timed([*command, "-c", "UNPAUSE", "-a", fleet.addresses], f"{what} (UNPAUSE)")
    await fleet.check_all_serving(what)
    pause, unpause = fleet.check_stamps(await fleet.stamps(), what)
    all_paused = _java_stamp(_JAVA_PAUSED, paused.result.stdout, what)
    unpause_started = _java_stamp(_JAVA_UNPAUSE, unpaused.result.stdout, what)
    if result is not None:
        result.java_pause_wall.add(paused.wall)
        result.java_unpause_wall.add(unpaused.wall)
        result.java_cycle_wall.add(paused.wall + unpaused.wall)
        result.java_to_paused.add(all_paused - paused.spawned_at)
        result.java_pause.add(all_paused - pause["first_arrival"])
        result.java_fanout.add(unpause["last_done"] - unpause["first_arrival"])
        result.java_unpause.add(unpause["last_done"] - unpause_started)


async def measure(
    size: int,
    rounds: int,
    cli_rounds: int,
    warmup: int,
    cli_warmup: bool,
    progress: Callable[[str], None],
) -> Result:
    ours, java = txbackup_command(), java_command()
    result = Result(size)
    progress(f"{size} servers: starting them in bench.fleet_server")
    fleet = await FleetProcess.start(size)
    try:
        await fleet.check_all_serving(f"{size} fresh servers")
        progress(f"{size} servers: in-process, {warmup} warm-up + {rounds} rounds")
        for i in range(warmup + rounds):
            await inproc_round(fleet, result if i >= warmup else None, check_held=i == 0)
        if cli_warmup:
            progress(f"{size} servers: CLI warm-up (txbackup, java)")
            await ours_cli_round(fleet, None, ours)
            await java_round(fleet, None, java)
        progress(f"{size} servers: CLIs, {cli_rounds} interleaved rounds")
        for _ in range(cli_rounds):
            await ours_cli_round(fleet, result, ours)
            await java_round(fleet, result, java)
    finally:
        await fleet.close()
    return result


# output

LEGEND = {
    "in-process pause": "Fleet.pause() call -> every server confirmed (fresh Fleet: the channel "
    "connects are included); in this warm Python process",
    "in-process unpause": "Fleet.unpause() call -> every server answered (same Fleet: channels open)",
    "wall": "spawn -> exit of the CLI process(es), interpreter/JVM start included. Ours: one "
    "`txbackup pause -a ... --hold 0s --json` (pauses and unpauses). Java: `AdminCommand -c PAUSE` "
    "plus `-c UNPAUSE`, two JVMs (JVM options " + " ".join(JVM_OPTS) + ")",
    "spawn -> all paused": "spawn of the pausing process -> its own stamp of every server confirmed "
    "(ours: pause window started_at in the JSON; Java: the 'Pause completed at ... (<epoch ms>)' log "
    "line); includes interpreter/JVM start and the channel connects",
    "pause in client": "first Pause RPC reaching a server (server handler stamp) -> the client's "
    "stamp of every server confirmed: the in-client (in-JVM) pause latency, without process start",
    "unpause fan-out": "first Unpause RPC reaching a server -> last server unpaused (both server "
    "stamps): how far apart the instances resume (no ratio for 1 server: nothing fans out)",
    "unpause in client": "the client's 'unpause starts' stamp -> last server unpaused (ours: pause "
    "window ended_at, channels already open; Java: the 'Unpause started at' log line, which it "
    "prints BEFORE it creates its channels, so gRPC/Netty start-up in the fresh JVM is included)",
}


def print_report(results: list[Result], config: dict[str, Any]) -> None:
    print(
        f"pause latency, servers on 127.0.0.1 in one helper process; ms as median / p95 "
        f"(in-process: {config['rounds']} rounds; CLIs: {config['cli_rounds']} rounds); "
        f"ratio = Java median / ours median"
    )
    print()
    print("our client, in-process")
    print_table(
        ["servers", "pause", "unpause"],
        [[r.servers, r.inproc_pause.cell(), r.inproc_unpause.cell()] for r in results],
    )
    print()
    print("CLI wall time (process start included)")
    print_table(
        ["servers", "ours pause+unpause", "Java PAUSE", "Java UNPAUSE", "Java both", "Java/ours"],
        [
            [
                r.servers,
                r.ours_cli_wall.cell(),
                r.java_pause_wall.cell(),
                r.java_unpause_wall.cell(),
                r.java_cycle_wall.cell(),
                _ratio_cell(r.ratios()["cli_wall"]),
            ]
            for r in results
        ],
    )
    print()
    print("CLI pause, from the clients' own stamps")
    print_table(
        [
            "servers",
            "spawn->all paused: ours",
            "Java",
            "Java/ours",
            "pause in client: ours",
            "Java",
            "Java/ours",
        ],
        [
            [
                r.servers,
                r.ours_cli_to_paused.cell(),
                r.java_to_paused.cell(),
                _ratio_cell(r.ratios()["cli_to_paused"]),
                r.ours_cli_pause.cell(),
                r.java_pause.cell(),
                _ratio_cell(r.ratios()["cli_pause"]),
            ]
            for r in results
        ],
    )
    print()
    print("CLI unpause, from the clients' own stamps")
    print_table(
        [
            "servers",
            "unpause fan-out: ours",
            "Java",
            "Java/ours",
            "unpause in client: ours",
            "Java",
            "Java/ours",
        ],
        [
            [
                r.servers,
                r.ours_cli_fanout.cell(),
                r.java_fanout.cell(),
                _ratio_cell(r.ratios()["cli_unpause_fanout"]),
                r.ours_cli_unpause.cell(),
                r.java_unpause.cell(),
                _ratio_cell(r.ratios()["cli_unpause"]),
            ]
            for r in results
        ],
    )
    print()
    print("what each column includes")
    for name, text in LEGEND.items():
        print(f"  {name}: {text}")


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --sizes {text!r}: expected numbers like 1,10,100") from None
    if not sizes or any(not 1 <= s <= 1000 for s in sizes):
        raise argparse.ArgumentTypeError(f"bad --sizes {text!r}: each size must be 1-1000")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pause_latency",
        description="Pause latency of 1, 10 and 100 local servers, our client and the Java client.",
    )
    parser.add_argument("--sizes", type=parse_sizes, default=[1, 10, 100], help="fleet sizes (1,10,100)")
    parser.add_argument("--rounds", type=int, default=20, help="in-process rounds per size (20)")
    parser.add_argument("--cli-rounds", type=int, default=5, help="CLI rounds per size, each client (5)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured in-process rounds per size (2)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.cli_rounds < 1 or args.warmup < 0:
        parser.error("--rounds and --cli-rounds must be >= 1, --warmup >= 0")

    def progress(message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    async def run_all() -> list[Result]:
        results = []
        for i, size in enumerate(args.sizes):
            # one unmeasured run of each CLI first, so that the first measured JVM/interpreter
            # start does not pay for a cold page cache
            results.append(await measure(size, args.rounds, args.cli_rounds, args.warmup, i == 0, progress))
        return results

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    try:
        results = asyncio.run(run_all())
    except BenchError as exc:
        print(f"pause_latency: {exc}", file=sys.stderr)
        return 1
    config = {
        "sizes": args.sizes,
        "rounds": args.rounds,
        "cli_rounds": args.cli_rounds,
        "warmup": args.warmup,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "jvm_options": JVM_OPTS,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
    }
    if args.json:
        data = {"config": config, "results": [r.to_json() for r in results], "columns": LEGEND}
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_report(results, config)
        load = config["load_average_1m"]
        print(
            f"\n({config['seconds']} s, {config['cpus']} CPUs, Python {config['python']}, "
            f"load average {load['before']} before, {load['after']} after)"
        )
    if max(load_before, os.getloadavg()[0]) > (os.cpu_count() or 1):
        print(
            "pause_latency: warning: the machine was busy with other work (load average above the "
            "CPU count); these numbers are noisy, run again on a quiet machine",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
