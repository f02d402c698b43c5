"""A sample pausable gRPC application: one slow method behind a ``PauseGate``.

``/sample.Sample/Work`` takes a delay in milliseconds (decimal ASCII bytes),
sleeps that long and answers ``b"done <ms>"``; tests use it to make requests that
finish late or never. The same server serves ``rpc.Admin`` for the gate, in
plaintext, TLS or mutual TLS (``tls``: see :func:`txbackup.admin.server.server_credentials`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc

from txbackup.admin.gate import PauseGate
from txbackup.admin.server import (
    SERVER_OPTIONS,
    GateInterceptor,
    ServerTls,
    add_admin_servicer,
    bind,
    format_address,
)

SERVICE = "sample.Sample"
WORK_METHOD = f"/{SERVICE}/Work"


async def _work(request: bytes, context: Any) -> bytes:
    try:
        delay_ms = int(request.decode("ascii"))
        if delay_ms < 0:
            raise ValueError
    except ValueError:
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"expected a delay in ms, got {request!r}"
        )
    await asyncio.sleep(delay_ms / 1000)
    return f"done {delay_ms}".encode()


@dataclass
class SampleServer:
    """A running sample server; ``stop()`` it when done."""

    server: Any
    gate: PauseGate
    host: str
    port: int

    @property
    def target(self) -> str:
        return format_address(self.host, self.port)

    async def stop(self, grace: float | None = None) -> None:
        await self.server.stop(grace)
        await self.gate.unpause()  # cancels a pending lease timer


async def start_sample_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    lease_seconds: float | None = 60.0,
    reject_when_paused: bool = False,
    tls: ServerTls | None = None,
) -> SampleServer:
    """Start the sample service (Work through the gate, plus rpc.Admin) on ``host:port``
    (TLS when ``tls`` is given)."""
    gate = PauseGate(reject_when_paused=reject_when_paused, lease_seconds=lease_seconds)
    server = grpc.aio.server(interceptors=[GateInterceptor(gate)], options=SERVER_OPTIONS)
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Work": grpc.unary_unary_rpc_method_handler(_work)}
    )
    server.add_generic_rpc_handlers((handler,))
    add_admin_servicer(server, gate)
    bound = bind(server, host, port, tls)
    await server.start()
    return SampleServer(server, gate, host, bound)


async def call_work(
    target: str, delay_ms: int, timeout: float, credentials: grpc.ChannelCredentials | None = None
) -> bytes:
    """Call ``Work`` on ``target`` (host:port) once, with a deadline of ``timeout`` seconds
    (over TLS with ``credentials``)."""
    channel = (
        grpc.aio.insecure_channel(target)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials)
    )
    async with channel:
        work = channel.unary_unary(WORK_METHOD)
        response: bytes = await work(str(delay_ms).encode(), timeout=timeout)
        return response
