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

from catchup.config import parse_config
from catchup.daemon.kubernetes.job import CONFIG_FILE, UID

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
