"""The pods of a ScalarDB Cluster or ScalarDL Helm release, found and watched through the Kubernetes API.

Discovery follows scalar-admin-for-kubernetes (our anchor) where it is right:
the pods are those labelled ``app.kubernetes.io/instance=<release>`` in the
namespace, of which only those whose ``app.kubernetes.io/app`` names a Scalar
product are paused (``scalardb-cluster``, ``ledger``, ``auditor``). Envoy pods
carry ``app.kubernetes.io/name=scalardb-cluster`` too, so only the ``app``
label tells them apart. A release running two products fails. The admin port
is the target port of the product's port (``scalardb-cluster``,
``scalardl-admin``, ``scalardl-auditor-admin``) in the release's one
``*-headless`` Service, and each pod is reached at its own IP.

Where the anchor is wrong, we are stricter:

- a pod that has no IP, is not Ready or is being deleted makes discovery FAIL,
  naming it, before anything is paused (the anchor drops pods without an IP,
  and so would reading Endpoints: a pod missing there is a pod left serving
  while the others are paused);
- churn is judged on what matters, not on ``resourceVersion`` (which moves on
  every status write or annotation, a false alarm): before the pause every
  pod's uid, name, IP and per-container restart counts are recorded; before
  the window closes (with CheckPaused, see :mod:`txbackup.admin.fleet`) a
  fresh listing is compared, and a pod restarted, replaced (same name, new
  uid), added, vanished, readdressed or being deleted breaks the window.

Everything the API answers is input: names, uids, IPs and ports are checked,
a listing is read up to :data:`MAX_LIST_BYTES` and :data:`MAX_ITEMS` items.
Credentials (a bearer token, a client key) stay inside the client library's
configuration: they are never put in a message or a log line. Failures are
one line naming the API server and what to do (401, 403 with the RBAC hint,
unreachable, an untrusted certificate).

The client is the official ``kubernetes`` package (``pip install
'txbackup[kubernetes]'``): it reads kubeconfig files (tokens, client
certificates, exec plugins, the cluster's CA) and the in-cluster service
account. Its typed models are not used: a listing is read raw, bounded and
validated here, so one code path serves every version of the package.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from txbackup.admin.client import Endpoint
from txbackup.errors import PauseError, UsageError
from txbackup.extras import import_extra
from txbackup.safepaths import shown
from txbackup.strictjson import loads

LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_APP = "app.kubernetes.io/app"
HEADLESS_SUFFIX = "-headless"

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
"""Where Kubernetes mounts a pod's service account (token, ca.crt, namespace)."""

MAX_LIST_BYTES = 64 << 20
"""A listing larger than this is refused (a pod object is a few KiB; 1,000 pods fit in ~20 MiB)."""
MAX_ITEMS = 5000
"""A release with more pods (or services) than this is refused."""
MAX_DEPTH = 64
"""JSON nesting accepted in a listing (managedFields nest one level per field path)."""

# what Kubernetes accepts, so anything else in an answer is refused before it is shown or used
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_SUBDOMAIN = re.compile(rf"(?=.{{1,253}}$){_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_LABEL = re.compile(_DNS_LABEL)
_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_UID = re.compile(r"[A-Za-z0-9-]{1,128}")
_PORT_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,13}[a-z0-9])?")  # a container port's (IANA_SVC_NAME)
_CONTEXT = re.compile(r"[^\x00-\x1f\x7f]{1,253}")


@dataclass(frozen=True)
class Product:
    """A Scalar product: its ``app.kubernetes.io/app`` label and its admin port's name."""

    app: str
    port_name: str
    title: str


PRODUCTS = {
    p.app: p
    for p in (
        Product("scalardb-cluster", "scalardb-cluster", "ScalarDB Cluster"),
        Product("ledger", "scalardl-admin", "ScalarDL Ledger"),
        Product("auditor", "scalardl-auditor-admin", "ScalarDL Auditor"),
    )
}


class KubernetesError(PauseError):
    """The Kubernetes API refused or failed a call, or answered something unusable."""


# -- what to look for ------------------------------------------------------------------------------
def check_release(value: object, what: str = "release") -> str:
    """A Helm release name as it appears in the instance label (a DNS label, at most 53)."""
    if not isinstance(value, str) or len(value) > 53 or not _LABEL.fullmatch(value):
        raise UsageError(
            f"{what} {shown(value, 80)}: not a Helm release name (lowercase letters, digits and '-', "
            "at most 53)"
        )
    return value


