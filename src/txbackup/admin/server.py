"""The scalar-admin server side for Python applications (grpc.aio and ASGI).

- ``AdminServicer`` answers ``/rpc.Admin/*`` by driving a ``PauseGate``.
- ``GateInterceptor`` routes every other gRPC method through the gate.
- ``GateMiddleware`` does the same for HTTP requests of any ASGI application.
- ``server_credentials`` makes the port TLS, and with a client CA mutual TLS:
  the scalar-admin protocol authenticates nobody, so whoever reaches a
  plaintext port can pause the application.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

import grpc
from google.protobuf import empty_pb2

from txbackup.admin.client import Endpoint
from txbackup.admin.gate import DrainTimeout, DrainTimeoutStillPaused, GateClosed, PauseAborted, PauseGate
from txbackup.admin.outcomes import ERROR_DOMAIN, STATUS_DETAILS_KEY, status_details
from txbackup.admin.rpc import admin_pb2, admin_pb2_grpc
from txbackup.admin.tls import load_key_pair, read_certificates
from txbackup.errors import TxbackupError

ADMIN_PREFIX = "/rpc.Admin/"
PAUSED_DETAILS = "paused for backup"
SERVER_OPTIONS = (("grpc.so_reuseport", 0),)
"""grpc.aio server options: a port already in use is an error, not silently shared."""


class AdminServicer(admin_pb2_grpc.AdminServicer):  # type: ignore[misc]
    """``rpc.Admin`` for grpc.aio, backed by a ``PauseGate``."""

    def __init__(self, gate: PauseGate) -> None:
        self.gate = gate

    async def Pause(self, request: admin_pb2.PauseRequest, context: Any) -> Any:
        max_wait: int | None = None
        if request.HasField("max_pause_wait_time"):
            max_wait = request.max_pause_wait_time
            if max_wait < 0:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"max_pause_wait_time must be >= 0, not {max_wait}",
                )
        try:
            await self.gate.pause(request.wait_outstanding, max_wait)
        except PauseAborted as exc:
            # the outcome as an ErrorInfo reason, like ScalarDB Cluster 3.19 and ScalarDL: callers
            # branch on it (TIMED_OUT_STILL_PAUSED must not be answered with an unpause)
            if isinstance(exc, DrainTimeoutStillPaused):
                code, reason = grpc.StatusCode.FAILED_PRECONDITION, "TIMED_OUT_STILL_PAUSED"
            elif isinstance(exc, DrainTimeout):
                code, reason = grpc.StatusCode.FAILED_PRECONDITION, "TIMED_OUT"
            else:  # an unpause reopened the gate meanwhile: a lost race, retryable
                code, reason = grpc.StatusCode.ABORTED, "GATE_OPEN"
            message = f"failed to pause: {exc}"
            details = status_details(code, message, ERROR_DOMAIN, reason)
            await context.abort(code, message, trailing_metadata=((STATUS_DETAILS_KEY, details),))
        return empty_pb2.Empty()

    async def Unpause(self, request: Any, context: Any) -> Any:
        await self.gate.unpause()
        return empty_pb2.Empty()

    async def CheckPaused(self, request: Any, context: Any) -> admin_pb2.CheckPausedResponse:
        return admin_pb2.CheckPausedResponse(paused=self.gate.paused)

    async def Stats(self, request: Any, context: Any) -> admin_pb2.StatsResponse:
        stats = {"paused": self.gate.paused, "in_flight": self.gate.in_flight}
        return admin_pb2.StatsResponse(stats=json.dumps(stats))


Behaviour = Callable[[Any, Any], Any]


class GateInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Routes every RPC not under ``/rpc.Admin/`` through the gate.

    A request counts as in flight from admission until its handler returns (for
    streaming responses: until the stream ends). In reject mode a closed gate
    answers ``UNAVAILABLE "paused for backup"``.
    """

    def __init__(self, gate: PauseGate) -> None:
        self.gate = gate

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(ADMIN_PREFIX):
            return handler
        if handler.response_streaming:
            if handler.request_streaming:
                make, inner = grpc.stream_stream_rpc_method_handler, handler.stream_stream
            else:
                make, inner = grpc.unary_stream_rpc_method_handler, handler.unary_stream
            wrapped = self._gated_stream(inner)
        else:
            if handler.request_streaming:
                make, inner = grpc.stream_unary_rpc_method_handler, handler.stream_unary
            else:
                make, inner = grpc.unary_unary_rpc_method_handler, handler.unary_unary
            wrapped = self._gated_unary(inner)
        return make(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _gated_unary(self, behaviour: Behaviour) -> Behaviour:
        async def gated(request: Any, context: Any) -> Any:
            try:
                async with self.gate.request():
                    result = behaviour(request, context)
                    return (await result) if inspect.isawaitable(result) else result
            except GateClosed:
                await context.abort(grpc.StatusCode.UNAVAILABLE, PAUSED_DETAILS)

        return gated

    def _gated_stream(self, behaviour: Behaviour) -> Behaviour:
        async def gated(request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async with self.gate.request():
                    result = behaviour(request, context)
                    if inspect.isasyncgen(result):
                        async for item in result:
                            yield item
                    elif inspect.isawaitable(result):
                        await result  # the handler writes with context.write()
                    else:
                        for item in result:
                            yield item
            except GateClosed:
                await context.abort(grpc.StatusCode.UNAVAILABLE, PAUSED_DETAILS)

        return gated


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class GateMiddleware:
    """ASGI middleware routing HTTP requests through the gate.

    Lifespan and websocket scopes pass straight through. In reject mode a
    closed gate answers ``503`` with ``Retry-After``.
    """

    def __init__(self, app: ASGIApp, gate: PauseGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            async with self.gate.request():
                await self.app(scope, receive, send)
        except GateClosed as exc:
            await _send_unavailable(send, exc.retry_after)


async def _send_unavailable(send: Send, retry_after: int) -> None:
    body = f"{PAUSED_DETAILS}\n".encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode()),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def add_admin_servicer(server: Any, gate: PauseGate) -> AdminServicer:
    """Serve ``rpc.Admin`` for ``gate`` on a grpc.aio server (before it starts)."""
    servicer = AdminServicer(gate)
    admin_pb2_grpc.add_AdminServicer_to_server(servicer, server)
    return servicer


def format_address(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 host."""
    return str(Endpoint(host, port))


def server_credentials(
    cert_file: str,
    key_file: str,
    client_ca_file: str | None = None,
    *,
    names: tuple[str, str, str] = ("cert_file", "key_file", "client_ca_file"),
) -> grpc.ServerCredentials:
    """TLS for a grpc.aio server (give it to :func:`bind`, or to ``add_secure_port``).

    ``cert_file`` is the server's certificate chain (PEM), ``key_file`` its private key
    (PEM, an owner-only file: ``chmod 600``). With ``client_ca_file`` the TLS is mutual:
    the handshake fails, before any call, unless the client presents a certificate
    signed by that CA, so only holders of such a certificate can Pause or Unpause.
    The files are read and checked now (one-line ``UsageError`` naming the file;
    ``names`` are the names messages give them, e.g. command-line flags).
    """
    cert_name, key_name, ca_name = names
    chain, key = load_key_pair(cert_file, key_file, cert_what=cert_name, key_what=key_name)
    if client_ca_file is None:
        return grpc.ssl_server_credentials([(key, chain)])
    client_ca = read_certificates(client_ca_file, what=ca_name)
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca, require_client_auth=True)


ServerTls: TypeAlias = tuple[bytes, bytes] | grpc.ServerCredentials
"""TLS for :func:`bind`: ``(certificate chain PEM, private key PEM)``, or credentials
from :func:`server_credentials` (which can require client certificates)."""


def bind(server: Any, host: str, port: int, tls: ServerTls | None = None) -> int:
    """Listen on ``host:port`` (0 = any free port); returns the bound port."""
    address = format_address(host, port)
    failed = TxbackupError(f"cannot listen on {address}: address in use or not available")
    try:
        if tls is None:
            bound: int = server.add_insecure_port(address)
        else:
            if isinstance(tls, tuple):
                cert, key = tls
                tls = grpc.ssl_server_credentials([(key, cert)])
            bound = server.add_secure_port(address, tls)
    except RuntimeError as exc:  # grpc reports a failed bind this way, or by returning 0
        raise failed from exc
    if bound == 0:
        raise failed
    return bound


async def start_admin_server(
    gate: PauseGate,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: ServerTls | None = None,
) -> tuple[Any, int]:
    """Start a grpc.aio server that serves only ``rpc.Admin``; returns (server, bound port).

    An application can serve rpc.Admin this way on a port of its own, with mutual TLS
    (``tls=server_credentials(..., client_ca_file=...)``), while its own port keeps
    serving its clients as before; both share ``gate``.
    """
    server = grpc.aio.server(options=SERVER_OPTIONS)
    add_admin_servicer(server, gate)
    bound = bind(server, host, port, tls)
    await server.start()
    return server, bound
