"""The scalar-admin client for one endpoint (grpc.aio).

Speaks the same wire protocol as the Java ``scalar-admin`` client: Pause,
Unpause and CheckPaused on ``/rpc.Admin/*``, with an optional TLS channel (CA
file or PEM, authority override). Every call has a deadline; every failure is
raised as a one-line ``PauseError`` naming the endpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import TracebackType

import grpc
from google.protobuf import empty_pb2

from txbackup.admin.rpc import admin_pb2, admin_pb2_grpc
from txbackup.errors import PauseError, UsageError

_HOST_PORT = re.compile(r"^(?:\[(?P<ip6>[0-9a-fA-F:.]+)\]|(?P<host>[A-Za-z0-9._-]+)):(?P<port>\d{1,5})$")


@dataclass(frozen=True, order=True)
class Endpoint:
    """A ``host:port`` where a scalar-admin server listens."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        match = _HOST_PORT.match(text.strip())
        if not match:
            raise UsageError(f"malformed endpoint {text!r}: expected host:port")
        port = int(match["port"])
        if not 0 < port < 65536:
            raise UsageError(f"malformed endpoint {text!r}: port must be 1-65535")
        return cls(match["ip6"] or match["host"], port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class TlsOptions:
    """TLS like the Java client: a CA root certificate and an authority override."""

    ca_file: str | None = None
    ca_pem: str | None = None
    override_authority: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        root: bytes | None = None
        if self.ca_pem:
            root = self.ca_pem.encode()
        elif self.ca_file:
            try:
                with open(self.ca_file, "rb") as f:
                    root = f.read()
            except OSError as exc:
                raise UsageError(f"CA certificate {self.ca_file}: {exc.strerror}") from exc
        return grpc.ssl_channel_credentials(root_certificates=root)


@dataclass(frozen=True)
class ClientOptions:
    """How to reach endpoints: per-call deadline (seconds) and optional TLS."""

    timeout: float = 10.0
    tls: TlsOptions | None = None


def describe_rpc_error(exc: grpc.aio.AioRpcError) -> str:
    """A short, human reason for a failed call."""
    code = exc.code()
    details = (exc.details() or "").strip().splitlines()
    detail = details[0] if details else ""
    if code == grpc.StatusCode.UNAVAILABLE:
        low = detail.lower()
        if "refused" in low:
            return "connection refused"
        if "dns" in low or "resolve" in low or ("name" in low and "unknown" in low):
            return f"cannot resolve host ({detail})"
        return f"unreachable ({detail})" if detail else "unreachable"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "no answer before the deadline"
    name = code.name if code is not None else "UNKNOWN"
    return f"{name}: {detail}" if detail else name


class AdminClient:
    """Pause, unpause and check one scalar-admin endpoint.

    Use as ``async with AdminClient(endpoint) as client: await client.pause()``.
    """

    def __init__(self, endpoint: Endpoint, options: ClientOptions | None = None) -> None:
        self.endpoint = endpoint
        self.options = options or ClientOptions()
        channel_options: list[tuple[str, str | int]] = []
        tls = self.options.tls
        if tls is not None:
            if tls.override_authority:
                channel_options.append(("grpc.ssl_target_name_override", tls.override_authority))
                channel_options.append(("grpc.default_authority", tls.override_authority))
            self._channel = grpc.aio.secure_channel(str(endpoint), tls.credentials(), options=channel_options)
        else:
            self._channel = grpc.aio.insecure_channel(str(endpoint), options=channel_options)
        self._stub = admin_pb2_grpc.AdminStub(self._channel)

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    def _fail(self, action: str, exc: grpc.aio.AioRpcError) -> PauseError:
        return PauseError(f"{action} {self.endpoint}: {describe_rpc_error(exc)}")

    async def pause(self, wait_outstanding: bool = True, max_pause_wait_ms: int | None = None) -> None:
        """Stop new requests and (by default) wait for in-flight ones to finish.

        The deadline covers the server's drain wait: ``timeout`` plus
        ``max_pause_wait_ms`` when given.
        """
        request = admin_pb2.PauseRequest(wait_outstanding=wait_outstanding)
        deadline = self.options.timeout
        if max_pause_wait_ms is not None:
            request.max_pause_wait_time = max_pause_wait_ms
            deadline += max_pause_wait_ms / 1000
        try:
            await self._stub.Pause(request, timeout=deadline, wait_for_ready=False)
        except grpc.aio.AioRpcError as exc:
            raise self._fail("pause", exc) from exc

    async def unpause(self) -> None:
        try:
            await self._stub.Unpause(empty_pb2.Empty(), timeout=self.options.timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._fail("unpause", exc) from exc

    async def check_paused(self) -> bool | None:
        """True or False; None for an older server that only has ``Stats``."""
        try:
            response = await self._stub.CheckPaused(empty_pb2.Empty(), timeout=self.options.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                return None
            raise self._fail("check", exc) from exc
        return bool(response.paused)
