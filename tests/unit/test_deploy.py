"""deploy/: the Kubernetes manifests read with the Kubernetes client's own models, and the
Dockerfile read instruction by instruction (no Docker engine runs here to build it).

Every manifest goes through ``ApiClient().deserialize`` into its model (V1CronJob, V1Role...)
and back through ``sanitize_for_serialization``: a field the model does not know (a typo, a
field at the wrong level) is dropped on the way, so the round trip must give the manifest
back unchanged. Then the security properties are asserted on the models."""

from __future__ import annotations

import inspect
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes", reason="pip install 'txbackup[kubernetes]'")
yaml = pytest.importorskip("yaml")

from kubernetes.client import ApiClient  # noqa: E402

from tests.conftest import require  # noqa: E402
from txbackup.config import (  # noqa: E402
    METRICS,
    STORAGE,
    TABLES,
    _refuse_secrets,
    build_target,
    parse_applications,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFESTS = DEPLOY / "kubernetes"
CHART = DEPLOY / "helm" / "txbackup"
HELM = ROOT / ".cache" / "helm" / "bin" / "helm"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY|CREDENTIAL", re.IGNORECASE)

MODELS = {
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("rbac.authorization.k8s.io/v1", "Role"): "V1Role",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "V1RoleBinding",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("batch/v1", "CronJob"): "V1CronJob",
}


class _Response:
    """What ``ApiClient.deserialize`` reads: an HTTP answer's body."""

    def __init__(self, data: Any) -> None:
        self.data = json.dumps(data)


def _manifests() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert len(docs) == 1, f"{path.name}: one object per file"
        found[path.name] = docs[0]
    return found


def helm_binary() -> str | None:
    """helm on PATH, else the one tests/emulators/fetch builds from the Go module proxy."""
    return shutil.which("helm") or (str(HELM) if HELM.exists() else None)


def render_chart(*flags: str) -> subprocess.CompletedProcess[str]:
    helm = helm_binary()
    assert helm is not None
    command = [helm, "template", "txbackup", str(CHART), "--namespace", "scalardb", *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _rendered(*flags: str) -> dict[str, dict[str, Any]]:
    result = render_chart(*flags)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d is not None]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def _model(doc: dict[str, Any]) -> Any:
    api = ApiClient()
    name = MODELS[(doc["apiVersion"], doc["kind"])]
    deserialize: Any = api.deserialize  # its signature changed in 37 (and gained type hints)
    if "response_text" in inspect.signature(deserialize).parameters:  # kubernetes >= 37
        model = deserialize(json.dumps(doc), name, "application/json")
    else:  # 31-36: an HTTP answer's object
        model = deserialize(_Response(doc), name)
    assert api.sanitize_for_serialization(model) == doc, f"{doc['kind']}: fields the model does not know"
    return model


@pytest.fixture(scope="module", params=["kubernetes", "helm"])
def models(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The objects of deploy/kubernetes, then those the Helm chart renders with its defaults,
    as the client's models, by kind: every check below holds for both."""
    if request.param == "helm":
        require(None if helm_binary() else f"helm missing ({HELM}): run tests/emulators/fetch (needs go)")
        docs = list(_rendered().values())
    else:
        docs = list(_manifests().values())
    return {doc["kind"]: _model(doc) for doc in docs}


def test_every_manifest_is_a_known_model_and_in_the_kustomization() -> None:
    docs = _manifests()
    kinds = sorted(d["kind"] for d in docs.values())
    assert kinds == ["ConfigMap", "CronJob", "Role", "RoleBinding", "ServiceAccount"]
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(docs)
    assert kustomization["namespace"], "the release's namespace: kustomize sets it on every object"
    for doc in docs.values():
        assert "namespace" not in doc["metadata"], "the namespace is kustomization.yaml's, in one place"


def test_the_model_round_trip_catches_a_misplaced_field() -> None:
    doc = yaml.safe_load((MANIFESTS / "cronjob.yaml").read_text())
    doc["spec"]["concurrencyPolicyy"] = "Forbid"
    with pytest.raises(AssertionError, match="fields the model does not know"):
        _model(doc)


def test_the_role_grants_get_and_list_on_pods_and_services_only(models: dict[str, Any]) -> None:
    role = models["Role"]
    assert [(r.api_groups, sorted(r.resources), sorted(r.verbs)) for r in role.rules] == [
        ([""], ["pods", "services"], ["get", "list"])
    ]
    assert all(r.resource_names is None and r.non_resource_urls is None for r in role.rules)
    binding = models["RoleBinding"]
    assert (binding.role_ref.kind, binding.role_ref.name) == ("Role", role.metadata.name)
    account = models["ServiceAccount"].metadata
    # plain manifests: kustomize's namespace (kustomization.yaml) fills both; the chart: the release's
    subjects = [(s.kind, s.name, s.namespace) for s in binding.subjects]
    assert subjects == [("ServiceAccount", account.name, account.namespace)]


def test_the_cronjob_runs_backup_once_at_a_time_as_non_root(models: dict[str, Any]) -> None:
    cron = models["CronJob"]
    assert cron.spec.concurrency_policy == "Forbid"
    pod = cron.spec.job_template.spec.template.spec
    assert pod.service_account_name == models["ServiceAccount"].metadata.name
    assert pod.restart_policy == "Never"
    assert pod.security_context.run_as_non_root is True
    assert pod.security_context.run_as_user not in (None, 0)
    [container] = pod.containers
    assert container.command is None, "the image's ENTRYPOINT (txbackup) runs"
    assert container.args[0] == "backup" and "--json" in container.args
    config_path = container.args[container.args.index("--config") + 1]
    security = container.security_context
    assert security.read_only_root_filesystem is True
    assert security.allow_privilege_escalation is False
    assert security.capabilities.drop == ["ALL"]
    assert security.privileged in (None, False)
    volumes = {v.name: v for v in pod.volumes}
    for mount in container.volume_mounts:  # what is writable is an emptyDir, nothing else
        volume = volumes[mount.name]
        assert mount.read_only is True or volume.empty_dir is not None, mount.name
    mounts = {m.mount_path: volumes[m.name] for m in container.volume_mounts}
    config_volume = mounts[str(Path(config_path).parent)]
    assert config_volume.config_map.name == models["ConfigMap"].metadata.name
    env = {e.name: e for e in container.env}
    assert mounts[env["TMPDIR"].value].empty_dir is not None
    state = env["XDG_STATE_HOME"].value
    assert any(state.startswith(path) and v.empty_dir is not None for path, v in mounts.items())


def test_no_secret_literal_in_any_manifest(models: dict[str, Any]) -> None:
    assert "Secret" not in models
    pod = models["CronJob"].spec.job_template.spec.template.spec
    for var in pod.containers[0].env:
        if SECRET_NAME.search(var.name):
            assert var.value is None and var.value_from.secret_key_ref is not None, var.name
    for kind, model in models.items():
        text = json.dumps(ApiClient().sanitize_for_serialization(model))
        assert not re.search(r"(?i)(password|secret|token)\s*[:=]\s*['\"]?[A-Za-z0-9+/]{8,}", text), kind
        assert "BEGIN " not in text and "AKIA" not in text, kind


def test_the_cluster_file_in_the_configmap(models: dict[str, Any], tmp_path: Path) -> None:
    """The cluster file the CronJob reads: valid TOML, no secret, each table read by txbackup's own
    readers, and every password_env it names is set from the Secret by the CronJob."""
    text = models["ConfigMap"].data["cluster.toml"]
    data = tomllib.loads(text)
    _refuse_secrets(data, "configmap")
    assert set(data) <= set(TABLES)
    apps = parse_applications(data["applications"])  # the discovery's own reader (issue 13, part 1)
    assert [(k.release, k.namespace) for k in apps.kubernetes] == [("scalardb-cluster", "scalardb")], apps
    for i, target in enumerate(data["targets"]):
        build_target(target, i)
    STORAGE.read(data["storage"], where="configmap")
    if "metrics" in data:
        assert METRICS.read(data["metrics"], where="configmap")["pushgateway"].startswith("http")
    named = {t["password_env"] for t in data["targets"] if "password_env" in t}
    pod = models["CronJob"].spec.job_template.spec.template.spec
    from_secrets = {e.name for e in pod.containers[0].env if e.value_from and e.value_from.secret_key_ref}
    assert named <= from_secrets
    if data["storage"]["path"].startswith("s3://"):
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= from_secrets


# -- the Dockerfile ----------------------------------------------------------------------------
def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    lines, current = [], ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.partition(" ")
        lines.append((word.upper(), rest.strip()))
        current = ""
    assert not current, "a continuation line ends the Dockerfile"
    return lines


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_the_image_runs_txbackup_as_a_non_root_user() -> None:
    final = _final_stage()
    users = [rest for word, rest in final if word == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("0", "root")
    cron = yaml.safe_load((MANIFESTS / "cronjob.yaml").read_text())
    pod_user = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert user == str(pod_user), "runAsNonRoot needs a numeric USER; the pod's runAsUser must match"
    last_user = max(i for i, (word, _) in enumerate(final) if word == "USER")
    assert all(word != "RUN" for word, _ in final[last_user:]), "RUN after USER: runs as root no more"
    entrypoint = [rest for word, rest in final if word == "ENTRYPOINT"]
    assert [json.loads(e) for e in entrypoint] == [["txbackup"]], "exec form, txbackup"


def test_the_image_is_slim_and_has_the_database_tools() -> None:
    steps = _instructions()
    args = {rest.split("=", 1)[0].split()[0]: rest.split("=", 1)[1] for word, rest in steps if word == "ARG"}
    bases = [rest.split()[0] for word, rest in steps if word == "FROM"]
    resolved = [args.get(b.strip("${}"), b) for b in bases]
    assert all("slim" in b for b in resolved), resolved
    installs = " ".join(rest for word, rest in _final_stage() if word == "RUN" and "apt-get install" in rest)
    packages = set(shlex.split(installs))
    assert {"postgresql-client", "mariadb-client", "zstd", "ca-certificates"} <= packages
    assert "--no-install-recommends" in packages and "rm -rf /var/lib/apt/lists/*" in installs
    for word, rest in steps:
        if word in ("ENV", "ARG"):
            assert not SECRET_NAME.search(rest), f"{word} {rest}: a secret baked into the image"


def test_the_image_installs_extras_that_exist() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    wanted = set()
    for word, rest in _instructions():
        if word == "RUN":
            for found in re.findall(r"\[([a-z0-9_,-]+)\]", rest):
                wanted |= set(found.split(","))
    assert "kubernetes" in wanted
    assert wanted <= extras, wanted - extras


# -- the Helm chart ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def helm() -> None:
    require(None if helm_binary() else f"helm missing ({HELM}): run tests/emulators/fetch (needs go)")


def test_the_chart_renders_what_the_plain_manifests_say(helm: None) -> None:
    """The chart and deploy/kubernetes are two spellings of one deployment: the same kinds,
    the same Role rules, the same pod security, in the release's namespace."""
    rendered = {d["kind"]: d for d in _rendered().values()}
    plain = {d["kind"]: d for d in _manifests().values()}
    assert sorted(rendered) == sorted(plain)
    assert rendered["Role"]["rules"] == plain["Role"]["rules"]
    pod = rendered["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    plain_pod = plain["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["securityContext"] == plain_pod["securityContext"]
    assert pod["containers"][0]["securityContext"] == plain_pod["containers"][0]["securityContext"]
    assert pod["containers"][0]["args"] == plain_pod["containers"][0]["args"]
    assert {d["metadata"]["namespace"] for d in rendered.values()} == {"scalardb"}


def test_the_chart_refuses_a_secret_as_a_plain_value(helm: None) -> None:
    result = render_chart("--set", "env.DB_PASSWORD=hunter22")
    assert result.returncode != 0
    assert "env.DB_PASSWORD looks like a secret" in result.stderr and "hunter22" not in result.stderr


def test_the_chart_with_an_existing_service_account_and_extra_args(helm: None) -> None:
    docs = _rendered(
        "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=backup-sa",
        "--set-json", 'extraArgs=["--wait-lock", "10m"]', "--set", "env.LOG_FORMAT=json",
    )  # fmt: skip
    kinds = sorted(d["kind"] for d in docs.values())
    assert kinds == ["ConfigMap", "CronJob", "Role", "RoleBinding"]
    models = {d["kind"]: _model(d) for d in docs.values()}
    assert [s.name for s in models["RoleBinding"].subjects] == ["backup-sa"]
    pod = models["CronJob"].spec.job_template.spec.template.spec
    assert pod.service_account_name == "backup-sa"
    assert pod.containers[0].args[-2:] == ["--wait-lock", "10m"]
    assert {e.name: e.value for e in pod.containers[0].env}["LOG_FORMAT"] == "json"
