"""The Job of a cycle is complete and valid per the official client's models."""

from __future__ import annotations

import json
import re
import tomllib

import pytest
from kubernetes import client

from catchup.config import parse_config
from catchup.daemon.executors.kubernetes.job import (
    CONFIG_FILE,
    GIB,
    LABEL_SHARD_KEY,
    cycle_job,
    job_name,
    shard_selector,
)

DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

CONFIG = """
repository = "s3://backups/fleet"
work_dir = "/var/lib/catchup/work"
[executor]
kind = "kubernetes"
retries = 2
deadline_minutes = 90
[kubernetes]
namespace = "db-backups"
image = "registry.internal/catchup:0.1.0"
storage_class = "fast-ssd"
env_secret = "cloud-credentials"
[[shards]]
keyspace = "commerce"
shard = "-80"
source = "db1:3306"
[[shards]]
keyspace = "Customer_Data.v2"
shard = "80-c0"
source = "db2:3306"
"""


@pytest.fixture
def config():
    return parse_config(tomllib.loads(CONFIG))


def round_trip(job: client.V1Job) -> client.V1Job:
    """Serialised as the client sends it, read back as the client reads a response."""
    api = client.ApiClient()
    body = json.dumps(api.sanitize_for_serialization(job))
    return api.deserialize(body, "V1Job", "application/json")


def test_the_job_survives_the_clients_own_serialisation(config):
    job = cycle_job(config, config.shards[0], "run-0123456789ab", False, 40 * GIB)
    assert round_trip(job) == job
    body = client.ApiClient().sanitize_for_serialization(job)
    assert body["apiVersion"] == "batch/v1" and body["kind"] == "Job"
    assert body["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_the_job_carries_the_limits_the_config_sets(config):
    job = cycle_job(config, config.shards[0], "run-0123456789ab", True, 40 * GIB)
    spec = job.spec
    assert spec.backoff_limit == 2
    assert spec.active_deadline_seconds == 90 * 60
    assert spec.ttl_seconds_after_finished == 3600
    pod = spec.template.spec
    [container] = pod.containers
    assert container.image == "registry.internal/catchup:0.1.0"
    assert container.command == ["catchup"]
    assert container.args == [
        "--log-format", "json", "backup", "commerce/-80", "--result-line", "--bootstrap",
    ]  # fmt: skip
    assert {e.name: e.value for e in container.env} == {"CATCHUP_CONFIG": CONFIG_FILE}
    assert container.env_from[0].secret_ref.name == "cloud-credentials"
    assert container.resources.requests == {"cpu": "1", "memory": "1Gi"}
    assert container.resources.limits == {"cpu": "2", "memory": "2Gi"}
    assert container.security_context.allow_privilege_escalation is False
    assert container.security_context.read_only_root_filesystem is True
    assert pod.security_context.run_as_non_root is True
    assert pod.automount_service_account_token is False
    mounts = {m.mount_path: m for m in container.volume_mounts}
    assert mounts["/etc/catchup/config"].read_only and mounts["/etc/catchup/secrets"].read_only
    assert "/var/lib/catchup" in mounts and "/tmp" in mounts
    volumes = {v.name: v for v in pod.volumes}
    assert volumes["config"].config_map.name == "catchup-config"
    assert volumes["secrets"].secret.secret_name == "catchup-secrets"
    assert volumes["secrets"].secret.default_mode == 0o440
    claim = volumes["work"].ephemeral.volume_claim_template.spec
    assert claim.storage_class_name == "fast-ssd"
    assert claim.resources.requests == {"storage": str(100 * GIB)}  # 2.5 x 40 GiB


def test_the_work_volume_is_sized_from_the_last_backup_with_a_floor(config):
    def storage(data_bytes: int | None) -> int:
        job = cycle_job(config, config.shards[0], "run-1", False, data_bytes)
        claim = job.spec.template.spec.volumes[2].ephemeral.volume_claim_template.spec
        return int(claim.resources.requests["storage"])

    assert storage(None) == 10 * GIB  # never backed up: the floor
    assert storage(1 * GIB) == 10 * GIB
    assert storage(400 * GIB) == 1000 * GIB


def test_names_and_labels_are_valid_and_tell_shard_and_run_apart(config):
    names = set()
    for shard in config.shards:
        for run_id in ("run-0123456789ab", "run-ba9876543210"):
            job = cycle_job(config, shard, run_id, False, None)
            name = job.metadata.name
            assert len(name) <= 63 and DNS_1123.match(name), name
            assert run_id.removeprefix("run-") in name  # a stale Job never passes for this one
            for key, value in job.metadata.labels.items():
                assert LABEL_VALUE.match(value) and len(value) <= 63, (key, value)
            assert job.metadata.annotations["catchup.io/shard-name"] == shard.name
            assert job.spec.template.metadata.labels == job.metadata.labels
            names.add(name)
    assert len(names) == 4
    first, second = config.shards
    assert shard_selector(first) != shard_selector(second)
    assert LABEL_SHARD_KEY in shard_selector(first)


def test_a_long_shard_name_is_cut_to_fit_but_keeps_its_key_and_run(config):
    shard = config.shards[0].model_copy(update={"keyspace": "k" * 80})
    name = job_name(shard, "run-0123456789ab")
    assert len(name) <= 63 and DNS_1123.match(name)
    assert name.endswith("-0123456789ab")


def test_the_models_refuse_an_incomplete_job():
    with pytest.raises(ValueError):
        client.V1Container(name=None)
    with pytest.raises(ValueError):
        client.V1JobSpec(template=None)
