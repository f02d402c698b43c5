"""N sample pausable servers in one process, driven over stdin/stdout (a benchmark helper).

    python -m bench.fleet_server --count 100 [--lease 300s]

Starts ``--count`` sample servers (``start_sample_server``: ``/sample.Sample/Work``
behind a ``PauseGate`` plus ``rpc.Admin``) on 127.0.0.1, on free ports, all in
this process's one event loop, so that a benchmark measuring a client does not
share its event loop (or its Python interpreter) with the servers. Prints one
JSON line ``{"ports": [...]}`` once every server is serving, then answers one
JSON line per command line read from stdin:

- ``state``: ``{"paused": [ports whose gate is paused], "count": N}``, read
  straight from the gates (not through CheckPaused);
- ``stamps``: what the Pause and Unpause handlers did since the last ``stamps``
  (then forgets it): for each of ``pause`` and ``unpause``, ``servers`` (how many
  distinct servers completed one), ``first_arrival`` (the earliest moment a
  handler started) and ``last_done`` (the latest moment a handler finished), as
  Unix epoch seconds (``time.time()``, comparable with other processes' clocks
  on this host); null when none;
- ``quit`` (or end of stdin, or SIGTERM/SIGINT): stop every server and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from txbackup.admin.gate import PauseGate
from txbackup.demo.sample_service import SampleServer, start_sample_server
from txbackup.durations import parse_duration


@dataclass
class Stamps:
    """Handler timings of one kind of call (Pause or Unpause) across the fleet."""

    servers: set[int] = field(default_factory=set)
    first_arrival: float | None = None
    last_done: float | None = None

    def arrived(self, at: float) -> None:
        if self.first_arrival is None or at < self.first_arrival:
            self.first_arrival = at

    def done(self, port: int, at: float) -> None:
        self.servers.add(port)
        if self.last_done is None or at > self.last_done:
            self.last_done = at

    def to_json(self) -> dict[str, Any]:
        return {
            "servers": len(self.servers),
            "first_arrival": self.first_arrival,
            "last_done": self.last_done,
        }


@dataclass
class Recorder:
    pause: Stamps = field(default_factory=Stamps)
    unpause: Stamps = field(default_factory=Stamps)

    def take(self) -> dict[str, Any]:
        data = {"pause": self.pause.to_json(), "unpause": self.unpause.to_json()}
        self.pause, self.unpause = Stamps(), Stamps()
        return data


def record(gate: PauseGate, port: int, recorder: Recorder) -> None:
    """Wrap the gate's pause/unpause (what the Admin servicer calls) to time them.

    Only completed calls count as done: a Pause answered with an error is not.
    """
    pause, unpause = gate.pause, gate.unpause

    async def timed_pause(wait_outstanding: bool = True, max_wait_ms: int | None = None) -> None:
        recorder.pause.arrived(time.time())
        await pause(wait_outstanding, max_wait_ms)
        recorder.pause.done(port, time.time())

    async def timed_unpause() -> None:
        recorder.unpause.arrived(time.time())
        await unpause()
        recorder.unpause.done(port, time.time())

    # instance attributes shadow the methods; AdminServicer calls self.gate.pause(...)
    setattr(gate, "pause", timed_pause)  # noqa: B010
    setattr(gate, "unpause", timed_unpause)  # noqa: B010


def answer(data: Any) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


async def serve(count: int, lease: float | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    recorder = Recorder()
    servers: list[SampleServer] = []
    try:
        for _ in range(count):
            server = await start_sample_server("127.0.0.1", 0, lease_seconds=lease)
            record(server.gate, server.port, recorder)
            servers.append(server)
        answer({"ports": [s.port for s in servers]})

        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        stopped = asyncio.create_task(stop.wait())
        while True:
            line_task = asyncio.create_task(reader.readline())
            await asyncio.wait({line_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not line_task.done():
                line_task.cancel()
                break
            command = line_task.result().decode().strip()
            if command in ("", "quit"):  # "" is the end of stdin
                break
            if command == "state":
                paused = [s.port for s in servers if s.gate.paused]
                answer({"paused": paused, "count": len(servers)})
            elif command == "stamps":
                answer(recorder.take())
            else:
                answer({"error": f"unknown command {command!r}"})
        stopped.cancel()
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                await server.stop(grace=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet_server", description="N sample pausable servers in one process."
    )
    parser.add_argument("--count", type=int, required=True, help="how many servers (1-1000)")
    parser.add_argument("--lease", default="300s", help="pause lease of each gate; 0 = none (%(default)s)")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 1000:
        parser.error("--count must be 1-1000")
    asyncio.run(serve(args.count, parse_duration(args.lease) or None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
