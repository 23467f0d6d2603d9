"""The shipped deployment files are valid: every Kubernetes manifest reads back
unchanged through the official client's models (a misspelt or misplaced field
would be dropped), the ConfigMap's catchup.toml passes catchup's own config
validation, and the Dockerfile and systemd unit agree with the Job's contract."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from catchup.config import Config, parse_config
from catchup.daemon.executors.kubernetes.job import CONFIG_FILE, UID, cycle_job

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MODELS = {
    "Namespace": "V1Namespace",
    "ServiceAccount": "V1ServiceAccount",
    "Role": "V1Role",
    "RoleBinding": "V1RoleBinding",
    "ConfigMap": "V1ConfigMap",
    "Secret": "V1Secret",
    "Deployment": "V1Deployment",
    "Service": "V1Service",
    "CronJob": "V1CronJob",
    "NetworkPolicy": "V1NetworkPolicy",
}


def manifests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            found.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return found


@pytest.mark.parametrize(("name", "doc"), manifests(), ids=[n for n, _ in manifests()])
def test_each_manifest_reads_back_unchanged_through_the_client_models(name, doc):
    api = client.ApiClient()
    model = api.deserialize(json.dumps(doc), MODELS[doc["kind"]], "application/json")
    assert api.sanitize_for_serialization(model) == doc


def test_kustomization_lists_files_that_exist():
    listed = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    for resource in listed["resources"]:
        assert (DEPLOY / "kubernetes" / resource).exists(), resource


def test_the_configmap_config_is_valid_and_matches_the_job_mounts():
    [config_map] = [d for _, d in manifests() if d["kind"] == "ConfigMap"]
    config = parse_config(tomllib.loads(config_map["data"]["catchup.toml"]))
    assert config.executor.kind == "kubernetes"
    assert str(config.work_dir).startswith("/var/lib/catchup/")
    assert str(config.credentials.password_file).startswith("/etc/catchup/secrets/")
    assert config.kubernetes.config_map == config_map["metadata"]["name"]
    secrets = {d["metadata"]["name"] for _, d in manifests() if d["kind"] == "Secret"}
    assert {config.kubernetes.secret, config.kubernetes.env_secret} <= secrets


def test_the_daemon_may_do_what_the_executor_does_and_no_more():
    [role] = [d for _, d in manifests() if d["kind"] == "Role"]
    rules = {(g, r): set(rule["verbs"]) for rule in role["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}  # fmt: skip
    assert rules == {
        ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
        ("coordination.k8s.io", "leases"): {"create", "get", "update", "delete"},
        ("", "pods"): {"get", "list"},
        ("", "pods/log"): {"get"},
    }


def test_the_image_runs_as_the_user_the_jobs_expect():
    dockerfile = (DEPLOY.parent / "Dockerfile").read_text()
    assert f"USER {UID}:{UID}" in dockerfile
    assert f"CATCHUP_CONFIG={CONFIG_FILE}" in dockerfile
    assert 'ENTRYPOINT ["catchup"]' in dockerfile


def test_the_systemd_unit_runs_the_daemon_as_an_unprivileged_user():
    unit = (DEPLOY / "systemd" / "catchup.service").read_text()
    assert "ExecStart=/opt/catchup/venv/bin/catchup --log-format json serve" in unit
    assert "User=catchup" in unit and "NoNewPrivileges=yes" in unit


def the(kind: str, name: str | None = None) -> dict:
    [doc] = [
        d for _, d in manifests() if d["kind"] == kind and name in (None, d["metadata"]["name"])
    ]
    return doc


def shipped_config() -> Config:
    return parse_config(tomllib.loads(the("ConfigMap")["data"]["catchup.toml"]))


def cycle_job_template() -> dict:
    """The pod template of a Job the daemon would create with the shipped config."""
    config = shipped_config()
    job = cycle_job(config, config.shards[0], "run-20261203-abcdef", False, None)
    return client.ApiClient().sanitize_for_serialization(job)["spec"]["template"]


def cycle_job_spec() -> dict:
    return cycle_job_template()["spec"]


def pod_specs() -> dict[str, dict]:
    return {
        "daemon Deployment": the("Deployment", "catchup-daemon")["spec"]["template"]["spec"],
        "CronJob": the("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        "cycle Job": cycle_job_spec(),
        "archiver Deployment": archiver()["spec"]["template"]["spec"],
    }


def archiver() -> dict:
    [doc] = [
        d
        for _, d in manifests()
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == "archiver"
    ]
    return doc


# The volume types the "restricted" Pod Security profile allows.
RESTRICTED_VOLUMES = {
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
}  # fmt: skip


def test_the_namespace_enforces_the_restricted_pod_security_profile():
    labels = the("Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("what", ["daemon Deployment", "CronJob", "cycle Job"])
def test_every_pod_meets_the_restricted_profile(what):
    """The "restricted" profile's rules, so that its enforcement admits every pod."""
    spec = pod_specs()[what]
    pod = spec.get("securityContext", {})
    assert not {"hostNetwork", "hostPID", "hostIPC"} & {k for k, v in spec.items() if v}
    for volume in spec["volumes"]:
        assert set(volume) - {"name"} <= RESTRICTED_VOLUMES, volume
    assert pod.get("runAsUser") != 0
    for container in spec["containers"] + spec.get("initContainers", []):
        context = container["securityContext"]
        assert pod.get("runAsNonRoot") or context.get("runAsNonRoot"), container["name"]
        assert context.get("runAsUser") != 0
        assert context["allowPrivilegeEscalation"] is False
        assert not context.get("privileged")
        assert "ALL" in context["capabilities"]["drop"]
        assert set(context["capabilities"].get("add") or []) <= {"NET_BIND_SERVICE"}
        seccomp = context.get("seccompProfile") or pod.get("seccompProfile")
        assert seccomp and seccomp["type"] in ("RuntimeDefault", "Localhost")
        assert "ports" not in container or all("hostPort" not in p for p in container["ports"])


