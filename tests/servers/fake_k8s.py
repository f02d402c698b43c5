"""A FAKE Kubernetes API server: just enough of it for discovery, driven by the real client.

No real API server installs from the package registries here, so this one
serves, over HTTPS on 127.0.0.1 with a certificate from a test CA
(:mod:`tests.certs`), what txbackup reads: ``GET`` lists of pods and services in
a namespace, filtered by ``labelSelector`` (``k=v``, ``k==v``, ``k!=v``, ``k``,
``!k``), answered as the real API answers (``PodList``; a ``Status`` object for
401 and 403). Callers authenticate with a bearer token or a client certificate
signed by the CA; a token or user without rights gets 403, as RBAC answers.

The state is mutable while a test runs, the way a cluster changes under a
pause: :meth:`FakeKubernetes.restart` bumps a container's restartCount,
:meth:`replace` gives a pod a new uid, :meth:`annotate` and :meth:`set_ready`
are the harmless writes that move ``resourceVersion`` only. Every write bumps
the global ``resourceVersion`` like etcd's revision.
"""

from __future__ import annotations

import json
import secrets
import ssl
import threading
import urllib.parse
import uuid
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.certs import CertificateAuthority, Issued


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


class FakeKubernetes:
    """The fake API server; ``with FakeKubernetes(folder) as api:`` starts and stops it."""

    def __init__(self, folder: Path, ca: CertificateAuthority | None = None) -> None:
        self.folder = folder
        self.ca = ca or CertificateAuthority(folder, "k8s")
        self._cert = self.ca.server("apiserver")
        self.tokens: dict[str, bool] = {}
        """bearer token -> may list (False: 403, as RBAC answers)."""
        self.users: dict[str, bool] = {}
        """client certificate common name -> may list."""
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {"pods": {}, "services": {}}
        self.requests: list[tuple[str, str]] = []
        """(path with query, who) of every request served."""
        self.revision = 100
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- the server ---------------------------------------------------------------------------------
    def __enter__(self) -> FakeKubernetes:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._cert.cert, self._cert.key)
        context.load_verify_locations(self.ca.cert)
        context.verify_mode = ssl.CERT_OPTIONAL  # a token, or a client certificate
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._serve(self)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-k8s", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _answer(self, handler: BaseHTTPRequestHandler, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _status(self, handler: BaseHTTPRequestHandler, code: int, reason: str, message: str) -> None:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}  # fmt: skip
        self._answer(handler, code, body)

    def _who(self, handler: BaseHTTPRequestHandler) -> tuple[str | None, bool]:
        scheme, _, token = handler.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":  # the scheme is case-insensitive (the in-cluster loader: "bearer")
            if token in self.tokens:
                return "system:serviceaccount:txbackup:token", self.tokens[token]
            return None, False
        peer = handler.connection.getpeercert() if isinstance(handler.connection, ssl.SSLSocket) else None
        if peer:
            subject = dict(item[0] for item in peer.get("subject", ()))  # type: ignore[misc]
            name = str(subject.get("commonName", ""))
            if name in self.users:
                return name, self.users[name]
        return None, False

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(handler.path)
        who, allowed = self._who(handler)
        with self._lock:
            self.requests.append((handler.path, who or "anonymous"))
        parts = url.path.strip("/").split("/")
        if len(parts) != 5 or parts[:3] != ["api", "v1", "namespaces"] or parts[4] not in self.objects:
            self._status(handler, 404, "NotFound", "the server could not find the requested resource")
            return
        namespace, kind = parts[3], parts[4]
        if who is None:
            self._status(handler, 401, "Unauthorized", "Unauthorized")
            return
        if not allowed:
            message = (
                f'{kind} is forbidden: User "{who}" cannot list resource "{kind}" in API group "" '
                f'in the namespace "{namespace}"'
            )
            self._status(handler, 403, "Forbidden", message)
            return
        selector = urllib.parse.parse_qs(url.query).get("labelSelector", [""])[0]
        with self._lock:
            items = [
                json.loads(json.dumps(obj))
                for (ns, _), obj in sorted(self.objects[kind].items())
                if ns == namespace and _matches(obj["metadata"].get("labels", {}), selector)
            ]
            revision = str(self.revision)
        title = "PodList" if kind == "pods" else "ServiceList"
        self._answer(
            handler, 200,
            {"kind": title, "apiVersion": "v1", "metadata": {"resourceVersion": revision}, "items": items},
        )  # fmt: skip

    # -- who may call -------------------------------------------------------------------------------
    def token(self, allowed: bool = True) -> str:
        """A new bearer token (``allowed=False``: RBAC denies it every list)."""
        token = secrets.token_urlsafe(24)
        self.tokens[token] = allowed
        return token

    def client_certificate(self, name: str = "txbackup-user", allowed: bool = True) -> Issued:
        issued = self.ca.issue(name, client=True, file=f"k8s-{name}")
        self.users[name] = allowed
        return issued

    def kubeconfig(
        self,
        path: Path,
        *,
        token: str | None = None,
        client: Issued | None = None,
        namespace: str | None = None,
        ca: Path | None = None,
    ) -> Path:
        """A kubeconfig file for this server (context ``fake``), as kubectl writes one."""
        user: dict[str, Any] = {}
        if token is not None:
            user["token"] = token
        if client is not None:
            user["client-certificate"] = str(client.cert)
            user["client-key"] = str(client.key)
        context: dict[str, Any] = {"cluster": "fake", "user": "me"}
        if namespace is not None:
            context["namespace"] = namespace
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url,
                                                      "certificate-authority": str(ca or self.ca.cert)}}],
            "users": [{"name": "me", "user": user}],
            "contexts": [{"name": "fake", "context": context}],
        }  # fmt: skip
        path.write_text(json.dumps(config))  # JSON is YAML
        path.chmod(0o600)
        return path

    # -- the cluster's state ------------------------------------------------------------------------
    def _bump(self) -> str:
        self.revision += 1
        return str(self.revision)

    def add_pod(
        self,
        namespace: str,
        name: str,
        *,
        release: str,
        app: str | None,
        ip: str | None,
        port: int = 60053,
        ready: bool = True,
        containers: Sequence[str] = ("main",),
        port_name: str = "admin",
    ) -> dict[str, Any]:
        labels = {"app.kubernetes.io/instance": release, "app.kubernetes.io/name": "scalardb-cluster"}
        if app is not None:
            labels["app.kubernetes.io/app"] = app
        status: dict[str, Any] = {
            "phase": "Running" if ip else "Pending",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"name": c, "restartCount": 0, "ready": ready} for c in containers],
        }
        if ip is not None:
            status["podIP"] = ip
            status["podIPs"] = [{"ip": ip}]
        with self._lock:
            pod = {
                "metadata": {
                    "name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
                    "resourceVersion": self._bump(), "labels": labels, "annotations": {},
                },
                "spec": {
                    "containers": [
                        {"name": c, "ports": [{"name": port_name, "containerPort": port}]} for c in containers
                    ]
                },
                "status": status,
            }  # fmt: skip
            self.objects["pods"][(namespace, name)] = pod
        return pod

    def add_service(
        self, namespace: str, name: str, *, release: str, app: str, ports: Sequence[tuple[str, int, Any]]
    ) -> None:
        """A Service with ``ports`` (name, port, targetPort: a number, a port name, or None)."""
        spec_ports = []
        for port_name, number, target in ports:
            entry: dict[str, Any] = {"name": port_name, "port": number, "protocol": "TCP"}
            if target is not None:
                entry["targetPort"] = target
            spec_ports.append(entry)
        labels = {"app.kubernetes.io/instance": release, "app.kubernetes.io/app": app}
        with self._lock:
            self.objects["services"][(namespace, name)] = {
                "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()),
                             "resourceVersion": self._bump(), "labels": labels},
                "spec": {"clusterIP": "None", "ports": spec_ports},
            }  # fmt: skip

    def _pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self.objects["pods"][(namespace, name)]

    def restart(self, namespace: str, name: str, container: str | None = None) -> None:
        """A container of the pod restarted (the kubelet bumps its restartCount)."""
        with self._lock:
            pod = self._pod(namespace, name)
            for entry in pod["status"]["containerStatuses"]:
                if container in (None, entry["name"]):
                    entry["restartCount"] += 1
                    break
            pod["metadata"]["resourceVersion"] = self._bump()

    def replace(self, namespace: str, name: str) -> None:
        """The pod was deleted and re-created under the same name (a StatefulSet does that)."""
        with self._lock:
            pod = self._pod(namespace, name)
            pod["metadata"]["uid"] = str(uuid.uuid4())
            pod["metadata"]["resourceVersion"] = self._bump()

    def delete(self, namespace: str, name: str) -> None:
        with self._lock:
            del self.objects["pods"][(namespace, name)]
            self._bump()

    def annotate(self, namespace: str, name: str, key: str, value: str) -> None:
        """A harmless metadata write: only resourceVersion moves."""
        with self._lock:
            pod = self._pod(namespace, name)
            pod["metadata"]["annotations"][key] = value
            pod["metadata"]["resourceVersion"] = self._bump()

    def set_ready(self, namespace: str, name: str, ready: bool) -> None:
        """A status write (the kubelet's probes): only resourceVersion and conditions move."""
        with self._lock:
            pod = self._pod(namespace, name)
            pod["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
            pod["metadata"]["resourceVersion"] = self._bump()

    def pod_names(self, namespace: str) -> Iterator[str]:
        return iter(sorted(name for ns, name in self.objects["pods"] if ns == namespace))
