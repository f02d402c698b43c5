"""The scalar-admin client for one endpoint (grpc.aio).

Speaks the same wire protocol as the Java ``scalar-admin`` client: Pause,
Unpause and CheckPaused on ``/rpc.Admin/*``, with an optional TLS channel (CA
file or PEM, authority override) and, beyond the Java client, a client
certificate for servers that require one (mutual TLS: the protocol itself
authenticates nobody). Every call has a deadline; every failure is raised as a
one-line ``PauseError`` naming the endpoint.

A Pause that answers ABORTED (ScalarDB Cluster 3.19: it lost a race with another
admin request) is retried with a growing, jittered backoff, within the call's own
deadline (``timeout`` plus the drain wait); a failed Pause is raised as
``PauseRefused`` carrying the server's ErrorInfo reason, if any (``outcomes``).
"""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass, field
from functools import cached_property
from types import TracebackType

import grpc
from google.protobuf import empty_pb2

from txbackup.admin.outcomes import ErrorReason, error_reason
from txbackup.admin.rpc import admin_pb2, admin_pb2_grpc
from txbackup.admin.tls import check_certificates, load_key_pair, read_certificates
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
class TlsMaterial:
    """What a TLS channel is made of, read and checked (PEM bytes; None: not given)."""

    root: bytes | None = None
    chain: bytes | None = None
    key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class TlsOptions:
    """TLS like the Java client (a CA root certificate, an authority override), plus
    our certificate chain and private key (``cert_file``, ``key_file``: both or
    neither) for a server that requires client certificates (mutual TLS).

    The files are read and checked once, by :meth:`load` (the cluster-file reader
    calls it, so a bad file is refused before anything is paused).
    """

    ca_file: str | None = None
    ca_pem: str | None = None
    override_authority: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def __post_init__(self) -> None:
        if self.ca_file and self.ca_pem:
            raise UsageError("give either ca_file or ca_pem, not both")
        if (self.cert_file is None) != (self.key_file is None):
            given, missing = ("cert_file", "key_file") if self.key_file is None else ("key_file", "cert_file")
            raise UsageError(f"{given} needs {missing}: a client certificate goes with its private key")

    @property
    def mutual(self) -> bool:
        """Whether we present a client certificate."""
        return self.cert_file is not None

    @cached_property
    def _material(self) -> TlsMaterial:
        root: bytes | None = None
        if self.ca_pem:
            if "PRIVATE KEY" in self.ca_pem:  # a key pasted with the CA: a secret in the cluster file
                raise UsageError(
                    "ca_pem holds a private key; a key never goes in the cluster file: give the "
                    "client's with key_file (an owner-only file)"
                )
            root = check_certificates(self.ca_pem.encode(), what="ca_pem")
        elif self.ca_file:
            root = read_certificates(self.ca_file, what="ca_file")
        chain = key = None
        if self.cert_file is not None and self.key_file is not None:
            chain, key = load_key_pair(self.cert_file, self.key_file)
        return TlsMaterial(root, chain, key)

    def load(self) -> TlsMaterial:
        """The certificates and key, read and checked the first time (one-line
        ``UsageError`` naming the file: unreadable, not PEM, a key others may read,
        a key that is not the certificate's)."""
        return self._material

    def credentials(self) -> grpc.ChannelCredentials:
        material = self.load()
        return grpc.ssl_channel_credentials(
            root_certificates=material.root, private_key=material.key, certificate_chain=material.chain
        )


@dataclass(frozen=True)
class ClientOptions:
    """How to reach endpoints: per-call deadline (seconds) and optional TLS."""

    timeout: float = 10.0
    tls: TlsOptions | None = None


_TLS_FAILED = re.compile(
    r"(?:Tls|Ssl) handshake failed.*?OPENSSL_internal:(?P<reason>[A-Z0-9_]+)(?::\s*(?P<text>[^:]+))?"
)


# alerts a server sends when it refuses a client certificate (TLS 1.2; in TLS 1.3 it closes)
_REFUSED_CERTIFICATE = ("CERTIFICATE", "UNKNOWN_CA", "HANDSHAKE_FAILURE", "ACCESS_DENIED", "DECRYPT_ERROR")


def _handshake_reason(detail: str, tls: TlsOptions | None) -> str | None:
    """Why a connection failed in (or because of) the TLS handshake, or None.

    A server that requires a client certificate refuses ours, or a missing one,
    after the handshake (TLS 1.3): the client only sees the connection closed.
    """
    match = _TLS_FAILED.search(detail)
    if match:
        reason, text = match["reason"], (match["text"] or "").strip()
        shown = f"{reason}: {text}" if text and text != "OK" and "context" not in text else reason
        if reason == "WRONG_VERSION_NUMBER":
            return f"TLS handshake failed: the server does not speak TLS ({shown})"
        if reason == "CERTIFICATE_VERIFY_FAILED":
            return f"TLS handshake failed: the server's certificate is not trusted ({shown})"
        if "ALERT" in reason and any(word in reason for word in _REFUSED_CERTIFICATE):
            return f"TLS handshake failed: the server refused our client certificate ({shown})"
        return f"TLS handshake failed ({shown})"
    if "hostname verification" in detail.lower() or "not in peer certificate" in detail.lower():
        return (
            "TLS: the server's certificate does not name the host we connect to "
            "(set override_authority / --override-authority to the name it holds)"
        )
    if "socket closed" in detail.lower() or "connection reset" in detail.lower():
        if tls is None:
            return "the server closed the connection (does it require TLS? use --tls / [applications] tls)"
        if tls.mutual:
            return "the server closed the connection in the TLS handshake (did it refuse our certificate?)"
        return (
            "the server closed the connection in the TLS handshake (does it require a client "
            "certificate? give cert_file/key_file or --tls-cert-path/--tls-key-path)"
        )
    return None


