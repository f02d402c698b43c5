"""An rpc.Admin server on 127.0.0.1 that answers Pause the ways ScalarDB Cluster 3.19 can.

A real grpc.aio server (the client talks to it over the network like to any
other): its Pause can answer ABORTED a number of times, fail with a
``google.rpc.ErrorInfo`` reason in the ``grpc-status-details-bin`` trailer (as
ScalarDB Cluster and ScalarDL do), send a raw trailer of our choosing
(malformed, another domain, a contradicting code), or lie: answer "paused" and
stay unpaused (the race fixed in 3.15.9 / 3.16.6 / 3.17.4 / 3.18.1). It records
every call, so tests can tell whom the client unpaused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import empty_pb2

from txbackup.admin.client import Endpoint
from txbackup.admin.outcomes import STATUS_DETAILS_KEY, status_details
from txbackup.admin.rpc import admin_pb2, admin_pb2_grpc
from txbackup.admin.server import SERVER_OPTIONS, bind

CLUSTER_DOMAIN = "com.scalar.db.cluster.admin"


@dataclass
class Script:
    """How Pause answers. Calls beyond ``aborts`` follow ``fail_reason`` / ``lie``."""

    aborts: int = 0
    """The first N Pause calls answer ABORTED with ``abort_reason``."""
    abort_reason: str = "PAUSE_IN_PROGRESS"
    fail_reason: str | None = None
    """Later Pause calls fail FAILED_PRECONDITION with this reason (TIMED_OUT, ...)."""
    fail_code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION
    domain: str = CLUSTER_DOMAIN
    raw_details: bytes | None = None
    """Send this trailer instead of a well-formed one (with ``fail_reason`` set)."""
    lie: bool = False
    """Pause answers OK but the server stays unpaused."""
    paused_at_start: bool = False
    """The gate is held by an earlier pause (not the client's) from the start."""
    check_paused: bool = True
    """False: CheckPaused answers UNIMPLEMENTED (an older server)."""


@dataclass
class FaultyAdmin(admin_pb2_grpc.AdminServicer):  # type: ignore[misc]
    script: Script
    paused: bool = False
    calls: list[str] = field(default_factory=list)
    waits: list[int | None] = field(default_factory=list)
    """max_pause_wait_time of each Pause (None: unset)."""

    def count(self, name: str) -> int:
        return sum(1 for c in self.calls if c == name)

    async def Pause(self, request: admin_pb2.PauseRequest, context: Any) -> Any:
        self.calls.append("Pause")
        self.waits.append(request.max_pause_wait_time if request.HasField("max_pause_wait_time") else None)
        script = self.script
        if self.count("Pause") <= script.aborts:
            await self._abort(context, grpc.StatusCode.ABORTED, script.abort_reason, "lost a race")
        if script.fail_reason is not None:
            await self._abort(context, script.fail_code, script.fail_reason, "did not drain")
        if not script.lie:
            self.paused = True
        return empty_pb2.Empty()

    async def _abort(self, context: Any, code: grpc.StatusCode, reason: str, text: str) -> None:
        details = self.script.raw_details
        if details is None:
            details = status_details(code, f"Pause failed: {text}", self.script.domain, reason)
        await context.abort(code, f"Pause failed: {text}", trailing_metadata=((STATUS_DETAILS_KEY, details),))

    async def Unpause(self, request: Any, context: Any) -> Any:
        self.calls.append("Unpause")
        self.paused = False
        return empty_pb2.Empty()

    async def CheckPaused(self, request: Any, context: Any) -> admin_pb2.CheckPausedResponse:
        self.calls.append("CheckPaused")
        if not self.script.check_paused:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not found: rpc.Admin/CheckPaused")
        return admin_pb2.CheckPausedResponse(paused=self.paused)


@dataclass
class RunningFaultyAdmin:
    admin: FaultyAdmin
    endpoint: Endpoint


@asynccontextmanager
async def faulty_admin(script: Script | None = None) -> AsyncIterator[RunningFaultyAdmin]:
    """Serve a ``FaultyAdmin`` on a free port of 127.0.0.1 for the block."""
    script = script or Script()
    admin = FaultyAdmin(script, paused=script.paused_at_start)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    admin_pb2_grpc.add_AdminServicer_to_server(admin, server)
    port = bind(server, "127.0.0.1", 0)
    await server.start()
    try:
        yield RunningFaultyAdmin(admin, Endpoint("127.0.0.1", port))
    finally:
        await server.stop(None)