def files_in(spec: dict, secrets: dict[str, dict]) -> tuple[set[str], list[dict]]:
    """Every path a pod's container sees from Secret volumes, and its environment entries."""
    [container] = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    paths = set()
    for mount in container["volumeMounts"]:
        source = volumes[mount["name"]].get("secret")
        if source is None:
            continue
        items = source.get("items") or [
            {"key": k, "path": k} for k in secrets[source["secretName"]]["stringData"]
        ]
        paths |= {f"{mount['mountPath']}/{item['path']}" for item in items}
    return paths, container.get("env", []) + container.get("envFrom", [])


def test_the_daemon_gets_its_keys_and_token_but_never_the_source_password():
    config = shipped_config()
    secrets = {d["metadata"]["name"]: d for _, d in manifests() if d["kind"] == "Secret"}
    password = str(config.credentials.password_file)
    daemon_files, daemon_env = files_in(
        the("Deployment", "catchup-daemon")["spec"]["template"]["spec"], secrets
    )
    assert password not in daemon_files
    assert {str(p) for p in config.encryption.key_files} <= daemon_files
    assert str(config.daemon.token_file) in daemon_files
    # No environment variable brings it either: only the object-store credentials.
    assert all("secretKeyRef" not in str(entry) for entry in daemon_env)
    env_secrets = {e["secretRef"]["name"] for e in daemon_env if "secretRef" in e}
    assert env_secrets == {config.kubernetes.env_secret}
    assert not any("password" in key.lower() for s in env_secrets
                   for key in secrets[s]["stringData"])  # fmt: skip
    # The Jobs that log in to the sources do get it.
    job_files, _ = files_in(cycle_job_spec(), secrets)
    assert password in job_files
    assert {str(p) for p in config.encryption.key_files} <= job_files


