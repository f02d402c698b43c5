"""The scalar-admin server side on a real grpc.aio server, and the ASGI middleware."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import empty_pb2

from txbackup.admin.gate import PauseGate
from txbackup.admin.rpc import admin_pb2, admin_pb2_grpc
from txbackup.admin.server import GateInterceptor, GateMiddleware, start_admin_server
from txbackup.cli import sample_server as sample_server_cli
from txbackup.demo.sample_service import SampleServer, call_work, start_sample_server
from txbackup.errors import TxbackupError, UsageError

pytestmark = pytest.mark.timeout(20)

StartServer = Callable[..., Awaitable[SampleServer]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    started: list[SampleServer] = []

    async def start(**options: Any) -> SampleServer:
        server = await start_sample_server("127.0.0.1", 0, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@asynccontextmanager
async def admin_stub(target: str) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(target) as channel:
        yield admin_pb2_grpc.AdminStub(channel)


async def is_paused(admin: Any) -> bool:
    response = await admin.CheckPaused(empty_pb2.Empty(), timeout=2)
    paused: bool = response.paused
    return paused


async def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# --- gRPC: rpc.Admin on the sample service --------------------------------------------------


async def test_pause_check_unpause(start_server: StartServer) -> None:
    sample = await start_server()
    async with admin_stub(sample.target) as admin:
        assert not await is_paused(admin)
        await admin.Pause(admin_pb2.PauseRequest(wait_outstanding=True), timeout=2)
        assert await is_paused(admin)
        assert sample.gate.paused
        stats = await admin.Stats(empty_pb2.Empty(), timeout=2)
        assert json.loads(stats.stats) == {"paused": True, "in_flight": 0}
        await admin.Unpause(empty_pb2.Empty(), timeout=2)
        await admin.Unpause(empty_pb2.Empty(), timeout=2)  # idempotent
        assert not await is_paused(admin)
    assert await call_work(sample.target, 0, timeout=2) == b"done 0"


async def test_work_is_counted_in_flight(start_server: StartServer) -> None:
    sample = await start_server()
    work = asyncio.create_task(call_work(sample.target, 300, timeout=5))
    await wait_until(lambda: sample.gate.in_flight == 1)
    async with admin_stub(sample.target) as admin:
        stats = await admin.Stats(empty_pb2.Empty(), timeout=2)
    assert json.loads(stats.stats) == {"paused": False, "in_flight": 1}
    assert await work == b"done 300"
    assert sample.gate.in_flight == 0


async def test_pause_waits_for_in_flight_work_without_max_wait(start_server: StartServer) -> None:
    # The Java client sends wait_outstanding=true without max_pause_wait_time.
    sample = await start_server()
    work = asyncio.create_task(call_work(sample.target, 400, timeout=5))
    await wait_until(lambda: sample.gate.in_flight == 1)
    started = time.monotonic()
    async with admin_stub(sample.target) as admin:
        await admin.Pause(admin_pb2.PauseRequest(wait_outstanding=True), timeout=5)
        elapsed = time.monotonic() - started
        assert sample.gate.in_flight == 0, "Pause answered before the request finished"
        assert elapsed >= 0.2
        assert await is_paused(admin)
        await admin.Unpause(empty_pb2.Empty(), timeout=2)
    assert await work == b"done 400"


async def test_undrained_pause_fails_and_server_keeps_serving(start_server: StartServer) -> None:
    sample = await start_server()
    stuck = asyncio.create_task(call_work(sample.target, 60_000, timeout=15))
    try:
        await wait_until(lambda: sample.gate.in_flight == 1)
        async with admin_stub(sample.target) as admin:
            started = time.monotonic()
            request = admin_pb2.PauseRequest(wait_outstanding=True, max_pause_wait_time=300)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await admin.Pause(request, timeout=5)
            elapsed = time.monotonic() - started
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "in flight" in (info.value.details() or "")
            assert 0.25 <= elapsed < 3
            assert not await is_paused(admin)
        assert await call_work(sample.target, 0, timeout=2) == b"done 0"
    finally:
        stuck.cancel()
        await asyncio.gather(stuck, return_exceptions=True)


async def test_paused_work_waits_until_unpause(start_server: StartServer) -> None:
    sample = await start_server()
    async with admin_stub(sample.target) as admin:
        await admin.Pause(admin_pb2.PauseRequest(wait_outstanding=True), timeout=2)
        work = asyncio.create_task(call_work(sample.target, 0, timeout=5))
        await asyncio.sleep(0.3)
        assert not work.done(), "Work ran while paused"
        assert sample.gate.in_flight == 0
        await admin.Unpause(empty_pb2.Empty(), timeout=2)
    assert await asyncio.wait_for(work, 2) == b"done 0"


async def test_reject_mode_answers_unavailable(start_server: StartServer) -> None:
    sample = await start_server(reject_when_paused=True)
    async with admin_stub(sample.target) as admin:
        await admin.Pause(admin_pb2.PauseRequest(wait_outstanding=False), timeout=2)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call_work(sample.target, 0, timeout=2)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert info.value.details() == "paused for backup"
        await admin.Unpause(empty_pb2.Empty(), timeout=2)
    assert await call_work(sample.target, 0, timeout=2) == b"done 0"


async def test_lease_expiry_resumes_serving(start_server: StartServer) -> None:
    sample = await start_server(lease_seconds=0.5)
    async with admin_stub(sample.target) as admin:
        started = time.monotonic()
        await admin.Pause(admin_pb2.PauseRequest(wait_outstanding=True), timeout=2)
        assert await is_paused(admin)
        assert await call_work(sample.target, 0, timeout=3) == b"done 0"
        elapsed = time.monotonic() - started
        assert 0.4 <= elapsed < 1.5, f"served again after {elapsed:.2f} s"
        assert not await is_paused(admin)


async def test_negative_max_wait_is_invalid(start_server: StartServer) -> None:
    sample = await start_server()
    async with admin_stub(sample.target) as admin:
        request = admin_pb2.PauseRequest(wait_outstanding=True, max_pause_wait_time=-1)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await admin.Pause(request, timeout=2)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert not await is_paused(admin)


async def test_bad_work_payload_is_invalid_argument(start_server: StartServer) -> None:
    sample = await start_server()
    async with grpc.aio.insecure_channel(sample.target) as channel:
        work = channel.unary_unary("/sample.Sample/Work")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await work(b"soon", timeout=2)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await wait_until(lambda: sample.gate.in_flight == 0)


# --- gRPC: the interceptor with a streaming method ----------------------------------------


async def _count(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for i in range(int(request)):
        yield str(i).encode()


@asynccontextmanager
async def streaming_server(gate: PauseGate) -> AsyncIterator[str]:
    server = grpc.aio.server(interceptors=[GateInterceptor(gate)])
    handler = grpc.method_handlers_generic_handler(
        "test.Stream", {"Count": grpc.unary_stream_rpc_method_handler(_count)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def _collect(target: str) -> list[bytes]:
    async with grpc.aio.insecure_channel(target) as channel:
        count = channel.unary_stream("/test.Stream/Count")
        return [item async for item in count(b"3", timeout=5)]


async def test_streaming_call_waits_for_unpause() -> None:
    gate = PauseGate(lease_seconds=None)
    async with streaming_server(gate) as target:
        assert await _collect(target) == [b"0", b"1", b"2"]
        await gate.pause(wait_outstanding=True, max_wait_ms=100)
        call = asyncio.create_task(_collect(target))
        await asyncio.sleep(0.3)
        assert not call.done()
        await gate.unpause()
        assert await asyncio.wait_for(call, 2) == [b"0", b"1", b"2"]


async def test_streaming_call_rejected_when_paused() -> None:
    gate = PauseGate(reject_when_paused=True, lease_seconds=None)
    async with streaming_server(gate) as target:
        await gate.pause(wait_outstanding=False, max_wait_ms=None)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _collect(target)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        await gate.unpause()


async def test_port_in_use_is_an_error(start_server: StartServer) -> None:
    sample = await start_server()
    with pytest.raises(TxbackupError, match=f"cannot listen on 127.0.0.1:{sample.port}"):
        await start_sample_server("127.0.0.1", sample.port)


# --- gRPC: the admin-only server, with TLS -------------------------------------------------


async def test_admin_only_server() -> None:
    gate = PauseGate(lease_seconds=None)
    server, port = await start_admin_server(gate)
    try:
        async with admin_stub(f"127.0.0.1:{port}") as admin:
            await admin.Pause(admin_pb2.PauseRequest(wait_outstanding=True), timeout=2)
            assert gate.paused
            assert await is_paused(admin)
    finally:
        await server.stop(None)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
async def test_admin_server_with_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    gate = PauseGate(lease_seconds=None)
    server, port = await start_admin_server(gate, tls=(cert.read_bytes(), key.read_bytes()))
    try:
        credentials = grpc.ssl_channel_credentials(cert.read_bytes())
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            admin = admin_pb2_grpc.AdminStub(channel)
            await admin.Pause(admin_pb2.PauseRequest(wait_outstanding=False), timeout=5)
            assert await is_paused(admin)
    finally:
        await server.stop(None)


# --- the CLI command ---------------------------------------------------------------------


async def test_sample_server_command_serves_until_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "txbackup", "sample-server", "--port", "0", "--lease", "500ms",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode()
        assert line.startswith("listening on 127.0.0.1:"), line
        target = line.split()[-1]
        assert await call_work(target, 0, timeout=3) == b"done 0"
        async with admin_stub(target) as admin:
            await admin.Pause(admin_pb2.PauseRequest(wait_outstanding=True), timeout=3)
            assert await is_paused(admin)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 5) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_sample_server_command_rejects_bad_lease() -> None:
    args = argparse.Namespace(host="127.0.0.1", port=0, lease="soon", reject_when_paused=False)
    with pytest.raises(UsageError, match="malformed duration 'soon'"):
        sample_server_cli.run(args)


# --- ASGI middleware ----------------------------------------------------------------------


class FakeApp:
    """An ASGI app that records its calls and answers 200 (http) after ``proceed``."""

    def __init__(self, gate: PauseGate) -> None:
        self.gate = gate
        self.calls: list[str] = []
        self.in_flight_seen: list[int] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls.append(scope["type"])
        self.in_flight_seen.append(self.gate.in_flight)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})


class Recorder:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: Any) -> None:
        self.messages.append(dict(message))

    @property
    def status(self) -> int:
        status: int = self.messages[0]["status"]
        return status

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def http_scope() -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/", "headers": []}


async def test_asgi_open_gate_passes_and_counts() -> None:
    gate = PauseGate(lease_seconds=None)
    app = FakeApp(gate)
    send = Recorder()
    await GateMiddleware(app, gate)(http_scope(), receive, send)
    assert app.calls == ["http"]
    assert app.in_flight_seen == [1]
    assert send.status == 200
    assert gate.in_flight == 0


async def test_asgi_reject_mode_answers_503() -> None:
    gate = PauseGate(reject_when_paused=True, lease_seconds=None)
    app = FakeApp(gate)
    await gate.pause(wait_outstanding=False, max_wait_ms=None)
    send = Recorder()
    await GateMiddleware(app, gate)(http_scope(), receive, send)
    assert app.calls == []
    assert send.status == 503
    assert send.headers[b"retry-after"] == b"1"
    body = b"".join(m.get("body", b"") for m in send.messages[1:])
    assert body == b"paused for backup\n"
    assert send.headers[b"content-length"] == str(len(body)).encode()


async def test_asgi_waits_for_unpause() -> None:
    gate = PauseGate(lease_seconds=None)
    app = FakeApp(gate)
    await gate.pause(wait_outstanding=False, max_wait_ms=None)
    send = Recorder()
    call = asyncio.create_task(GateMiddleware(app, gate)(http_scope(), receive, send))
    await asyncio.sleep(0.1)
    assert app.calls == []
    await gate.unpause()
    await asyncio.wait_for(call, 1)
    assert app.calls == ["http"]
    assert send.status == 200


@pytest.mark.parametrize("scope_type", ["lifespan", "websocket"])
async def test_asgi_non_http_scopes_pass_through(scope_type: str) -> None:
    gate = PauseGate(reject_when_paused=True, lease_seconds=None)
    app = FakeApp(gate)
    await gate.pause(wait_outstanding=False, max_wait_ms=None)
    send = Recorder()
    await GateMiddleware(app, gate)({"type": scope_type}, receive, send)
    assert app.calls == [scope_type]
    assert app.in_flight_seen == [0]