def check_namespace(value: object, what: str = "namespace") -> str:
    if not isinstance(value, str) or not _LABEL.fullmatch(value):
        raise UsageError(
            f"{what} {shown(value, 80)}: not a Kubernetes namespace (lowercase letters, digits and '-', "
            "at most 63)"
        )
    return value


def check_context(value: object, what: str = "context") -> str:
    if not isinstance(value, str) or not _CONTEXT.fullmatch(value):
        raise UsageError(f"{what} {shown(value, 80)}: not a kubeconfig context name")
    return value


@dataclass(frozen=True)
class Release:
    """Where a release runs: ``[applications] kubernetes = { release, namespace, kubeconfig, context }``.

    Without ``kubeconfig``: the in-cluster service account when txbackup runs in a pod
    (``KUBERNETES_SERVICE_HOST`` set), else ``$KUBECONFIG`` or ``~/.kube/config``. Without
    ``namespace``: the kubeconfig context's, else the service account's, else ``default``.
    """

    release: str
    namespace: str | None = None
    kubeconfig: str | None = None
    context: str | None = None

    def __post_init__(self) -> None:
        check_release(self.release)
        if self.namespace is not None:
            check_namespace(self.namespace)
        if self.context is not None:
            check_context(self.context)

    def __str__(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"release {self.release}{where}"


# -- what the API answers, validated -----------------------------------------------------------------
@dataclass(frozen=True)
class Pod:
    """The facts of one pod that decide whether it can be paused and whether it changed."""

    name: str
    uid: str
    app: str | None
    ip: str | None
    ready: bool
    deleting: bool
    restarts: tuple[tuple[str, int], ...]
    """(container name, restart count), sorted by name."""
    ports: tuple[tuple[str, int], ...] = ()
    """Named container ports, for a Service whose target port is a name."""


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target: int | str


@dataclass(frozen=True)
class Service:
    name: str
    ports: tuple[ServicePort, ...]


class _Bad(ValueError):
    """A malformed object in a listing (turned into a KubernetesError naming the listing)."""


def _obj(value: object, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _Bad(f"{what} is not an object")
    return value


def _list(value: object, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _Bad(f"{what} is not a list")
    return value


def _int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Bad(f"{what} {shown(value, 40)} is not a whole number in {low}-{high}")
    return value


def _name(meta: Mapping[str, Any], what: str) -> str:
    name = meta.get("name")
    if not isinstance(name, str) or not _SUBDOMAIN.fullmatch(name):
        raise _Bad(f"{what} has a malformed name {shown(name, 80)}")
    return name


def _labels(meta: Mapping[str, Any], name: str) -> dict[str, str]:
    labels = _obj(meta.get("labels"), f"{name} labels")
    for key, value in labels.items():
        if not isinstance(value, str) or len(key) > 317 or not _LABEL_VALUE.fullmatch(value):
            raise _Bad(f"{name} has a malformed label {shown(key, 60)}")
    return dict(labels)


def _ip(value: object, name: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        address = ipaddress.ip_address(value)  # type: ignore[arg-type]
    except ValueError:
        raise _Bad(f"pod {name} has a malformed IP {shown(value, 60)}") from None
    if address.is_unspecified or address.is_multicast:
        raise _Bad(f"pod {name} has an unusable IP {address}")
    return str(address)


def parse_pod(item: object) -> Pod:
    """One pod of a listing, checked (``_Bad`` naming what is wrong)."""
    pod = _obj(item, "a pod")
    meta = _obj(pod.get("metadata"), "a pod's metadata")
    name = _name(meta, "a pod")
    uid = meta.get("uid")
    if not isinstance(uid, str) or not _UID.fullmatch(uid):
        raise _Bad(f"pod {name} has a malformed uid {shown(uid, 60)}")
    labels = _labels(meta, f"pod {name}")
    status = _obj(pod.get("status"), f"pod {name} status")
    ready = False
    for condition in _list(status.get("conditions"), f"pod {name} conditions"):
        condition = _obj(condition, f"pod {name} condition")
        if condition.get("type") == "Ready":
            ready = condition.get("status") == "True"
    restarts: dict[str, int] = {}
    for entry in _list(status.get("containerStatuses"), f"pod {name} containerStatuses"):
        entry = _obj(entry, f"pod {name} container status")
        container = entry.get("name")
        if not isinstance(container, str) or not _LABEL.fullmatch(container) or container in restarts:
            raise _Bad(f"pod {name} has a malformed container name {shown(container, 60)}")
        restarts[container] = _int(
            entry.get("restartCount", 0), f"pod {name} container {container} restartCount", 0, 1 << 31
        )
    ports: dict[str, int] = {}
    spec = _obj(pod.get("spec"), f"pod {name} spec")
    for container in _list(spec.get("containers"), f"pod {name} containers"):
        for port in _list(_obj(container, f"pod {name} container").get("ports"), f"pod {name} ports"):
            port = _obj(port, f"pod {name} port")
            port_name = port.get("name")
            if isinstance(port_name, str) and _PORT_NAME.fullmatch(port_name):
                ports[port_name] = _int(port.get("containerPort"), f"pod {name} port {port_name}", 1, 65535)
    app = labels.get(LABEL_APP)
    return Pod(
        name=name,
        uid=uid,
        app=app,
        ip=_ip(status.get("podIP"), name),
        ready=ready,
        deleting=meta.get("deletionTimestamp") is not None,
        restarts=tuple(sorted(restarts.items())),
        ports=tuple(sorted(ports.items())),
    )


def parse_service(item: object) -> Service:
    service = _obj(item, "a service")
    meta = _obj(service.get("metadata"), "a service's metadata")
    name = _name(meta, "a service")
    ports = []
    spec = _obj(service.get("spec"), f"service {name} spec")
    for port in _list(spec.get("ports"), f"service {name} ports"):
        port = _obj(port, f"service {name} port")
        port_name = port.get("name", "")  # a Service's port names are DNS labels (up to 63)
        if not isinstance(port_name, str) or (port_name and not _LABEL.fullmatch(port_name)):
            raise _Bad(f"service {name} has a malformed port name {shown(port_name, 40)}")
        number = _int(port.get("port"), f"service {name} port {port_name}", 1, 65535)
        target = port.get("targetPort", number)  # Kubernetes' default: the port itself
        if isinstance(target, str):
            if not _PORT_NAME.fullmatch(target):
                raise _Bad(f"service {name} port {port_name} has a malformed targetPort {shown(target, 40)}")
        else:
            target = _int(target, f"service {name} port {port_name} targetPort", 1, 65535)
        ports.append(ServicePort(port_name, number, target))
    return Service(name, tuple(ports))


# -- the release as found ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Found:
    """A release's product pods as found before the pause: the endpoints to pause and the
    record churn is judged against."""

    release: Release
    """With the namespace resolved."""
    product: Product
    service: str
    pods: tuple[Pod, ...]
    endpoints: dict[Endpoint, str]
    """Each pod's admin endpoint -> the pod's name."""
    skipped: tuple[str, ...] = ()
    """Pods of the release that are not the product's (Envoy): not paused."""
    unreachable: tuple[str, ...] = ()
    """Product pods left out (no IP), when found with ``strict=False``."""


def product_of(release: Release, pods: Sequence[Pod]) -> tuple[Product, tuple[Pod, ...], tuple[str, ...]]:
    """(the product, its pods, the other pods' names) of a release: every pod must say which app
    it is, and only one product may run (``KubernetesError`` naming the release otherwise)."""
    where = str(release)
    if not pods:
        raise KubernetesError(f"{where}: no pod has the label {LABEL_INSTANCE}={release.release}")
    unlabelled = sorted(p.name for p in pods if p.app is None)
    if unlabelled:
        raise KubernetesError(
            f"{where}: pod {', '.join(unlabelled)} has no {LABEL_APP} label "
            "(deploy with Scalar's Helm charts)"
        )
    products = sorted({str(p.app) for p in pods if p.app in PRODUCTS})
    skipped = tuple(sorted(p.name for p in pods if p.app not in PRODUCTS))
    if not products:
        apps = sorted({str(p.app) for p in pods})
        raise KubernetesError(
            f"{where}: no pod runs ScalarDB Cluster or ScalarDL ({LABEL_APP} is {', '.join(apps)})"
        )
    if len(products) > 1:
        raise KubernetesError(
            f"{where}: the pods run different products ({', '.join(products)}); one release is one product"
        )
    product = PRODUCTS[products[0]]
    chosen = tuple(sorted((p for p in pods if p.app == product.app), key=lambda p: p.name))
    return product, chosen, skipped


def select(
    release: Release, pods: Sequence[Pod], services: Sequence[Service], *, strict: bool = True
) -> Found:
    """The product's pods and their admin endpoints, by the anchor's rules and ours (see the
    module docstring); ``KubernetesError`` naming the release and the culprit otherwise.

    ``strict=False`` (status, unpause: a paused pod may fail its readiness probe, and
    recovery must still reach it) keeps every pod that has an IP and lists the others in
    ``Found.unreachable`` instead of failing."""
    where = str(release)
    product, chosen, skipped = product_of(release, pods)
    unusable = [
        f"{p.name} " + ("is being deleted" if p.deleting else "has no IP" if p.ip is None else "is not Ready")
        for p in chosen
        if p.deleting or p.ip is None or not p.ready
    ]
    unreachable = tuple(f"pod {p.name} has no IP" for p in chosen if p.ip is None)
    if unusable and strict:
        raise KubernetesError(
            f"{where}: not every {product.title} pod can be paused: pod {'; pod '.join(unusable)}"
        )
    chosen = tuple(p for p in chosen if p.ip is not None)
    headless = [s for s in services if s.name.endswith(HEADLESS_SUFFIX)]
    if len(headless) != 1:
        names = ", ".join(s.name for s in headless) or "none"
        raise KubernetesError(
            f"{where}: expected one Service named *{HEADLESS_SUFFIX} labelled {LABEL_APP}={product.app}, "
            f"found {names}"
        )
    service = headless[0]
    port = next((p for p in service.ports if p.name == product.port_name), None)
    if port is None:
        raise KubernetesError(f"{where}: Service {service.name} has no port named {product.port_name}")
    endpoints: dict[Endpoint, str] = {}
    for pod in chosen:
        number = port.target if isinstance(port.target, int) else dict(pod.ports).get(port.target)
        if number is None:
            raise KubernetesError(
                f"{where}: pod {pod.name} has no container port named {port.target} "
                f"(the target of Service {service.name} port {port.name})"
            )
        assert pod.ip is not None
        endpoint = Endpoint(pod.ip, number)
        if endpoint in endpoints:
            raise KubernetesError(f"{where}: pods {endpoints[endpoint]} and {pod.name} have the same address")
        endpoints[endpoint] = pod.name
    return Found(release, product, service.name, chosen, endpoints, skipped, unreachable)


def changes(before: Found, after: Sequence[Pod]) -> list[str]:
    """What changed in the product's pods since ``before`` (one item per pod, naming it).

    Only what breaks a pause counts: a pod that vanished or appeared, a new uid under
    an old name, a container that restarted, a new IP, a deletion begun. Status writes,
    annotations, labels and resourceVersion do not: they move without the pod serving
    a single request unpaused.
    """
    now = {p.name: p for p in after if p.app == before.product.app}
    was = {p.name: p for p in before.pods}
    found: list[str] = []
    for name in sorted(was.keys() | now.keys()):
        old, new = was.get(name), now.get(name)
        if new is None:
            found.append(f"pod {name}: vanished")
            continue
        if old is None:
            found.append(f"pod {name}: added during the pause (not paused)")
            continue
        if old.uid != new.uid:
            found.append(f"pod {name}: replaced (uid {old.uid} -> {new.uid})")
            continue
        what = []
        old_restarts, new_restarts = dict(old.restarts), dict(new.restarts)
        for container in sorted(old_restarts.keys() | new_restarts.keys()):
            a, b = old_restarts.get(container), new_restarts.get(container)
            if a is None or b is None:
                what.append(f"container {container} {'appeared' if a is None else 'disappeared'}")
            elif b != a:
                what.append(f"container {container} restarted ({a} -> {b} restarts)")
        if new.ip != old.ip:
            what.append(f"address changed ({old.ip} -> {new.ip})")
        if new.deleting and not old.deleting:
            what.append("being deleted")
        if what:
            found.append(f"pod {name}: {', '.join(what)}")
    return found


# -- the API -----------------------------------------------------------------------------------------
def _library() -> Any:
    return import_extra("kubernetes", "kubernetes", "Kubernetes discovery")


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read(256).strip() or None
    except (OSError, UnicodeDecodeError):
        return None


@dataclass
class Api:
    """A connection to one cluster's API, configured by kubeconfig or the service account."""

    release: Release
    """With the namespace resolved."""
    server: str
    client: Any = field(repr=False)
    timeout: float = 10.0

    @classmethod
    def connect(
        cls, release: Release, timeout: float = 10.0, *, service_account_dir: str | None = None
    ) -> Api:
        """Configure a client for ``release`` (see :class:`Release` for the order of sources)."""
        k8s = _library()
        config = k8s.client.Configuration()
        account = service_account_dir or SERVICE_ACCOUNT_DIR
        namespace = release.namespace
        in_cluster = (
            release.kubeconfig is None
            and release.context is None
            and os.environ.get("KUBERNETES_SERVICE_HOST")
            and os.path.exists(os.path.join(account, "token"))
        )
        try:
            if in_cluster:
                where = f"service account {account}"
                k8s.config.incluster_config.InClusterConfigLoader(
                    token_filename=os.path.join(account, "token"),
                    cert_filename=os.path.join(account, "ca.crt"),
                ).load_and_set(config)
                namespace = namespace or _read_text(os.path.join(account, "namespace"))
            else:
                path = release.kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
                path = path or os.path.expanduser("~/.kube/config")
                where = f"kubeconfig {path}"
                if not os.path.isfile(path):
                    raise UsageError(
                        f"{where}: no such file (give kubeconfig, or run in a pod with a service account)"
                    )
                # persist_config=False: a refreshed token is never written back into the user's file
                k8s.config.load_kube_config(
                    config_file=path, context=release.context, client_configuration=config,
                    persist_config=False,
                )  # fmt: skip
                if namespace is None:
                    contexts, active = k8s.config.list_kube_config_contexts(path)
                    chosen = next((c for c in contexts if c.get("name") == release.context), active)
                    context = chosen.get("context") if isinstance(chosen, Mapping) else None
                    given = context.get("namespace") if isinstance(context, Mapping) else None
                    namespace = given if isinstance(given, str) else None
        except UsageError:
            raise
        except Exception as exc:  # the library's ConfigException, or a YAML/IO error under it
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(f"{where}: {text[:200]}") from None
        namespace = check_namespace(namespace or "default", what=f"{where}: namespace")
        # a GET is safe to repeat: two quick retries ride out a dropped connection, not an outage
        import urllib3  # the client library's transport

        config.retries = urllib3.Retry(total=2, redirect=0, status=0, backoff_factor=0.1)
        client = k8s.client.ApiClient(config)
        return cls(replace(release, namespace=namespace), _shown_server(config.host), client, timeout)

    def close(self) -> None:
        self.client.close()

    def _fail(self, exc: BaseException, what: str) -> KubernetesError:
        return KubernetesError(f"Kubernetes API {self.server}: {what}: {describe_failure(exc, self.release)}")

    def _list(self, kind: str, selector: str) -> list[Any]:
        """The items of a namespaced list (``pods``, ``services``), read bounded."""
        k8s = _library()
        api = k8s.client.CoreV1Api(self.client)
        call = api.list_namespaced_pod if kind == "pods" else api.list_namespaced_service
        what = f"list {kind} in namespace {self.release.namespace}"
        try:
            response = call(
                self.release.namespace, label_selector=selector, _preload_content=False,
                _request_timeout=(self.timeout, self.timeout),
            )  # fmt: skip
            try:
                status = getattr(response, "status", 200)
                data = response.read(MAX_LIST_BYTES + 1)
            finally:
                response.release_conn()
        except Exception as exc:
            raise self._fail(exc, what) from None
        if not 200 <= status <= 299:
            raise KubernetesError(f"Kubernetes API {self.server}: {what}: HTTP {status}")
        if len(data) > MAX_LIST_BYTES:
            raise KubernetesError(
                f"Kubernetes API {self.server}: {what}: the answer is larger than {MAX_LIST_BYTES:,} bytes"
            )
        try:
            body = loads(data, max_depth=MAX_DEPTH)
            items = _list(_obj(body, "the answer").get("items"), "items")
        except ValueError as exc:
            raise KubernetesError(f"Kubernetes API {self.server}: {what}: not a list ({exc})") from None
        if len(items) > MAX_ITEMS:
            raise KubernetesError(f"Kubernetes API {self.server}: {what}: more than {MAX_ITEMS} items")
        return items

    def pods(self) -> list[Pod]:
        """Every pod of the release, checked."""
        items = self._list("pods", f"{LABEL_INSTANCE}={self.release.release}")
        try:
            pods = [parse_pod(item) for item in items]
        except _Bad as exc:
            raise KubernetesError(f"Kubernetes API {self.server}: {self.release}: {exc}") from None
        # the selector is the server's to apply; one that ignores it must not hand us other pods
        names = [p.name for p in pods]
        if len(set(names)) != len(names):
            raise KubernetesError(f"Kubernetes API {self.server}: {self.release}: a pod is listed twice")
        return pods

    def services(self, product: Product) -> list[Service]:
        items = self._list("services", f"{LABEL_INSTANCE}={self.release.release},{LABEL_APP}={product.app}")
        try:
            return [parse_service(item) for item in items]
        except _Bad as exc:
            raise KubernetesError(f"Kubernetes API {self.server}: {self.release}: {exc}") from None

    def find(self, strict: bool = True) -> Found:
        """The release's product pods, every one Ready with an IP, and their admin endpoints
        (``strict``: see :func:`select`)."""
        pods = self.pods()
        product, _, _ = product_of(self.release, pods)  # which Service to read
        return select(self.release, pods, self.services(product), strict=strict)


def _shown_server(host: object) -> str:
    """The API server's URL as messages show it: scheme, host and port only (a URL written
    with ``user:password@`` in a kubeconfig must not reach a log)."""
    parts = urllib.parse.urlsplit(str(host))
    netloc = parts.netloc.rpartition("@")[2]
    return shown(f"{parts.scheme}://{netloc}", 200).strip("'\"") if netloc else "(no server)"


def describe_failure(exc: BaseException, release: Release) -> str:
    """Why an API call failed, in a few words and without credentials."""
    status = getattr(exc, "status", None)
    if isinstance(status, int) and status:
        message = _status_message(getattr(exc, "body", None))
        if status == 401:
            return "401 Unauthorized: the API refused our credentials (an expired token, a wrong user?)"
        if status == 403:
            detail = f" ({message})" if message else ""
            return (
                f"403 Forbidden{detail}: txbackup needs get and list on pods and services in namespace "
                f"{release.namespace} (a Role bound to its service account)"
            )
        return f"HTTP {status}" + (f" ({message})" if message else "")
    text = f"{type(exc).__name__}: {exc}"
    low = text.lower()
    if "certificate verify failed" in low or "certificate_verify_failed" in low:
        return "TLS: the API server's certificate is not trusted by the cluster's CA we were given"
    if "hostname" in low and ("mismatch" in low or "match" in low):
        return "TLS: the API server's certificate does not name the address we connect to"
    if "refused" in low:
        return "unreachable (connection refused)"
    if "timed out" in low or "timeout" in low:
        return "no answer in time"
    if "ssl" in low or "tls" in low:
        return "TLS handshake failed (does it need a client certificate?)"
    return "unreachable"


def _status_message(body: object) -> str:
    """The ``message`` of a Kubernetes Status answer, short and printable (or "")."""
    if isinstance(body, bytes | bytearray):
        body = bytes(body[:65536]).decode("utf-8", "replace")
    if not isinstance(body, str):
        return ""
    try:
        message = _obj(loads(body[:65536]), "status").get("message")
    except ValueError:
        return ""
    if not isinstance(message, str):
        return ""
    message = re.sub(r"[\x00-\x1f\x7f]+", " ", message).strip()
    return message if len(message) <= 200 else message[:197] + "..."


# -- the watch over a pause --------------------------------------------------------------------------
@dataclass
class Watch:
    """One release found before the pause, checked again before the window closes."""

    api: Api
    found: Found

    async def __call__(self) -> list[str]:
        """What changed since discovery (``[]``: nothing), for ``Fleet.window_checks``."""
        try:
            after = await asyncio.to_thread(self.api.pods)
        except KubernetesError as exc:
            return [f"{self.found.release}: cannot list the pods again, churn unknown ({exc})"]
        return [f"{self.found.release}: {c}" for c in changes(self.found, after)]


def discover(
    releases: Sequence[Release],
    timeout: float = 10.0,
    *,
    strict: bool = True,
    service_account_dir: str | None = None,
) -> list[Watch]:
    """Every release found (before anything is paused): one :class:`Watch` each (``strict``:
    see :func:`select`)."""
    watches = []
    try:
        for release in releases:
            api = Api.connect(release, timeout, service_account_dir=service_account_dir)
            try:
                watches.append(Watch(api, api.find(strict)))
            except BaseException:
                api.close()
                raise
    except BaseException:
        for watch in watches:
            watch.api.close()
        raise
    return watches