def describe_rpc_error(exc: grpc.aio.AioRpcError, tls: TlsOptions | None = None) -> str:
    """A short, human reason for a failed call (``tls``: the channel's TLS options)."""
    code = exc.code()
    details = (exc.details() or "").strip().splitlines()
    detail = details[0] if details else ""
    if code == grpc.StatusCode.UNAVAILABLE:
        low = detail.lower()
        if "refused" in low:
            return "connection refused"
        handshake = _handshake_reason(detail, tls)  # before the DNS words: "UNKNOWN: ... Hostname"
        if handshake is not None:
            return handshake
        if "dns" in low or "resolve" in low or ("name" in low and "unknown" in low):
            return f"cannot resolve host ({detail})"
        return f"unreachable ({detail})" if detail else "unreachable"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "no answer before the deadline"
    name = code.name if code is not None else "UNKNOWN"
    return f"{name}: {detail}" if detail else name


MAX_PAUSE_ATTEMPTS = 8
"""Pause calls per endpoint at most when the server keeps answering ABORTED."""
BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 1.0


class PauseRefused(PauseError):
    """A Pause the server answered with an error (not a lost connection or a deadline).

    ``reason`` is its ErrorInfo from a known domain, if it sent one. ``not_ours``:
    the reason says the server holds no pause of ours (so we must not unpause it to
    recover); ``still_paused``: it is paused all the same, by an earlier pause.
    """

    def __init__(self, message: str, code: str, reason: ErrorReason | None, attempts: int) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.attempts = attempts

    @property
    def not_ours(self) -> bool:
        return self.reason is not None and self.reason.rule is not None

    @property
    def still_paused(self) -> bool:
        rule = self.reason.rule if self.reason is not None else None
        return rule is not None and rule.still_paused


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
        return PauseError(f"{action} {self.endpoint}: {describe_rpc_error(exc, self.options.tls)}")

    async def pause(self, wait_outstanding: bool = True, max_pause_wait_ms: int | None = None) -> int:
        """Stop new requests and (by default) wait for in-flight ones to finish; returns
        how many Pause calls it took.

        The deadline covers the server's drain wait: ``timeout`` plus
        ``max_pause_wait_ms`` when given. ABORTED answers (a race lost to another admin
        request) are retried inside that same deadline, each retry with the drain wait
        that is left, at most ``MAX_PAUSE_ATTEMPTS`` calls; ``PauseRefused`` otherwise.
        """
        loop = asyncio.get_running_loop()
        timeout = self.options.timeout
        ends = loop.time() + timeout + (max_pause_wait_ms or 0) / 1000
        backoff = BACKOFF_FIRST_S
        attempt = 0
        while True:
            attempt += 1
            request = admin_pb2.PauseRequest(wait_outstanding=wait_outstanding)
            remaining = ends - loop.time()
            if max_pause_wait_ms is not None:
                # a retry gets the drain wait that is left, so it ends inside the deadline
                left_ms = int((remaining - timeout) * 1000)
                wait_ms = max_pause_wait_ms if attempt == 1 else min(max_pause_wait_ms, left_ms)
                request.max_pause_wait_time = wait_ms
            try:
                await self._stub.Pause(request, timeout=remaining, wait_for_ready=False)
                return attempt
            except grpc.aio.AioRpcError as exc:
                reason = error_reason(exc)
                retry = exc.code() == grpc.StatusCode.ABORTED or (
                    reason is not None and reason.rule is not None and reason.rule.retry
                )
                sleep = backoff * random.uniform(0.5, 1.0)  # jitter: fleets of pausers do not march
                left = ends - loop.time() - sleep
                # a retry needs a useful deadline: with a drain wait, the whole call timeout
                # and some of the wait; without, a little time
                need = 0.05 if max_pause_wait_ms is None else timeout + min(max_pause_wait_ms / 1000, 0.001)
                if not retry or attempt >= MAX_PAUSE_ATTEMPTS or left < need:
                    raise self._refused(exc, reason, attempt) from exc
            await asyncio.sleep(sleep)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _refused(self, exc: grpc.aio.AioRpcError, reason: ErrorReason | None, attempts: int) -> PauseError:
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, None):
            return self._fail("pause", exc)  # no answer from the server: the outcome is unknown
        text = describe_rpc_error(exc, self.options.tls)
        if reason is not None:
            rule = reason.rule
            text += f" ({reason.reason}: {rule.says})" if rule else f" ({reason.reason}, {reason.domain})"
        if attempts > 1:
            text += f" (after {attempts} attempts)"
        code = exc.code().name if exc.code() is not None else "UNKNOWN"
        return PauseRefused(f"pause {self.endpoint}: {text}", code, reason, attempts)

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
