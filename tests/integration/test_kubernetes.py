"""Kubernetes discovery and churn detection: the real ``kubernetes`` client against a FAKE API
server (tests/servers/fake_k8s.py), whose pods' IPs are real pausable sample servers on 127.x.y.z.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.certs import CertificateAuthority
from tests.servers.fake_k8s import FakeKubernetes
from tests.servers.processes import TXBACKUP
from txbackup.admin.client import Endpoint
from txbackup.admin.fleet import Fleet, PauseWindowBroken, paused
from txbackup.admin.kubernetes import KubernetesError, Release, discover
from txbackup.demo.sample_service import SampleServer, start_sample_server
from txbackup.errors import PauseError, TxbackupError, UsageError

NS = "prod"
RELEASE = "scalardb"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[FakeKubernetes]:
    with FakeKubernetes(tmp_path) as fake:
        yield fake


class Pods:
    """Sample servers standing for pods: one port, one loopback address each (as pod IPs are)."""

    def __init__(self, servers: list[SampleServer]) -> None:
        self.servers = servers
        self.pauses: dict[str, int] = {s.host: 0 for s in servers}
        for server in servers:  # count the Pause calls each one served (a spy on the real gate)
            real = server.gate.pause

            async def pause(*args: Any, _real: Any = real, _host: str = server.host, **kw: Any) -> None:
                self.pauses[_host] += 1
                await _real(*args, **kw)

            server.gate.pause = pause  # type: ignore[method-assign]

    @property
    def port(self) -> int:
        return self.servers[0].port

    def paused(self) -> list[bool]:
        return [s.gate.paused for s in self.servers]


async def start_pods(count: int) -> Pods:
    for _ in range(10):
        base = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}."
        servers: list[SampleServer] = []
        try:
            for i in range(count):
                port = servers[0].port if servers else 0
                servers.append(await start_sample_server(f"{base}{i + 1}", port))
            return Pods(servers)
        except TxbackupError:  # that port is taken on one of these addresses: another draw
            for server in servers:
                await server.stop()
    raise RuntimeError("no free port on a set of loopback addresses")


@pytest.fixture
async def pods() -> AsyncIterator[Pods]:
    started = await start_pods(3)
    yield started
    for server in started.servers:
        await server.stop()


def release_of(api: FakeKubernetes, pods: Pods, *, envoy: bool = True) -> None:
    """A ScalarDB Cluster release as the chart makes it: 3 cluster pods, 2 envoy pods, services."""
    for i, server in enumerate(pods.servers):
        api.add_pod(NS, f"scalardb-cluster-node-{i}", release=RELEASE, app="scalardb-cluster",
                    ip=server.host, port=server.port)  # fmt: skip
    if envoy:  # envoy pods carry app.kubernetes.io/name=scalardb-cluster too; addresses nobody serves
        for i in range(2):
            api.add_pod(NS, f"scalardb-envoy-{i}", release=RELEASE, app="envoy", ip=f"127.0.0.{200 + i}",
                        port=1, port_name="envoy")  # fmt: skip
    api.add_service(NS, "scalardb-cluster-headless", release=RELEASE, app="scalardb-cluster",
                    ports=[("scalardb-cluster", 60053, pods.port)])  # fmt: skip
    api.add_service(NS, "scalardb-cluster", release=RELEASE, app="scalardb-cluster",
                    ports=[("scalardb-cluster", 60053, 60053)])  # fmt: skip


def fleet_for(kubeconfig: Path, namespace: str | None = NS) -> Fleet:
    watches = discover([Release(RELEASE, namespace, str(kubeconfig))], timeout=5)
    names = dict(watches[0].found.endpoints)
    return Fleet(list(names), window_checks=watches, names=names)


async def test_happy_path_three_pods_envoy_skipped(api: FakeKubernetes, pods: Pods, tmp_path: Path) -> None:
    release_of(api, pods)
    fleet = fleet_for(api.kubeconfig(tmp_path / "kc", token=api.token()))
    found = fleet.window_checks[0].found  # type: ignore[attr-defined]
    assert found.product.app == "scalardb-cluster" and found.service == "scalardb-cluster-headless"
    assert found.skipped == ("scalardb-envoy-0", "scalardb-envoy-1")
    assert sorted(fleet.names.values()) == [f"scalardb-cluster-node-{i}" for i in range(3)]
    assert set(fleet.endpoints) == {Endpoint(s.host, s.port) for s in pods.servers}
    async with paused(fleet) as window:
        assert pods.paused() == [True, True, True]
        # a status write and an annotation move resourceVersion only: not a change
        api.annotate(NS, "scalardb-cluster-node-0", "kubectl.kubernetes.io/last-applied", "x")
        api.set_ready(NS, "scalardb-cluster-node-1", False)
        api.restart(NS, "scalardb-envoy-0")  # not the product's: not paused, not watched
    await fleet.close()
    assert window.duration_ms is not None and pods.paused() == [False, False, False]
    assert all(n == 1 for n in pods.pauses.values())
    # two listings of pods (before, and before the window closed) and one of services
    assert [p.split("?")[0].rsplit("/", 1)[1] for p, _ in api.requests] == ["pods", "services", "pods"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("restart", "pod scalardb-cluster-node-1: container main restarted (0 -> 1 restarts)"),
        ("replace", "pod scalardb-cluster-node-1: replaced (uid "),
        ("add", "pod scalardb-cluster-node-9: added during the pause (not paused)"),
        ("delete", "pod scalardb-cluster-node-1: vanished"),
    ],
)
async def test_churn_during_the_pause_breaks_the_window_after_unpausing(
    api: FakeKubernetes, pods: Pods, tmp_path: Path, change: str, expected: str
) -> None:
    release_of(api, pods)
    fleet = fleet_for(api.kubeconfig(tmp_path / "kc", token=api.token()))
    with pytest.raises(PauseWindowBroken) as info:
        async with paused(fleet):
            if change == "restart":
                api.restart(NS, "scalardb-cluster-node-1")
            elif change == "replace":
                api.replace(NS, "scalardb-cluster-node-1")
            elif change == "add":
                api.add_pod(NS, "scalardb-cluster-node-9", release=RELEASE, app="scalardb-cluster",
                            ip="127.0.0.250", port=pods.port)  # fmt: skip
            else:
                api.delete(NS, "scalardb-cluster-node-1")
    await fleet.close()
    message = str(info.value)
    assert expected in message and f"release {RELEASE} in namespace {NS}" in message
    assert "\n" not in message
    assert pods.paused() == [False, False, False]  # every paused pod was unpaused


async def test_a_pod_that_cannot_pause_is_named(api: FakeKubernetes, pods: Pods, tmp_path: Path) -> None:
    release_of(api, pods)
    fleet = fleet_for(api.kubeconfig(tmp_path / "kc", token=api.token()))
    dead = pods.servers[2]
    await dead.stop()  # Ready in the API, gone in fact
    with pytest.raises(PauseError) as info:
        await fleet.pause()
    await fleet.close()
    assert f"{dead.host}:{dead.port} (pod scalardb-cluster-node-2): connection refused" in str(info.value)
    assert pods.paused()[:2] == [False, False]


@pytest.mark.parametrize(
    ("ip", "ready", "expected"),
    [(None, False, "pod scalardb-cluster-node-3 has no IP"), ("127.0.0.251", False,
     "pod scalardb-cluster-node-3 is not Ready")],
)  # fmt: skip
async def test_pod_without_ip_or_not_ready_fails_before_anything_is_paused(
    api: FakeKubernetes, pods: Pods, tmp_path: Path, ip: str | None, ready: bool, expected: str
) -> None:
    release_of(api, pods)
    api.add_pod(NS, "scalardb-cluster-node-3", release=RELEASE, app="scalardb-cluster", ip=ip, ready=ready)
    kubeconfig = api.kubeconfig(tmp_path / "kc", token=api.token())
    with pytest.raises(KubernetesError) as info:
        discover([Release(RELEASE, NS, str(kubeconfig))], timeout=5)
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert sum(pods.pauses.values()) == 0


async def test_status_and_unpause_reach_pods_that_are_not_ready(
    api: FakeKubernetes, pods: Pods, tmp_path: Path
) -> None:
    """Recovery after an interrupted pause: a paused pod may fail its readiness probe."""
    release_of(api, pods)
    api.set_ready(NS, "scalardb-cluster-node-0", False)
    api.add_pod(NS, "scalardb-cluster-node-3", release=RELEASE, app="scalardb-cluster", ip=None)
    await pods.servers[0].gate.pause(wait_outstanding=False, max_wait_ms=None)
    kubeconfig = api.kubeconfig(tmp_path / "kc", token=api.token())
    flags = ["--k8s-release", RELEASE, "--k8s-namespace", NS, "--kubeconfig", str(kubeconfig)]
    code, out, err = await run_cli("status", *flags, "--json")
    assert code == 0, err
    assert [(r["pod"], r["state"]) for r in json.loads(out)] == [
        ("scalardb-cluster-node-0", "paused"), ("scalardb-cluster-node-1", "serving"),
        ("scalardb-cluster-node-2", "serving"),
    ]  # fmt: skip
    assert "pod scalardb-cluster-node-3 has no IP: left out" in err
    code, out, err = await run_cli("unpause", *flags)
    assert code == 0, err
    assert pods.paused() == [False, False, False]


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``txbackup ARGS`` in a process, while this loop keeps serving the pods."""
    process = await asyncio.create_subprocess_exec(
        *TXBACKUP, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env or dict(os.environ),
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_pause_and_status_list_pods(api: FakeKubernetes, pods: Pods, tmp_path: Path) -> None:
    release_of(api, pods)
    kubeconfig = api.kubeconfig(tmp_path / "kc", token=api.token(), namespace=NS)  # the context's namespace
    flags = ["--k8s-release", RELEASE, "--kubeconfig", str(kubeconfig)]
    code, out, err = await run_cli("pause", *flags, "--hold", "200ms", "--json")
    assert code == 0, err
    data = json.loads(out)
    addresses = {f"scalardb-cluster-node-{i}": f"{s.host}:{s.port}" for i, s in enumerate(pods.servers)}
    assert data["pods"] == addresses
    assert data["duration_ms"] >= 190 and all(n == 1 for n in pods.pauses.values())
    code, out, err = await run_cli("status", *flags, "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["pod"], r["endpoint"], r["state"]) for r in rows] == [
        (f"scalardb-cluster-node-{i}", f"{s.host}:{s.port}", "serving") for i, s in enumerate(pods.servers)
    ]
    code, out, err = await run_cli("status", *flags)
    assert code == 0 and out.splitlines()[0].split() == ["POD", "ADDRESS", "STATE", "DETAIL"]
    assert "scalardb-cluster-node-2" in out and "scalardb-envoy" not in out


async def test_cli_pause_fails_when_a_pod_is_replaced_in_the_hold(
    api: FakeKubernetes, pods: Pods, tmp_path: Path
) -> None:
    release_of(api, pods)
    kubeconfig = api.kubeconfig(tmp_path / "kc", token=api.token())
    run = asyncio.create_task(run_cli("pause", "--k8s-release", RELEASE, "--k8s-namespace", NS,
                                      "--kubeconfig", str(kubeconfig), "--hold", "3s"))  # fmt: skip
    for _ in range(300):  # until every pod is paused (the process starts, lists, pauses)
        if pods.paused() == [True, True, True]:
            break
        await asyncio.sleep(0.05)
    assert pods.paused() == [True, True, True]
    api.replace(NS, "scalardb-cluster-node-0")
    code, out, err = await run
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "pause window not held" in err and "pod scalardb-cluster-node-0: replaced (uid" in err
    assert pods.paused() == [False, False, False]


async def test_rbac_403_one_line_nothing_paused(api: FakeKubernetes, pods: Pods, tmp_path: Path) -> None:
    release_of(api, pods)
    token = api.token(allowed=False)
    kubeconfig = api.kubeconfig(tmp_path / "kc", token=token)
    code, out, err = await run_cli("-v", "pause", "--k8s-release", RELEASE, "--k8s-namespace", NS,
                                   "--kubeconfig", str(kubeconfig))  # fmt: skip (-v: nor in the log)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "403 Forbidden" in err and "get and list on pods and services" in err
    assert api.url in err and token not in err
    assert sum(pods.pauses.values()) == 0


async def test_unknown_token_401_untrusted_ca_unreachable(api: FakeKubernetes, tmp_path: Path) -> None:
    kubeconfig = api.kubeconfig(tmp_path / "kc", token="wrong-token")
    with pytest.raises(KubernetesError, match="401 Unauthorized") as info:
        discover([Release(RELEASE, NS, str(kubeconfig))], timeout=5)
    assert "wrong-token" not in str(info.value)
    other = CertificateAuthority(tmp_path, "other")
    kubeconfig = api.kubeconfig(tmp_path / "kc2", token=api.token(), ca=other.cert)
    with pytest.raises(KubernetesError, match="certificate is not trusted"):
        discover([Release(RELEASE, NS, str(kubeconfig))], timeout=5)
    text = (tmp_path / "kc").read_text().replace(f":{api.port}", ":1")
    (tmp_path / "kc3").write_text(text)
    with pytest.raises(KubernetesError, match="unreachable"):
        discover([Release(RELEASE, NS, str(tmp_path / "kc3"))], timeout=5)


async def test_kubeconfig_with_client_certificate(api: FakeKubernetes, pods: Pods, tmp_path: Path) -> None:
    release_of(api, pods, envoy=False)
    kubeconfig = api.kubeconfig(tmp_path / "kc", client=api.client_certificate("backup-operator"))
    fleet = fleet_for(kubeconfig)
    assert len(fleet.endpoints) == 3
    assert {who for _, who in api.requests} == {"backup-operator"}
    denied = api.kubeconfig(tmp_path / "kc2", client=api.client_certificate("intern", allowed=False))
    with pytest.raises(KubernetesError, match="403 Forbidden"):
        fleet_for(denied)


async def test_in_cluster_service_account(
    api: FakeKubernetes, pods: Pods, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release_of(api, pods)
    account = tmp_path / "serviceaccount"
    account.mkdir()
    token = api.token()
    (account / "token").write_text(token)
    (account / "ca.crt").write_bytes(api.ca.cert.read_bytes())
    (account / "namespace").write_text(NS)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
    watches = discover([Release(RELEASE)], timeout=5, service_account_dir=str(account))
    assert watches[0].found.release.namespace == NS  # the pod's own namespace
    assert len(watches[0].found.endpoints) == 3
    assert await watches[0]() == []


async def test_named_target_port_and_headless_service_rules(
    api: FakeKubernetes, pods: Pods, tmp_path: Path
) -> None:
    for i, server in enumerate(pods.servers):
        api.add_pod(NS, f"ledger-{i}", release="dl", app="ledger", ip=server.host, port=server.port,
                    port_name="scalardl-admin")  # fmt: skip
    kubeconfig = api.kubeconfig(tmp_path / "kc", token=api.token())
    with pytest.raises(KubernetesError, match=r"expected one Service named \*-headless.*found none"):
        discover([Release("dl", NS, str(kubeconfig))], timeout=5)
    # the Service's target port is the container port's name: read from each pod
    api.add_service(NS, "dl-ledger-headless", release="dl", app="ledger",
                    ports=[("scalardl", 50051, 50051),
                           ("scalardl-admin", 50053, "scalardl-admin")])  # fmt: skip
    watches = discover([Release("dl", NS, str(kubeconfig))], timeout=5)
    assert watches[0].found.product.app == "ledger"
    assert set(watches[0].found.endpoints) == {Endpoint(s.host, s.port) for s in pods.servers}
    api.add_pod(NS, "auditor-0", release="dl", app="auditor", ip="127.0.0.9")
    with pytest.raises(KubernetesError, match=r"different products \(auditor, ledger\)"):
        discover([Release("dl", NS, str(kubeconfig))], timeout=5)


async def test_backup_set_fails_when_a_pod_restarts_in_the_pause(
    api: FakeKubernetes, pods: Pods, tmp_path: Path
) -> None:
    """The engine's pause window: a restart during capture fails the set (not complete)."""
    import sqlite3

    from txbackup.catalog import Catalog
    from txbackup.engine.backup import BackupPlan, run_backup
    from txbackup.storage import open_storage
    from txbackup.targets.sqlite.target import from_config

    release_of(api, pods)
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("create table t (x)")
    target = from_config("app", {"kind": "sqlite", "path": str(db)})
    original = target.capture

    def capture(*args: Any, **kw: Any) -> Any:  # the pod restarts while the set is captured
        api.restart(NS, "scalardb-cluster-node-2")
        return original(*args, **kw)

    target.capture = capture  # type: ignore[method-assign]
    fleet = fleet_for(api.kubeconfig(tmp_path / "kc", token=api.token()))
    catalog = Catalog(str(tmp_path / "catalog.db"))
    plan = BackupPlan(fleet=fleet, targets=[target], storage=open_storage(str(tmp_path / "repo")),
                      catalog=catalog)  # fmt: skip
    with pytest.raises(PauseWindowBroken, match="scalardb-cluster-node-2: container main restarted"):
        await run_backup(plan)
    assert pods.paused() == [False, False, False]
    assert [s.status for s in catalog.list()] == ["failed"]


async def test_cli_backup_with_the_files_release(api: FakeKubernetes, pods: Pods, tmp_path: Path) -> None:
    """``[applications] kubernetes`` in the cluster file; --k8s-namespace overrides its namespace."""
    import sqlite3

    release_of(api, pods)
    with sqlite3.connect(tmp_path / "app.db") as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("create table t (x)")
    api.kubeconfig(tmp_path / "kc", token=api.token())  # named relative to the cluster file
    config = tmp_path / "cluster.toml"
    config.write_text(
        "[applications]\n"
        f'kubernetes = {{ release = "{RELEASE}", namespace = "staging", kubeconfig = "kc" }}\n'
        '[storage]\npath = "repo"\n'
        '[[targets]]\nname = "app"\nkind = "sqlite"\npath = "app.db"\n'
    )
    code, out, err = await run_cli("backup", "-c", str(config), "--json")
    assert code == 1 and f"release {RELEASE} in namespace staging: no pod has the label" in err
    assert sum(pods.pauses.values()) == 0
    code, out, err = await run_cli("backup", "-c", str(config), "--k8s-namespace", NS, "--json")
    assert code == 0, err
    result = json.loads(out.splitlines()[-1])
    assert result["event"] == "result" and result["pause"]["verified"] is True
    assert all(n == 1 for n in pods.pauses.values()) and pods.paused() == [False, False, False]


async def test_hostile_answers_are_refused_in_one_line(
    api: FakeKubernetes, pods: Pods, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release_of(api, pods)
    release = Release(RELEASE, NS, str(api.kubeconfig(tmp_path / "kc", token=api.token())))
    pod = api.objects["pods"][(NS, "scalardb-cluster-node-1")]
    pod["status"]["podIP"] = "10.0.0.1; rm -rf /"
    with pytest.raises(KubernetesError) as info:
        discover([release], timeout=5)
    assert "pod scalardb-cluster-node-1 has a malformed IP '10.0.0.1; rm -rf /'" in str(info.value)
    pod["status"]["podIP"] = pods.servers[1].host
    api.objects["services"][(NS, "scalardb-cluster-headless")]["spec"]["ports"][0]["targetPort"] = 0
    with pytest.raises(KubernetesError, match="targetPort 0 is not a whole number in 1-65535"):
        discover([release], timeout=5)
    api.objects["services"][(NS, "scalardb-cluster-headless")]["spec"]["ports"][0]["targetPort"] = pods.port
    monkeypatch.setattr("txbackup.admin.kubernetes.MAX_LIST_BYTES", 1000)  # 5 pods: about 3 KB
    with pytest.raises(KubernetesError, match="list pods in namespace prod: the answer is larger than 1,000"):
        discover([release], timeout=5)
    assert sum(pods.pauses.values()) == 0


def test_release_and_namespace_are_checked() -> None:
    for bad in ("Scalar", "a_b", "x" * 54, "", "-a"):
        with pytest.raises(UsageError, match="not a Helm release name"):
            Release(bad)
    with pytest.raises(UsageError, match="not a Kubernetes namespace"):
        Release("ok", "Prod")
