"""The agent's HTTP server: a few JSON calls, token-protected, optionally over TLS.

Every call is ``POST /v1/<call>`` with a JSON object as body and, when the
agent has a token, ``Authorization: Bearer <token>``. The answer (HTTP 200)
is JSON lines: any number of ``{"progress": {...}}`` (at least one every
few seconds while the call works, so a long upload is never mistaken for a
dead agent), then exactly one ``{"result": {...}}`` or ``{"error": "one line"}``.
A bad token is HTTP 401, an unknown call 404, a malformed head 400, a body over
``MAX_BODY`` 413, too many calls at once 503, each with one ``{"error": ...}``
line; a malformed body, a field of the wrong type or a field the call does not
take is an ``{"error": ...}`` line of kind ``usage``. See ``txbackup.agent``
for the calls and ``AgentServer`` for how nobody can stall the agent.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import resource
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from txbackup import __version__, strictjson
from txbackup.agent.node import Node, Progress, check_keyspace, check_tag
from txbackup.errors import IntegrityError, TxbackupError, UsageError
from txbackup.repository.config import check_repository_id, is_repository_id
from txbackup.repository.layout import probe_name
from txbackup.storage.base import save_bytes

log = logging.getLogger("txbackup.agent")

HEARTBEAT_S = 5.0
API = "v1"
REQUEST_TIMEOUT_S = 10.0
"""From connecting to the end of the request head (TLS handshake included)."""
BODY_RATE = float(1 << 20)
"""Bytes a second a body is given on top of ``REQUEST_TIMEOUT_S``."""
WRITE_TIMEOUT_S = 120.0
"""A client that reads nothing of the answer for this long is given up."""
MAX_HEAD = 16 << 10
MAX_BODY = 64 << 20
MAX_PENDING = 1024
"""Connections whose request is not complete yet; beyond, the oldest is closed."""
MAX_CALLS = 64
"""Calls running at once; beyond, 503."""

Handler = Callable[[Node, Mapping[str, Any], Progress], Mapping[str, Any]]


def _keyspaces(body: Mapping[str, Any]) -> list[str]:
    value = body.get("keyspaces")
    if not isinstance(value, list) or not value or not all(isinstance(k, str) for k in value):
        raise UsageError("keyspaces: a non-empty list of names is required")
    return [check_keyspace(k) for k in value]


def _str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise UsageError(f"{key}: a non-empty string is required")
    return value


def _list(body: Mapping[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if not isinstance(value, list):
        raise UsageError(f"{key}: a list is required")
    return value


def _str_list(body: Mapping[str, Any], key: str) -> list[str]:
    value = _list(body, key)
    if not all(isinstance(v, str) for v in value):
        raise UsageError(f"{key}: a list of strings is required")
    return value


def _bool(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise UsageError(f"{key}: true or false is required")
    return value


def _info(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    identity = node.identity()
    answer: dict[str, Any] = {"node": identity, "agent_version": __version__, **node.jmx_state()}
    if body.get("keyspaces"):
        existing = node.existing_keyspaces()
        answer["missing_keyspaces"] = [k for k in _keyspaces(body) if k not in existing]
    return answer


def _preflight(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    expected = body.get("repository_id")
    if expected is not None:  # first: an agent of another repository touches nothing else
        if not is_repository_id(expected):
            raise UsageError("repository_id: 32 lowercase hex digits are required")
        check_repository_id(expected, node.storage, "agent")
        node.sealing()  # an encrypted repository: this agent must hold its blob key
    if node.jmx is not None:
        node.jmx.ensure()  # started now if it is not running: never inside the pause
    answer = dict(_info(node, body, progress))
    node.nodetool("version", timeout=120)  # the fallback, and clear and restore, need it
    asked = _keyspaces(body) if body.get("keyspaces") else []
    existing = [k for k in asked if k not in answer.get("missing_keyspaces", [])]
    if existing and body.get("method") != "stop":
        # the snapshot flushes the memtables inside the pause: flushed now, there is only what is
        # written from here to the pause left to flush then
        with contextlib.suppress(TxbackupError):  # only a saving: the snapshot flushes anyway
            answer["flush_ms"] = node.flush(existing, timeout=120)
    probe = probe_name()
    try:
        save_bytes(node.storage, probe, b"txbackup agent probe\n")
        node.storage.remove(probe)
    except TxbackupError as exc:
        raise TxbackupError(f"storage {node.storage.describe()} is not writable: {exc}") from None
    missing_dirs = [str(d) for d in node.config.data_dirs if not d.is_dir()]
    if missing_dirs:
        raise TxbackupError(f"data directory {missing_dirs[0]} does not exist")
    if body.get("method") == "stop" and not (node.config.stop_command and node.config.start_command):
        raise TxbackupError('method "stop" needs --stop-cmd and --start-cmd on the agent')
    answer["storage"] = node.storage.describe()
    return answer


def _snapshot(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    started = time.monotonic()
    timeout = body.get("timeout_s")
    limit = float(timeout) if isinstance(timeout, int | float) and timeout > 0 else None
    via = node.snapshot(check_tag(_str(body, "tag")), _keyspaces(body), timeout=limit)
    return {"ms": round((time.monotonic() - started) * 1000), "via": via}


def _clear(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    if _bool(body, "offline"):
        node.offline_clear(check_tag(_str(body, "tag")), _keyspaces(body))
    else:
        node.clear(check_tag(_str(body, "tag")), _keyspaces(body))
    return {}


def _upload(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    return node.upload(check_tag(_str(body, "tag")), _keyspaces(body), _str(body, "store"), progress)


def _schema(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    return {"statements": node.describe(_keyspaces(body))}


def _restore_check(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    return node.apply_schema(
        [], _keyspaces(body), _str_list(body, "tables"), _bool(body, "force"), apply=False
    )


def _restore_schema(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    return node.apply_schema(
        _list(body, "statements"),
        _keyspaces(body),
        _str_list(body, "tables"),
        _bool(body, "force"),
        apply=True,
    )


def _restore_prepare(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    files = _list(body, "files")
    for i, f in enumerate(files):
        if not (
            isinstance(f, dict)
            and all(isinstance(f.get(k), str) for k in ("keyspace", "table", "name", "sha256"))
            and isinstance(f.get("size"), int)
            and not isinstance(f.get("size"), bool)
            and f["size"] >= 0
            and isinstance(f.get("node", ""), str)
        ):
            raise UsageError(f"files[{i}]: keyspace, table, name, sha256 strings and a size >= 0 required")
    set_id = check_tag(_str(body, "set_id"))
    with node.tag_lock(f"restore/{set_id}"):
        return node.prepare(set_id, _str(body, "store"), files, progress)


def _restore_import(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    set_id = check_tag(_str(body, "set_id"))
    with node.tag_lock(f"restore/{set_id}"):
        return node.import_staged(set_id, progress)


def _restore_load(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    set_id = check_tag(_str(body, "set_id"))
    with node.tag_lock(f"restore/{set_id}"):
        return node.load_staged(set_id, progress)


def _restore_cleanup(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    set_id = check_tag(_str(body, "set_id"))
    with node.tag_lock(f"restore/{set_id}"):  # never under an import's feet
        node.cleanup(set_id)
    return {}


def _node_stop(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    node.stop_node()
    return {}


def _node_snapshot_offline(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    return {"files": node.offline_snapshot(check_tag(_str(body, "tag")), _keyspaces(body))}


def _node_start(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    wait = body.get("wait_s", 300)
    node.start_node(float(wait) if isinstance(wait, int | float) else 300.0)
    return {"node": node.identity()}


CALLS: dict[str, Handler] = {
    "info": _info,
    "preflight": _preflight,
    "snapshot": _snapshot,
    "clear": _clear,
    "upload": _upload,
    "schema": _schema,
    "restore/check": _restore_check,
    "restore/prepare": _restore_prepare,
    "restore/schema": _restore_schema,
    "restore/import": _restore_import,
    "restore/load": _restore_load,
    "restore/cleanup": _restore_cleanup,
    "node/stop": _node_stop,
    "node/snapshot-offline": _node_snapshot_offline,
    "node/start": _node_start,
}

FIELDS: dict[str, frozenset[str]] = {
    "info": frozenset({"keyspaces"}),
    "preflight": frozenset({"keyspaces", "method", "repository_id"}),
    "snapshot": frozenset({"tag", "keyspaces", "timeout_s"}),
    "clear": frozenset({"tag", "keyspaces", "offline"}),
    "upload": frozenset({"tag", "keyspaces", "store"}),
    "schema": frozenset({"keyspaces"}),
    "restore/check": frozenset({"keyspaces", "tables", "force"}),
    "restore/prepare": frozenset({"set_id", "store", "files"}),
    "restore/schema": frozenset({"keyspaces", "statements", "tables", "force"}),
    "restore/import": frozenset({"set_id"}),
    "restore/load": frozenset({"set_id"}),
    "restore/cleanup": frozenset({"set_id"}),
    "node/stop": frozenset(),
    "node/snapshot-offline": frozenset({"tag", "keyspaces"}),
    "node/start": frozenset({"wait_s"}),
}
"""The fields each call takes: any other is refused, so that no request can steer the
agent elsewhere (the hosts it talks to come from its own command line only)."""


def check_fields(call: str, body: Mapping[str, Any]) -> None:
    allowed = FIELDS.get(call)
    if allowed is None:
        return
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise UsageError(
            f"{call}: unknown field {unknown[0][:60]!r} "
            f"(this agent takes {', '.join(sorted(allowed)) or 'none'})"
        )


class _Lines:
    """Writes JSON lines to the client; a heartbeat keeps a long call visibly alive."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._last_progress = 0.0
        self.broken = False

    def send(self, obj: Mapping[str, Any]) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            if self.broken:
                raise ConnectionError("the client went away")
            try:
                self._sock.sendall(data)
            except OSError:  # reset, closed, or not reading for WRITE_TIMEOUT_S
                self.broken = True
                raise ConnectionError("the client went away") from None
            self._last = time.monotonic()

    def progress(self, info: Mapping[str, Any]) -> None:
        """Send ``info``, at most one progress line a second (the last one may be dropped)."""
        now = time.monotonic()
        if now - self._last_progress >= 1.0:
            self._last_progress = now
            self.send({"progress": dict(info)})

    def heartbeat(self, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_S / 5):
            if time.monotonic() - self._last >= HEARTBEAT_S:
                with contextlib.suppress(ConnectionError):
                    self.send({"progress": {}})