def test_network_policies_deny_by_default_and_open_only_what_each_pod_needs():
    deny = the("NetworkPolicy", "catchup-default-deny")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny

    daemon = the("NetworkPolicy", "catchup-daemon")["spec"]
    deployment = the("Deployment", "catchup-daemon")["spec"]["template"]
    assert daemon["podSelector"]["matchLabels"].items() <= deployment["metadata"]["labels"].items()
    [api_port] = deployment["spec"]["containers"][0]["ports"]
    listen_port = int(shipped_config().daemon.listen.rpartition(":")[2])
    assert api_port["containerPort"] == listen_port
    [ingress] = daemon["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": listen_port}]
    assert ingress["from"] and all(peer.get("podSelector") for peer in ingress["from"])
    daemon_ports = {p["port"] for rule in daemon["egress"] for p in rule["ports"]}
    assert daemon_ports == {53, 443, 6443}, "DNS, the API server, the object store; no source"

    cycle = the("NetworkPolicy", "catchup-cycle")["spec"]
    assert "ingress" not in cycle and "Ingress" in cycle["policyTypes"]
    [components] = cycle["podSelector"]["matchExpressions"]
    job_labels = cycle_job_template()["metadata"]["labels"]
    cron_labels = the("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    for labels in (job_labels, cron_labels):
        assert labels["app.kubernetes.io/component"] in components["values"]
    cycle_ports = {p["port"] for rule in cycle["egress"] for p in rule["ports"]}
    assert {3306, 5432, 443, 53} == cycle_ports


def test_the_archiver_deployment_archives_a_shard_of_the_config_with_its_password():
    config = shipped_config()
    secrets = {d["metadata"]["name"]: d for _, d in manifests() if d["kind"] == "Secret"}
    template = archiver()["spec"]["template"]
    [container] = template["spec"]["containers"]
    args = container["args"]
    shard = args[args.index("archive") + 1]
    assert config.shard(shard).name == shard
    files, _ = files_in(template["spec"], secrets)
    assert str(config.credentials.password_file) in files
    assert {str(p) for p in config.encryption.key_files} <= files
    # It reaches the sources like a cycle, and only Prometheus reaches its metrics port.
    cycle = the("NetworkPolicy", "catchup-cycle")["spec"]
    [components] = cycle["podSelector"]["matchExpressions"]
    assert "archiver" in components["values"]
    metrics = the("NetworkPolicy", "catchup-archiver-metrics")["spec"]
    [port] = container["ports"]
    listen = args[args.index("--metrics-listen") + 1]
    assert port["containerPort"] == int(listen.rpartition(":")[2])
    [ingress] = metrics["ingress"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": port["containerPort"]}]
    assert archiver()["spec"]["replicas"] == 1


def test_the_alert_rules_name_only_metrics_catchup_exports():
    import re

    from prometheus_client import generate_latest

    from catchup.config import parse_config
    from catchup.daemon.archivers import ArchiverPool
    from catchup.daemon.metrics import metrics_registry
    from catchup.daemon.runs import RunBook

    config = parse_config(
        {
            "repository": "/tmp/unused",
            "archive": {"enabled": True},
            "shards": [{"keyspace": "ks", "shard": "0", "source": "db:3306"}],
        }
    )

    class Dispatcher:
        running: dict = {}

        def queue_length(self) -> int:
            return 0

    from datetime import UTC, datetime

    book = RunBook(config.shards, 10)
    pool = ArchiverPool(config, None)  # type: ignore[arg-type]
    registry = metrics_registry(book, Dispatcher(), lambda: datetime.now(UTC), dict, pool)  # type: ignore[arg-type]
    exported = {
        line.split()[2]
        for line in generate_latest(registry).decode().splitlines()
        if line.startswith("# TYPE")
    }
    exported |= {f"{name}_total" for name in exported}
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())
    named = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            named |= set(re.findall(r"\b(catchup_[a-z_]+)", rule["expr"]))
    assert named and named <= exported, named - exported
    assert any(n.startswith("catchup_archive_lag") for n in named)
