"""Pause hardening against a Java gRPC peer: the ErrorInfo trailer as grpc-java's
StatusProto encodes it (the way ScalarDB Cluster 3.19 sends it), read by our client.

The peer is tests/java/AdminPeerServer.java on the real scalar-admin jar's classes;
without the jars these tests skip (and fail under CI=true).
"""

from __future__ import annotations

import pytest

from tests.servers.java_peers import java_admin_peer
from txbackup.admin.client import AdminClient, Endpoint, PauseRefused
from txbackup.admin.fleet import Fleet, paused
from txbackup.demo.sample_service import start_sample_server
from txbackup.errors import PauseError

pytestmark = pytest.mark.java


def endpoint(port: int) -> Endpoint:
    return Endpoint("127.0.0.1", port)


async def test_java_aborted_twice_then_paused() -> None:
    with java_admin_peer(abort_pause=2) as peer:
        fleet = Fleet([endpoint(peer.port)])
        async with paused(fleet) as window:
            pass
        await fleet.close()
        assert window.attempts == {peer.address: 3}
        kinds = [e.split()[0] for e in peer.events()]
        assert kinds == ["Pause", "Pause", "Pause", "CheckPaused", "CheckPaused", "Unpause"]


async def test_java_timed_out_still_paused_is_left_paused() -> None:
    sample = await start_sample_server()
    try:
        with java_admin_peer(fail_pause="FAILED_PRECONDITION", fail_reason="TIMED_OUT_STILL_PAUSED",
                             start_paused=True) as peer:  # fmt: skip
            fleet = Fleet([endpoint(peer.port), Endpoint("127.0.0.1", sample.port)])
            with pytest.raises(PauseError) as info:
                await fleet.pause(max_pause_wait_ms=100)
            async with AdminClient(endpoint(peer.port)) as client:
                assert await client.check_paused() is True
            await fleet.close()
            said = "FAILED_PRECONDITION: AdminPeerServer told to fail Pause (TIMED_OUT_STILL_PAUSED:"
            assert f"{peer.address}: {said}" in str(info.value)
            assert not any(e.startswith("Unpause") for e in peer.events())
            assert not sample.gate.paused
    finally:
        await sample.stop()


async def test_java_reason_is_read_from_the_trailer() -> None:
    with java_admin_peer(fail_pause="FAILED_PRECONDITION", fail_reason="TIMED_OUT") as peer:
        async with AdminClient(endpoint(peer.port)) as client:
            with pytest.raises(PauseRefused) as info:
                await client.pause()
        reason = info.value.reason
        assert reason is not None
        assert (reason.domain, reason.reason) == ("com.scalar.db.cluster.admin", "TIMED_OUT")
        assert info.value.not_ours and not info.value.still_paused


async def test_java_node_that_lies_fails_the_pause_and_is_unpaused() -> None:
    with java_admin_peer(lie_paused=True) as peer:
        fleet = Fleet([endpoint(peer.port)])
        with pytest.raises(PauseError, match="CheckPaused says it is serving"):
            await fleet.pause()
        await fleet.close()
        assert peer.wait_event("Unpause")