@dataclass(eq=False)
class _Pending:
    """A connection whose request is not read yet (TLS handshake, head, body)."""

    sock: socket.socket
    peer: str
    deadline: float
    state: str  # "handshake", "head" or "body"
    buf: bytearray = field(default_factory=bytearray)
    call: str = ""
    length: int = 0


class _Refused(Exception):
    """A request answered with an HTTP error before any call runs."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class AgentServer:
    """The agent's HTTP(S) server.

    One thread (``serve_forever``) accepts connections and reads every request
    without blocking: TLS handshakes, heads and bodies of all connections advance
    together through one selector, so a client that connects and stays silent (or
    trickles bytes) holds nothing but a file descriptor, and loses it
    ``REQUEST_TIMEOUT_S`` after connecting. Only a complete, authorized request
    gets a thread of its own, for the call; the time limits end there (a call's
    answer may stream for hours). At most ``MAX_PENDING`` connections wait for
    their request (beyond, the oldest is closed) and ``MAX_CALLS`` calls run at
    once (beyond, 503). One request per connection (HTTP/1.0, no keep-alive)."""

    def __init__(
        self,
        address: tuple[str, int],
        node: Node,
        token: str | None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.node = node
        self.token = token
        self.tls = tls
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(address)
            self.socket.listen(128)
            self.socket.setblocking(False)
        except OSError:
            self.socket.close()
            raise
        self.server_address = self.socket.getsockname()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._pending: dict[socket.socket, _Pending] = {}
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        # leave half the descriptors to the calls (files, nodetool, storage)
        self.max_pending = (
            MAX_PENDING if soft == resource.RLIM_INFINITY else max(16, min(MAX_PENDING, soft // 2))
        )
        self._calls = 0
        self._calls_lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._last_accept_error = 0.0

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port

    # -- the loop ---------------------------------------------------------------------------------
    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stopped.clear()
        self._selector.register(self.socket, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        try:
            while not self._stop.is_set():
                timeout = poll_interval
                if self._pending:
                    soonest = min(p.deadline for p in self._pending.values())
                    timeout = max(0.0, min(timeout, soonest - time.monotonic()))
                for key, _ in self._selector.select(timeout):
                    if key.fileobj is self.socket:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(64)
                    elif isinstance(key.data, _Pending) and key.data.sock in self._pending:
                        self._advance(key.data)
                self._expire()
        finally:
            for pending in list(self._pending.values()):
                self._drop(pending)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self.socket)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._wake_r)
            self._stop.clear()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop ``serve_forever`` (from another thread) and wait until it has returned."""
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._stopped.wait()

    def server_close(self) -> None:
        for sock in (self.socket, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    def _accept(self) -> None:
        for _ in range(64):  # then let the others advance
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors: free the oldest waiting one
                now = time.monotonic()
                if now - self._last_accept_error > 10:
                    self._last_accept_error = now
                    log.warning("cannot accept connections: %s", exc.strerror or exc)
                if self._pending:
                    self._drop(min(self._pending.values(), key=lambda p: p.deadline))
                else:
                    time.sleep(0.05)
                return
            if len(self._pending) >= self.max_pending:
                self._drop(min(self._pending.values(), key=lambda p: p.deadline))
            sock.setblocking(False)
            peer = str(address[0])
            state = "head"
            if self.tls is not None:
                try:
                    sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except (OSError, ValueError):
                    sock.close()
                    continue
                state = "handshake"
            pending = _Pending(sock, peer, time.monotonic() + REQUEST_TIMEOUT_S, state)
            self._pending[sock] = pending
            self._selector.register(sock, selectors.EVENT_READ, pending)

    def _expire(self) -> None:
        now = time.monotonic()
        for pending in [p for p in self._pending.values() if p.deadline <= now]:
            log.info("%s: request not received within its time limit; connection closed", pending.peer)
            self._drop(pending)

    def _forget(self, pending: _Pending) -> None:
        self._pending.pop(pending.sock, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(pending.sock)

    def _drop(self, pending: _Pending) -> None:
        self._forget(pending)
        _close(pending.sock)

    def _wait_for(self, pending: _Pending, events: int) -> None:
        self._selector.modify(pending.sock, events, pending)

    # -- reading a request ------------------------------------------------------------------------
    def _advance(self, pending: _Pending) -> None:
        """Move ``pending`` on as far as the bytes that arrived allow (never blocks)."""
        sock = pending.sock
        try:
            if pending.state == "handshake":
                assert isinstance(sock, ssl.SSLSocket)
                try:
                    sock.do_handshake()
                except ssl.SSLWantReadError:
                    self._wait_for(pending, selectors.EVENT_READ)
                    return
                except ssl.SSLWantWriteError:
                    self._wait_for(pending, selectors.EVENT_WRITE)
                    return
                pending.state = "head"
                self._wait_for(pending, selectors.EVENT_READ)
            while True:
                try:
                    chunk = sock.recv(65536)
                except (BlockingIOError, ssl.SSLWantReadError):
                    self._wait_for(pending, selectors.EVENT_READ)
                    return
                except ssl.SSLWantWriteError:
                    self._wait_for(pending, selectors.EVENT_WRITE)
                    return
                if not chunk:
                    self._drop(pending)  # the client gave up
                    return
                pending.buf += chunk
                if self._parse(pending):
                    return
        except _Refused as refused:
            self._forget(pending)
            log.info("%s: %s %s", pending.peer, refused.status.value, refused)
            _reply_error(sock, refused.status, str(refused))
        except (OSError, ValueError) as exc:  # reset, TLS alert or garbage, ...
            log.debug("%s: connection dropped while reading the request: %s", pending.peer, exc)
            self._drop(pending)
        except Exception as exc:  # a defect here must not stop the server for everyone
            log.error("%s: request dropped: internal error: %s: %s", pending.peer, type(exc).__name__, exc)
            self._drop(pending)

    def _parse(self, pending: _Pending) -> bool:
        """True once ``pending`` has left the selector (its call started)."""
        if pending.state == "head":
            end = pending.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(pending.buf) > MAX_HEAD:
                    raise _Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
                return False
            head = bytes(pending.buf[:end]).decode("latin-1")
            del pending.buf[: end + 4]
            pending.call, pending.length = self._check_head(head)
            pending.state = "body"
            # a large body may take longer than the head (MAX_BODY at 1 MiB/s at least)
            pending.deadline += pending.length / BODY_RATE
        if len(pending.buf) < pending.length:
            return False
        body = bytes(pending.buf[: pending.length])
        self._forget(pending)
        with self._calls_lock:
            busy = self._calls >= MAX_CALLS
            if not busy:
                self._calls += 1
        if busy:
            raise _Refused(HTTPStatus.SERVICE_UNAVAILABLE, f"busy: {MAX_CALLS} calls running; try again")
        threading.Thread(
            target=self._serve_call,
            args=(pending.sock, pending.peer, pending.call, body),
            name=f"agent-{pending.call}",
            daemon=True,
        ).start()
        return True

    def _check_head(self, head: str) -> tuple[str, int]:
        """The call and body length of a request head; ``_Refused`` for a bad, unauthorized,
        unknown or too large one (the body is never read then)."""
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise _Refused(HTTPStatus.BAD_REQUEST, "bad request line")
        method, path = parts[0], parts[1]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise _Refused(HTTPStatus.BAD_REQUEST, "bad header line")
            headers[name.lower()] = value.strip()
        if not self._authorized(headers.get("authorization", "")):
            raise _Refused(HTTPStatus.UNAUTHORIZED, "bad or missing agent token")
        if method != "POST":
            raise _Refused(HTTPStatus.METHOD_NOT_ALLOWED, "use POST /v1/<call>")
        prefix = f"/{API}/"
        call = path[len(prefix) :] if path.startswith(prefix) else ""
        if call not in CALLS:
            raise _Refused(HTTPStatus.NOT_FOUND, f"unknown call {path[:100]} (this agent speaks {API})")
        if "transfer-encoding" in headers:
            raise _Refused(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
        raw = headers.get("content-length", "0")
        if not raw.isdigit() or len(raw) > 12:
            raise _Refused(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        length = int(raw)
        if length > MAX_BODY:
            raise _Refused(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body of {length} bytes is over the agent's limit of {MAX_BODY}",
            )
        return call, length

    def _authorized(self, given: str) -> bool:
        expected = self.token
        if not expected:
            return True
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), expected.encode())

    # -- running a call ---------------------------------------------------------------------------
    def _serve_call(self, sock: socket.socket, peer: str, call: str, raw: bytes) -> None:
        try:
            sock.setblocking(True)
            sock.settimeout(WRITE_TIMEOUT_S)  # a client that stops reading is given up after it
            try:
                body = strictjson.loads(raw or b"{}")
            except (ValueError, RecursionError) as exc:
                log.info("%s: %s: bad request: %s", peer, call, _one_line(exc))
                _reply_error(sock, HTTPStatus.BAD_REQUEST, f"bad request: {_one_line(exc)}")
                return
            if not isinstance(body, dict):
                _reply_error(sock, HTTPStatus.BAD_REQUEST, "bad request: the body must be a JSON object")
                return
            self._run(sock, peer, call, body)
        except OSError as exc:
            log.info("%s: %s: the client went away (%s)", peer, call, exc.strerror or exc)
        finally:
            with self._calls_lock:
                self._calls -= 1
            _close(sock)

    def _run(self, sock: socket.socket, peer: str, call: str, body: dict[str, Any]) -> None:
        sock.sendall(_head(HTTPStatus.OK))
        lines = _Lines(sock)
        stop = threading.Event()
        beat = threading.Thread(target=lines.heartbeat, args=(stop,), name="agent-heartbeat", daemon=True)
        beat.start()
        started = time.monotonic()
        failure = ""
        try:
            check_fields(call, body)
            result = CALLS[call](self.node, body, lines.progress)
            answer: dict[str, Any] = {"result": dict(result)}
        except ConnectionError:
            log.warning("%s: %s: the client went away; call abandoned", peer, call)
            return
        except TxbackupError as exc:
            failure = str(exc)
            answer = {"error": failure, "kind": error_kind(exc)}
        except Exception as exc:  # a defect: one line, the traceback only at debug level
            failure = f"internal error: {type(exc).__name__}: {_one_line(exc)}"
            log.debug("%s traceback", call, exc_info=True)
            answer = {"error": failure}
        finally:
            stop.set()
            beat.join()
        took = time.monotonic() - started
        try:
            lines.send(answer)
            gone = ""
        except ConnectionError:
            gone = "; the client went away before the answer"
        # one line per call
        if failure:
            log.warning("%s: %s failed in %.1fs: %s%s", peer, call, took, failure, gone)
        else:
            log.log(
                logging.WARNING if gone else logging.INFO, "%s: %s done in %.1fs%s", peer, call, took, gone
            )


def _head(status: HTTPStatus, length: int | None = None) -> bytes:
    lines = [
        f"HTTP/1.0 {status.value} {status.phrase}",
        f"Server: txbackup-agent/{__version__}",
        "Content-Type: application/x-ndjson",
        "Connection: close",
        *([f"Content-Length: {length}"] if length is not None else []),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _reply_error(sock: socket.socket, status: HTTPStatus, message: str) -> None:
    """Answer ``status`` and one ``{"error": ...}`` line, then close (never blocks long)."""
    data = json.dumps({"error": message}).encode() + b"\n"
    try:
        sock.settimeout(1.0)
        sock.sendall(_head(status, len(data)) + data)
    except (OSError, ValueError):
        pass
    finally:
        _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError, ValueError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError, ValueError):
        sock.close()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def error_kind(exc: TxbackupError) -> str:
    """How an error travels to the engine: ``integrity`` (a corrupt or missing file),
    ``usage`` (a bad request), or ``target`` (anything else)."""
    if isinstance(exc, IntegrityError):
        return "integrity"
    if isinstance(exc, UsageError):
        return "usage"
    return "target"


def clear_leftovers(node: Node) -> None:
    """Clear the snapshots a previous run of this agent took and never cleared.

    A restarted agent means the backup that was using them has failed (its
    upload was cut) or has already committed: either way they are not needed."""
    for tag, keyspaces in node.leftover_snapshots().items():
        try:
            node.clear(tag, keyspaces)
            log.warning("cleared snapshot %s left by an earlier run of this agent", tag)
        except TxbackupError as exc:
            log.warning("could not clear snapshot %s left by an earlier run: %s", tag, exc)
