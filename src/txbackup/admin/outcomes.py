"""What a failed Pause says about the server's gate, and what the caller may do next.

ScalarDB Cluster 3.19 (release notes, "ABORTED is new on the pause RPC") and
ScalarDL's ``AdminService`` attach a ``google.rpc.ErrorInfo`` to every failed
Pause, in the ``grpc-status-details-bin`` trailer (a serialized
``google.rpc.Status``), with ``domain`` ``com.scalar.db.cluster.admin`` (ScalarDL:
``com.scalar.dl.admin``) and ``reason`` the outcome. Callers are told to branch on
the reason, never on the status code or the text, because two outcomes share a
code and need opposite recovery:

- ``PAUSE_IN_PROGRESS`` (ABORTED): another pause request holds the gate; it is not
  ours. Retry; never unpause to "recover": that would revoke the other pause.
- ``GATE_OPEN`` (ABORTED): a concurrent unpause reopened the gate. Retry.
- ``TIMED_OUT`` (FAILED_PRECONDITION): in-flight requests did not drain; the server
  undid its own closure, the gate is open. Not retried as is (it would time out
  again): raise the wait.
- ``TIMED_OUT_STILL_PAUSED`` (FAILED_PRECONDITION): the same, but the gate stays
  closed under an EARLIER pause. The server IS paused (never report it as
  serving), and it must NOT be unpaused by us: that earlier pause's caller was
  told it succeeded.

So a server that answered with one of these reasons holds no pause of ours: the
fleet leaves it alone when it unpauses to recover. A failure without a known
reason (older servers, a lost connection, a deadline) may have paused the server
after all, and is unpaused as before.

The trailer is untrusted bytes from the network: it is size-bounded, parsed
with protobuf (a malformed one is ignored, not fatal), its code must match the
call's, and a reason is only believed from a known domain and in the shape of
an enum name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

STATUS_DETAILS_KEY = "grpc-status-details-bin"
MAX_DETAILS_BYTES = 16 << 10
"""A larger status trailer is ignored: a real one is a few dozen bytes."""

ERROR_DOMAIN = "txbackup.admin"
"""The domain of the reasons our own server (``admin/server.py``) sends."""
DOMAINS = ("com.scalar.db.cluster.admin", "com.scalar.dl.admin", ERROR_DOMAIN)
"""ErrorInfo domains whose pause reasons we act on (ScalarDB Cluster, ScalarDL, ours)."""

_ERROR_INFO_URL = "type.googleapis.com/" + error_details_pb2.ErrorInfo.DESCRIPTOR.full_name
_REASON_SHAPE = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


@dataclass(frozen=True)
class Rule:
    """What one reason means: may we retry, does the server stay paused (not by us)."""

    retry: bool
    still_paused: bool
    says: str


RULES: dict[str, Rule] = {
    "PAUSE_IN_PROGRESS": Rule(True, False, "another pause request is in progress (not ours: left alone)"),
    "GATE_OPEN": Rule(True, False, "a concurrent unpause reopened the gate"),
    "TIMED_OUT": Rule(
        False, False, "in-flight requests did not drain in time; the server reopened its gate"
        " (raise --max-pause-wait / max_pause_wait)",
    ),
    "TIMED_OUT_STILL_PAUSED": Rule(
        False, True, "in-flight requests did not drain in time, and the server STAYS PAUSED by an"
        " earlier pause that is not ours: not unpaused (that would revoke it; `txbackup unpause`"
        " it once you know nobody holds that pause)",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class ErrorReason:
    """The ErrorInfo of a failed call, from a known domain."""

    domain: str
    reason: str

    @property
    def rule(self) -> Rule | None:
        return RULES.get(self.reason)


def error_reason(exc: grpc.aio.AioRpcError) -> ErrorReason | None:
    """The ErrorInfo reason a failed call carries, or None (none, unknown domain, malformed)."""
    code = exc.code()
    if code is None:
        return None
    raw = _details_bytes(exc.trailing_metadata())
    if raw is None:
        return None
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except (DecodeError, ValueError, RecursionError):
        return None
    if status.code != code.value[0]:  # a trailer that contradicts the call: not believed
        return None
    for detail in status.details[:16]:
        if detail.type_url != _ERROR_INFO_URL:
            continue
        info = error_details_pb2.ErrorInfo()
        try:
            if not detail.Unpack(info):
                continue
        except (DecodeError, ValueError, RecursionError):
            continue
        if info.domain in DOMAINS and _REASON_SHAPE.match(info.reason):
            return ErrorReason(info.domain, info.reason)
    return None


def _details_bytes(metadata: Iterable[Any] | None) -> bytes | None:
    for item in metadata or ():
        try:
            key, value = item
        except (TypeError, ValueError):
            continue
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes) and len(value) <= MAX_DETAILS_BYTES:
            return value
    return None


def status_details(code: grpc.StatusCode, message: str, domain: str, reason: str) -> bytes:
    """A ``grpc-status-details-bin`` value carrying one ErrorInfo (for servers: ours and
    the test servers that play ScalarDB Cluster)."""
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain))
    data: bytes = status.SerializeToString()
    return data
