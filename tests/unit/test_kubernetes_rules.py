"""Kubernetes discovery's rules on their own: the cluster file's ``kubernetes`` setting, API
answers as untrusted input, and what counts as churn (the API itself: tests/integration)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from txbackup.admin.kubernetes import (
    Api,
    Found,
    KubernetesError,
    Pod,
    Release,
    Service,
    ServicePort,
    _Bad,
    _shown_server,
    changes,
    describe_failure,
    parse_pod,
    parse_service,
    select,
)
from txbackup.config import load_cluster, parse_applications
from txbackup.errors import UsageError


def pod_json(name: str = "node-0", **status: Any) -> dict[str, Any]:
    base = {
        "podIP": "10.1.2.3",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "main", "restartCount": 2}],
    }
    return {
        "metadata": {"name": name, "uid": "0b6e-11", "labels": {"app.kubernetes.io/app": "scalardb-cluster"}},
        "status": base | status,
    }


def test_cluster_file_kubernetes_table(tmp_path: Path) -> None:
    file = tmp_path / "cluster.toml"
    file.write_text(textwrap.dedent("""
        [applications]
        kubernetes = { release = "scalardb", namespace = "prod", kubeconfig = "kc", context = "east" }
        [[targets]]
        name = "app"
        kind = "sqlite"
        path = "app.db"
    """))
    apps = load_cluster(file).applications
    assert apps.kubernetes == [Release("scalardb", "prod", str(tmp_path / "kc"), "east")]
    assert apps.endpoints == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"relase": "x"}, 'unknown setting "relase" (did you mean "release"?'),
        ({"namespace": "prod"}, "release is required"),
        ({"release": "x", "namespace": 3}, "namespace must be a non-empty string"),
        ({"release": "Bad_Name"}, "'Bad_Name': not a Helm release name"),
        ({"release": "x", "namespace": "no.dots"}, "not a Kubernetes namespace"),
        ("scalardb", "kubernetes must be a table"),
        ([{"release": "a"}, {"release": "a"}], "names a release twice"),
    ],
)
def test_cluster_file_kubernetes_refused(value: object, expected: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_applications({"kubernetes": value}, "cluster file c.toml")
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_two_releases_ledger_and_auditor() -> None:
    releases = [{"release": "ledger"}, {"release": "auditor", "namespace": "a"}]
    apps = parse_applications({"kubernetes": releases})
    assert [(r.release, r.namespace) for r in apps.kubernetes] == [("ledger", None), ("auditor", "a")]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"podIP": "not-an-ip"}, "malformed IP"),
        ({"podIP": "0.0.0.0"}, "unusable IP"),
        ({"containerStatuses": [{"name": "main", "restartCount": -1}]}, "restartCount"),
        ({"containerStatuses": [{"name": "main", "restartCount": True}]}, "restartCount"),
        ({"containerStatuses": [{"name": "Main\n", "restartCount": 0}]}, "malformed container name"),
        ({"conditions": "Ready"}, "conditions is not a list"),
    ],
)
def test_api_answers_are_checked(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(_Bad, match=problem):
        parse_pod(pod_json(**change))
    for bad_name in ("UPPER", "a" * 254, "../x", 7):
        item = pod_json()
        item["metadata"]["name"] = bad_name
        with pytest.raises(_Bad, match="malformed name"):
            parse_pod(item)
    with pytest.raises(_Bad, match="not a whole number in 1-65535"):
        parse_service({"metadata": {"name": "x-headless"}, "spec": {"ports": [{"name": "a", "port": 70000}]}})


def pod(name: str, uid: str = "u1", restarts: int = 0, ip: str = "10.0.0.1", **kw: Any) -> Pod:
    fields: dict[str, Any] = {"app": "scalardb-cluster", "ready": True, "deleting": False}
    return Pod(name=name, uid=uid, ip=ip, restarts=(("main", restarts),), **(fields | kw))


HEADLESS = [Service("r-headless", (ServicePort("scalardb-cluster", 60053, 60053),))]


def test_select_rules() -> None:
    release = Release("r", "ns")
    found = select(release, [pod("a"), pod("b", ip="10.0.0.2"), pod("envoy-0", app="envoy")], HEADLESS)
    assert [p.name for p in found.pods] == ["a", "b"] and found.skipped == ("envoy-0",)
    assert [str(e) for e in found.endpoints] == ["10.0.0.1:60053", "10.0.0.2:60053"]
    with pytest.raises(KubernetesError, match="pod a is being deleted"):
        select(release, [pod("a", deleting=True)], HEADLESS)
    with pytest.raises(KubernetesError, match=r"pod x has no app\.kubernetes\.io/app label"):
        select(release, [pod("a"), pod("x", app=None)], HEADLESS)
    with pytest.raises(KubernetesError, match="no pod runs ScalarDB Cluster or ScalarDL"):
        select(release, [pod("envoy-0", app="envoy")], HEADLESS)
    with pytest.raises(KubernetesError, match="has no port named scalardb-cluster"):
        select(release, [pod("a")], [Service("r-headless", (ServicePort("other", 1, 1),))])
    with pytest.raises(KubernetesError, match="found r-headless, s-headless"):
        select(release, [pod("a")], [*HEADLESS, Service("s-headless", ())])
    with pytest.raises(KubernetesError, match="pods a and b have the same address"):
        select(release, [pod("a"), pod("b")], HEADLESS)


def test_changes_name_the_pod_and_what_changed() -> None:
    before = Found(Release("r", "ns"), select(Release("r"), [pod("a")], HEADLESS).product, "r-headless",
                   (pod("a"), pod("b", ip="10.0.0.2"), pod("c", ip="10.0.0.3")), {})  # fmt: skip
    same = [pod("a"), pod("b", ip="10.0.0.2"), pod("c", ip="10.0.0.3"), pod("envoy", app="envoy", uid="z")]
    assert changes(before, same) == []
    # readiness flapping is a status write, not churn
    assert changes(before, [pod("a", ready=False), pod("b", ip="10.0.0.2"), pod("c", ip="10.0.0.3")]) == []
    after = [pod("a", restarts=1), pod("b", uid="u2", ip="10.0.0.2"), pod("d", ip="10.0.0.4")]
    assert changes(before, after) == [
        "pod a: container main restarted (0 -> 1 restarts)",
        "pod b: replaced (uid u1 -> u2)",
        "pod c: vanished",
        "pod d: added during the pause (not paused)",
    ]
    moved = [pod("a", ip="10.0.0.9", deleting=True), pod("b", ip="10.0.0.2"), pod("c", ip="10.0.0.3")]
    assert changes(before, moved) == ["pod a: address changed (10.0.0.1 -> 10.0.0.9), being deleted"]


def test_missing_extra_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # as if not installed
    with pytest.raises(UsageError) as err:
        Api.connect(Release("scalardb", "prod"))
    assert str(err.value) == (
        "Kubernetes discovery: its library is not installed (kubernetes): pip install 'txbackup[kubernetes]'"
    )


def test_missing_kubeconfig_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(UsageError, match=r"kubeconfig .*/nope: no such file"):
        Api.connect(Release("scalardb", kubeconfig=str(tmp_path / "nope")))
    broken = tmp_path / "kc"
    broken.write_text("apiVersion: v1\nkind: Config\ncurrent-context: gone\n")
    with pytest.raises(UsageError) as err:
        Api.connect(Release("scalardb", kubeconfig=str(broken)))
    assert str(err.value).startswith(f"kubeconfig {broken}: ") and "\n" not in str(err.value)


def test_server_url_shown_without_userinfo() -> None:
    assert _shown_server("https://admin:s3cret@10.0.0.1:6443/x") == "https://10.0.0.1:6443"
    assert _shown_server("") == "(no server)"


def test_failure_reasons_hold_no_secret() -> None:
    class Forbidden(Exception):
        status = 403
        body = b'{"kind":"Status","message":"pods is forbidden: User \\"x\\" cannot list\\n\\u0007"}'

    text = describe_failure(Forbidden(), Release("r", "ns"))
    assert text.startswith('403 Forbidden (pods is forbidden: User "x" cannot list)')
    assert "namespace ns" in text
    assert describe_failure(ConnectionRefusedError("[Errno 111] Connection refused"), Release("r")) == (
        "unreachable (connection refused)"
    )
