"""The client and the fleet against real grpc.aio servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2

from txbackup.admin.client import AdminClient, ClientOptions, Endpoint, TlsOptions
from txbackup.admin.fleet import Fleet, paused
from txbackup.admin.gate import PauseGate
from txbackup.admin.rpc import admin_pb2
from txbackup.admin.server import start_admin_server
from txbackup.demo.sample_service import SampleServer, call_work, start_sample_server
from txbackup.errors import PauseError, UsageError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ep(server: SampleServer) -> Endpoint:
    return Endpoint("127.0.0.1", server.port)


@pytest.fixture
async def servers() -> AsyncIterator[list[SampleServer]]:
    started = [await start_sample_server() for _ in range(5)]
    yield started
    for s in started:
        await s.stop()


async def test_client_pause_check_unpause(servers: list[SampleServer]) -> None:
    server = servers[0]
    async with AdminClient(ep(server)) as client:
        assert await client.check_paused() is False
        await client.pause()
        assert server.gate.paused
        assert await client.check_paused() is True
        await client.unpause()
        assert not server.gate.paused
        assert await client.check_paused() is False


async def test_fleet_pauses_all_and_records_window(servers: list[SampleServer]) -> None:
    fleet = Fleet([ep(s) for s in servers])
    before = time.time()
    async with paused(fleet) as window:
        assert all(s.gate.paused for s in servers)
        assert window.started_at is not None and window.ended_at is None
        await asyncio.sleep(0.2)
    await fleet.close()
    assert not any(s.gate.paused for s in servers)
    assert window.started_at is not None and window.ended_at is not None
    assert before - 0.01 <= window.started_at.timestamp() <= window.ended_at.timestamp()
    assert window.duration_ms is not None and 190 <= window.duration_ms < 2000
    data = window.to_json()
    assert data["started_at"].endswith("Z") and len(data["started_at"]) == len("2026-01-01T00:00:00.000Z")
    mid = window.midpoint
    assert mid is not None and window.started_at <= mid <= window.ended_at


async def test_one_of_five_refused_others_unpaused_within_a_second(servers: list[SampleServer]) -> None:
    dead = Endpoint("127.0.0.1", free_port())
    fleet = Fleet([ep(s) for s in servers[:4]] + [dead])
    with pytest.raises(PauseError) as info:
        await fleet.pause()
    failed_at = time.monotonic()
    await fleet.close()
    assert str(dead) in str(info.value) and "connection refused" in str(info.value)
    assert "\n" not in str(info.value)
    assert not any(s.gate.paused for s in servers[:4])
    assert time.monotonic() - failed_at < 1.0


async def test_one_instance_cannot_drain_others_unpaused(servers: list[SampleServer]) -> None:
    stuck = servers[4]
    in_flight = asyncio.create_task(call_work(stuck.target, 30_000, timeout=30))
    while stuck.gate.in_flight == 0:
        await asyncio.sleep(0.01)
    fleet = Fleet([ep(s) for s in servers])
    with pytest.raises(PauseError) as info:
        await fleet.pause(max_pause_wait_ms=300)
    failed_at = time.monotonic()
    await fleet.close()
    assert f"{ep(stuck)}: FAILED_PRECONDITION" in str(info.value)
    assert not any(s.gate.paused for s in servers)
    assert time.monotonic() - failed_at < 1.0
    # the stuck server serves again
    assert await call_work(stuck.target, 0, timeout=5) == b"done 0"
    in_flight.cancel()


async def test_body_error_still_unpauses(servers: list[SampleServer]) -> None:
    fleet = Fleet([ep(s) for s in servers[:2]])
    with pytest.raises(RuntimeError):
        async with paused(fleet):
            raise RuntimeError("capture failed")
    await fleet.close()
    assert not any(s.gate.paused for s in servers[:2])


async def test_status_reports_each_endpoint(servers: list[SampleServer]) -> None:
    dead = Endpoint("127.0.0.1", free_port())
    await servers[1].gate.pause(wait_outstanding=False, max_wait_ms=None)
    fleet = Fleet([ep(servers[0]), ep(servers[1]), dead])
    states = {str(s.endpoint): s.state for s in await fleet.status()}
    await fleet.close()
    assert states == {
        str(ep(servers[0])): "serving",
        str(ep(servers[1])): "paused",
        str(dead): "error",
    }


class _OldAdmin:
    """A server of the older protocol: Pause, Unpause and Stats, no CheckPaused."""

    def __init__(self) -> None:
        self.paused = False

    async def pause(self, request: admin_pb2.PauseRequest, context: object) -> empty_pb2.Empty:
        self.paused = True
        return empty_pb2.Empty()

    async def unpause(self, request: empty_pb2.Empty, context: object) -> empty_pb2.Empty:
        self.paused = False
        return empty_pb2.Empty()


async def start_old_server() -> tuple[grpc.aio.Server, int, _OldAdmin]:
    """A server of the older protocol on 127.0.0.1: (server, port, its admin state)."""
    old = _OldAdmin()
    handler = grpc.method_handlers_generic_handler(
        "rpc.Admin",
        {
            "Pause": grpc.unary_unary_rpc_method_handler(
                old.pause,
                request_deserializer=admin_pb2.PauseRequest.FromString,
                response_serializer=empty_pb2.Empty.SerializeToString,
            ),
            "Unpause": grpc.unary_unary_rpc_method_handler(
                old.unpause,
                request_deserializer=empty_pb2.Empty.FromString,
                response_serializer=empty_pb2.Empty.SerializeToString,
            ),
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port, old


async def test_old_server_without_check_paused_is_unknown_not_failure() -> None:
    server, port, old = await start_old_server()
    try:
        fleet = Fleet([Endpoint("127.0.0.1", port)])
        async with paused(fleet) as window:
            assert old.paused
            [status] = await fleet.status()
            assert status.paused is None and status.state == "unknown (old server)"
        await fleet.close()
        assert not old.paused
        assert window.unverified == [f"127.0.0.1:{port}"]  # kept, but marked: its pause could not be checked
    finally:
        await server.stop(None)


def test_malformed_endpoint_is_a_usage_error() -> None:
    for text in ["localhost", "host:", ":80", "host:99999", "a b:1"]:
        with pytest.raises(UsageError, match="malformed endpoint"):
            Endpoint.parse(text)
    assert Endpoint.parse("[::1]:50051") == Endpoint("::1", 50051)
    assert str(Endpoint("::1", 50051)) == "[::1]:50051"


async def test_deadline_names_endpoint() -> None:
    # a listening socket that never speaks HTTP/2: the call must end at the deadline
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        endpoint = Endpoint("127.0.0.1", silent.getsockname()[1])
        async with AdminClient(endpoint, ClientOptions(timeout=0.5)) as client:
            started = time.monotonic()
            with pytest.raises(PauseError, match=f"pause {endpoint}: "):
                await client.pause()
            assert time.monotonic() - started < 3


def _make_cert(tmp: Path) -> tuple[Path, Path]:
    key, cert = tmp / "server.key", tmp / "server.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=admin.txbackup.test",
         "-addext", "subjectAltName=DNS:admin.txbackup.test"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_with_ca_file_and_authority_override(tmp_path: Path) -> None:
    cert, key = _make_cert(tmp_path)
    gate = PauseGate()
    server, port = await start_admin_server(gate, "127.0.0.1", 0, tls=(cert.read_bytes(), key.read_bytes()))
    try:
        endpoint = Endpoint("127.0.0.1", port)
        tls = TlsOptions(ca_file=str(cert), override_authority="admin.txbackup.test")
        async with AdminClient(endpoint, ClientOptions(timeout=5, tls=tls)) as client:
            await client.pause(wait_outstanding=False)
            assert gate.paused and await client.check_paused() is True
            await client.unpause()
        # without the authority override the certificate's name does not match 127.0.0.1
        async with AdminClient(endpoint, ClientOptions(timeout=2, tls=TlsOptions(ca_file=str(cert)))) as c:
            with pytest.raises(PauseError, match=str(endpoint)):
                await c.check_paused()
    finally:
        await server.stop(None)
        await gate.unpause()
