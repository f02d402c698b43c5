"""The engine's side of the agent protocol: one ``AgentClient`` per agent.

``call(name, body)`` posts to ``/v1/<name>`` and reads the JSON lines of the
answer (see ``txbackup.agent.server``): progress lines go to ``on_progress``,
the result is returned, an error line becomes a ``TargetError`` naming the
agent. Between two lines the agent may stay silent for at most ``idle_s``
(it sends a heartbeat every 5 s), so a dead agent or a cut connection is seen
in seconds, whatever the length of the call.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from txbackup.errors import IntegrityError, TargetError, UsageError

DEFAULT_PORT = 7480
IDLE_S = 30.0


@dataclass(frozen=True)
class AgentTls:
    ca_file: str | None = None  # None: the system's trusted CAs
    server_name: str | None = None  # the name to check in the agent's certificate


def parse_agent(text: str, culprit: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``; the port defaults to 7480)."""
    host, port = text, DEFAULT_PORT
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            port = _port(rest.removeprefix(":"), text, culprit)
    elif text.count(":") == 1:
        host, raw = text.split(":")
        port = _port(raw, text, culprit)
    if not host:
        raise UsageError(f"{culprit}: agent {text!r} has no host")
    return host, port


def _port(raw: str, text: str, culprit: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise UsageError(f"{culprit}: agent {text!r}: bad port")
    return int(raw)


class AgentClient:
    def __init__(
        self,
        address: str,
        *,
        culprit: str,
        token: str | None = None,
        tls: AgentTls | None = None,
        idle_s: float = IDLE_S,
    ) -> None:
        self.address = address
        self.host, self.port = parse_agent(address, culprit)
        self.culprit = culprit
        self.token = token
        self.tls = tls
        self.idle_s = idle_s

    def __repr__(self) -> str:
        return f"AgentClient({self.address})"

    def error(self, message: str) -> TargetError:
        return TargetError(f"{self.culprit}: agent {self.address}: {message}")

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self.tls is None:
            return http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        context = ssl.create_default_context(cafile=self.tls.ca_file)
        if self.tls.server_name:
            # check the certificate against the configured name, not the address dialled
            return _NamedHTTPSConnection(self.host, self.port, self.tls.server_name, context, timeout)
        return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=context)

    def call(
        self,
        name: str,
        body: Mapping[str, Any] | None = None,
        *,
        on_progress: Callable[[Mapping[str, Any]], None] | None = None,
        connect_s: float = 10.0,
    ) -> dict[str, Any]:
        """Run call ``name`` on the agent; its result (``TargetError`` on any failure)."""
        payload = json.dumps(dict(body or {})).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(payload))}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = self._connection(connect_s)
        try:
            try:
                conn.connect()
            except ConnectionRefusedError:
                raise self.error("unreachable (connection refused; is the agent running?)") from None
            except ssl.SSLError as exc:
                raise self.error(f"TLS: {exc.reason or exc}") from None
            except TimeoutError:
                raise self.error(f"unreachable (no answer within {connect_s:g} s)") from None
            except OSError as exc:
                raise self.error(f"unreachable ({_reason(exc)})") from None
            assert conn.sock is not None
            conn.sock.settimeout(self.idle_s)
            try:
                conn.request("POST", f"/v1/{name}", body=payload, headers=headers)
                response = conn.getresponse()
            except TimeoutError:
                raise self.error(f"{name}: silent for {self.idle_s:g} s (agent or node hung?)") from None
            except ssl.SSLError as exc:
                raise self.error(f"TLS: {exc.reason or exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                raise self.error(
                    f"{name}: connection lost ({_reason(exc)}); was the agent stopped?"
                ) from None
            return self._read(name, response, on_progress)
        finally:
            conn.close()

    def _read(
        self,
        name: str,
        response: http.client.HTTPResponse,
        on_progress: Callable[[Mapping[str, Any]], None] | None,
    ) -> dict[str, Any]:
        while True:
            try:
                raw = response.readline()
            except TimeoutError:
                raise self.error(f"{name}: silent for {self.idle_s:g} s (agent or node hung?)") from None
            except (OSError, http.client.HTTPException) as exc:
                raise self.error(
                    f"{name}: connection lost ({_reason(exc)}); was the agent stopped?"
                ) from None
            if not raw:
                raise self.error(f"{name}: connection lost before the answer; was the agent stopped?")
            try:
                line = json.loads(raw)
            except ValueError:
                raise self.error(f"{name}: not a txbackup agent (HTTP {response.status})") from None
            if not isinstance(line, dict):
                raise self.error(f"{name}: unexpected answer {raw[:100]!r}")
            if "error" in line:
                text = str(line["error"]) if name in ("info", "preflight") else f"{name}: {line['error']}"
                error = self.error(text)
                if line.get("kind") == "integrity":
                    raise IntegrityError(str(error)) from None
                raise error
            if "result" in line:
                result = line["result"]
                if response.status != 200 or not isinstance(result, dict):
                    raise self.error(f"{name}: unexpected answer (HTTP {response.status})")
                return result
            progress = line.get("progress")
            if on_progress is not None and isinstance(progress, dict) and progress:
                on_progress(progress)


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(
        self, host: str, port: int, server_name: str, context: ssl.SSLContext, timeout: float
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_name = server_name
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self._server_name)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
