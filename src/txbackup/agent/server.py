"""The agent's HTTP server: a few JSON calls, token-protected, optionally over TLS.

Every call is ``POST /v1/<call>`` with a JSON object as body and, when the
agent has a token, ``Authorization: Bearer <token>``. The answer (HTTP 200)
is JSON lines: any number of ``{"progress": {...}}`` (at least one every
few seconds while the call works, so a long upload is never mistaken for a
dead agent), then exactly one ``{"result": {...}}`` or ``{"error": "one line"}``.
A bad token is HTTP 401, an unknown call 404, a malformed body 400, each with
an ``{"error": ...}`` line. See ``txbackup.agent`` for the calls.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from txbackup import __version__
from txbackup.agent.node import Node, Progress, check_keyspace, check_tag
from txbackup.errors import IntegrityError, TxbackupError, UsageError

log = logging.getLogger("txbackup.agent")

HEARTBEAT_S = 5.0
MAX_BODY = 64 << 20
API = "v1"

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


def _info(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    identity = node.identity()
    answer: dict[str, Any] = {"node": identity, "agent_version": __version__}
    if body.get("keyspaces"):
        existing = node.existing_keyspaces()
        answer["missing_keyspaces"] = [k for k in _keyspaces(body) if k not in existing]
    return answer


def _preflight(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    answer = dict(_info(node, body, progress))
    node.nodetool("version", timeout=120)
    probe = f"cassandra/.probe/{uuid.uuid4().hex}"
    try:
        import io

        node.storage.save(probe, io.BytesIO(b"txbackup agent probe\n"))
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
    node.snapshot(check_tag(_str(body, "tag")), _keyspaces(body), timeout=limit)
    return {"ms": round((time.monotonic() - started) * 1000)}


def _clear(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    if body.get("offline"):
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
        [], [str(t) for t in _list(body, "tables")], bool(body.get("force")), apply=False
    )


def _restore_schema(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    statements = _list(body, "statements")
    if not all(isinstance(s, dict) for s in statements):
        raise UsageError("statements: a list of objects is required")
    return node.apply_schema(
        statements, [str(t) for t in _list(body, "tables")], bool(body.get("force")), apply=True
    )


def _restore_prepare(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    return node.prepare(check_tag(_str(body, "set_id")), _str(body, "store"), _list(body, "files"), progress)


def _restore_import(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    return node.import_staged(check_tag(_str(body, "set_id")), progress)


def _restore_load(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    hosts = [str(h) for h in _list(body, "hosts")]
    return node.load_staged(check_tag(_str(body, "set_id")), hosts, progress)


def _restore_cleanup(node: Node, body: Mapping[str, Any], progress: Progress) -> Mapping[str, Any]:
    node.cleanup(check_tag(_str(body, "set_id")))
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


class _Lines:
    """Writes JSON lines to the client; a heartbeat keeps a long call visibly alive."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self._handler = handler
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
                self._handler.wfile.write(data)
                self._handler.wfile.flush()
            except OSError:
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


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        node: Node,
        token: str | None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.node = node
        self.token = token
        super().__init__(address, _RequestHandler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    @property
    def port(self) -> int:
        port: int = self.server_address[1]
        return port


class _RequestHandler(BaseHTTPRequestHandler):
    server: AgentServer
    protocol_version = "HTTP/1.0"
    server_version = f"txbackup-agent/{__version__}"

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _reply_error(self, status: HTTPStatus, message: str) -> None:
        data = json.dumps({"error": message}).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        expected = self.server.token
        if not expected:
            return True
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), expected.encode())

    def do_GET(self) -> None:
        self._reply_error(HTTPStatus.METHOD_NOT_ALLOWED, "use POST /v1/<call>")

    def do_POST(self) -> None:
        if not self._authorized():
            self._reply_error(HTTPStatus.UNAUTHORIZED, "bad or missing agent token")
            return
        prefix = f"/{API}/"
        call = self.path[len(prefix) :] if self.path.startswith(prefix) else ""
        handler = CALLS.get(call)
        if handler is None:
            self._reply_error(HTTPStatus.NOT_FOUND, f"unknown call {self.path} (this agent speaks {API})")
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            if not 0 <= length <= MAX_BODY:
                raise ValueError("body too large")
            body = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            self._reply_error(HTTPStatus.BAD_REQUEST, f"bad request: {exc}")
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Connection", "close")
        self.end_headers()
        lines = _Lines(self)
        stop = threading.Event()
        beat = threading.Thread(target=lines.heartbeat, args=(stop,), name="agent-heartbeat", daemon=True)
        beat.start()
        started = time.monotonic()
        try:
            result = handler(self.server.node, body, lines.progress)
            answer: dict[str, Any] = {"result": dict(result)}
        except ConnectionError:
            log.warning("%s: the client went away; call abandoned", call)
            return
        except TxbackupError as exc:
            log.warning("%s failed: %s", call, exc)
            answer = {"error": str(exc), "kind": error_kind(exc)}
        except Exception as exc:
            log.exception("%s failed", call)
            answer = {"error": f"internal error: {type(exc).__name__}: {exc}"}
        finally:
            stop.set()
            beat.join()
        log.info("%s done in %.1fs", call, time.monotonic() - started)
        with contextlib.suppress(ConnectionError):
            lines.send(answer)


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
