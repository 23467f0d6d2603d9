"""The Job of one shard's cycle, built from the official client's model classes.

Its name encodes the shard and the run, so a Job left from an older run can
never pass for the current one; labels let the daemon find every Job of a
shard in the cluster (at most one may be active).
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

from kubernetes import client

from catchup.config import Config, KubernetesSettings, Shard
from catchup.daemon.executors.attempts import Attempts

APP = "catchup"
CONFIG_DIR = "/etc/catchup/config"
SECRETS_DIR = "/etc/catchup/secrets"
WORK_DIR = "/var/lib/catchup"
CONFIG_FILE = f"{CONFIG_DIR}/catchup.toml"
UID = 10001  # the image's non-root user
NAME_LIMIT = 63
GIB = 1 << 30

LABEL_SHARD_KEY = "catchup.io/shard-key"
LABEL_KEYSPACE = "catchup.io/keyspace"
LABEL_SHARD = "catchup.io/shard"
LABEL_RUN = "catchup.io/run"
ANNOTATION_SHARD = "catchup.io/shard-name"


def dns_label(text: str) -> str:
    """Lowercase letters, digits and '-', starting and ending alphanumeric."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", text.lower())).strip("-") or "x"


def shard_key(shard: Shard) -> str:
    """A label value naming exactly one shard (its name may hold '/' or start with '-')."""
    return hashlib.sha256(shard.name.encode()).hexdigest()[:16]


def run_suffix(run_id: str) -> str:
    return dns_label(run_id.removeprefix("run-"))


def job_name(shard: Shard, run_id: str) -> str:
    """`catchup-<keyspace>-<shard>-<key>-<run>`, cut to fit 63 characters."""
    tail = f"-{shard_key(shard)[:6]}-{run_suffix(run_id)}"
    head = f"{APP}-{dns_label(shard.keyspace)}-{dns_label(shard.shard)}"
    return head[: NAME_LIMIT - len(tail)].rstrip("-") + tail


def lease_name(shard: Shard) -> str:
    """The shard's lock in the cluster: one Lease per shard, held by the Job that runs."""
    return f"{APP}-shard-{shard_key(shard)}"


def shard_lease(shard: Shard, holder: str) -> client.V1Lease:
    return client.V1Lease(
        metadata=client.V1ObjectMeta(
            name=lease_name(shard),
            labels={"app.kubernetes.io/name": APP, LABEL_SHARD_KEY: shard_key(shard)},
            annotations={ANNOTATION_SHARD: shard.name},
        ),
        spec=client.V1LeaseSpec(
            holder_identity=holder, acquire_time=datetime.now(UTC).replace(microsecond=0)
        ),
    )


def job_outcome(job: client.V1Job) -> tuple[str, str] | None:
    """("Complete" or "Failed", why) once the Job has ended, else None."""
    for condition in (job.status and job.status.conditions) or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            why = ": ".join(p for p in (condition.reason, condition.message) if p)
            return condition.type, why
    return None


# The client's models make every field optional; the API server always sets these on
# what it returns, and catchup's own Jobs and Leases carry them.


def object_name(obj: client.V1Job | client.V1Pod) -> str:
    return (obj.metadata.name if obj.metadata else None) or ""


def created_at(pod: client.V1Pod) -> datetime:
    created = pod.metadata.creation_timestamp if pod.metadata else None
    return created or datetime.min.replace(tzinfo=UTC)


def lease_holder(lease: client.V1Lease) -> str | None:
    return lease.spec.holder_identity if lease.spec else None


def shard_selector(shard: Shard) -> str:
    return f"app.kubernetes.io/name={APP},{LABEL_SHARD_KEY}={shard_key(shard)}"


def labels(shard: Shard, run_id: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": APP,
        "app.kubernetes.io/component": "backup-cycle",
        "app.kubernetes.io/managed-by": "catchup-daemon",
        LABEL_SHARD_KEY: shard_key(shard),
        LABEL_KEYSPACE: dns_label(shard.keyspace)[:NAME_LIMIT],
        LABEL_SHARD: dns_label(shard.shard)[:NAME_LIMIT],
        LABEL_RUN: run_suffix(run_id)[:NAME_LIMIT],
    }


def work_volume_bytes(settings: KubernetesSettings, last_data_bytes: int | None) -> int:
    """Room for a restored data dir and its catch-up: a factor of the last backup's size."""
    wanted = int(settings.work_volume_factor * (last_data_bytes or 0))
    return max(wanted, int(settings.work_volume_min_gb * GIB))


def cycle_job(
    config: Config,
    shard: Shard,
    run_id: str,
    bootstrap: bool,
    last_data_bytes: int | None,
) -> client.V1Job:
    settings = config.kubernetes
    attempts = Attempts.of(config)  # the Job retries and stops itself, by the same numbers
    name = job_name(shard, run_id)
    meta_labels = labels(shard, run_id)
    args = ["--log-format", "json", "backup", shard.name, "--result-line"]
    if bootstrap:
        args.append("--bootstrap")
    container = client.V1Container(
        name="catchup",
        image=settings.image,
        image_pull_policy=settings.image_pull_policy,
        command=["catchup"],
        args=args,
        env=[client.V1EnvVar(name="CATCHUP_CONFIG", value=CONFIG_FILE)],
        env_from=[
            client.V1EnvFromSource(secret_ref=client.V1SecretEnvSource(name=settings.env_secret))
        ]
        if settings.env_secret
        else None,
        resources=client.V1ResourceRequirements(
            requests={"cpu": settings.cpu_request, "memory": settings.memory_request},
            limits={"cpu": settings.cpu_limit, "memory": settings.memory_limit},
        ),
        volume_mounts=[
            client.V1VolumeMount(name="config", mount_path=CONFIG_DIR, read_only=True),
            client.V1VolumeMount(name="secrets", mount_path=SECRETS_DIR, read_only=True),
            client.V1VolumeMount(name="work", mount_path=WORK_DIR),
            client.V1VolumeMount(name="tmp", mount_path="/tmp"),
        ],
        security_context=client.V1SecurityContext(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=client.V1Capabilities(drop=["ALL"]),
        ),
    )
    work_claim = client.V1PersistentVolumeClaimTemplate(
        metadata=client.V1ObjectMeta(labels=meta_labels),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"],
            storage_class_name=settings.storage_class,
            resources=client.V1VolumeResourceRequirements(
                requests={"storage": str(work_volume_bytes(settings, last_data_bytes))}
            ),
        ),
    )
    pod = client.V1PodSpec(
        restart_policy="Never",
        service_account_name=settings.service_account,
        automount_service_account_token=False,  # the cycle never talks to the cluster
        security_context=client.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=UID,
            run_as_group=UID,
            fs_group=UID,
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        ),
        containers=[container],
        volumes=[
            client.V1Volume(
                name="config",
                config_map=client.V1ConfigMapVolumeSource(name=settings.config_map),
            ),
            client.V1Volume(
                name="secrets",
                secret=client.V1SecretVolumeSource(secret_name=settings.secret, default_mode=0o440),
            ),
            client.V1Volume(
                name="work",
                ephemeral=client.V1EphemeralVolumeSource(volume_claim_template=work_claim),
            ),
            client.V1Volume(name="tmp", empty_dir=client.V1EmptyDirVolumeSource()),
        ],
    )
    return client.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=client.V1ObjectMeta(
            name=name,
            namespace=settings.namespace,
            labels=meta_labels,
            annotations={ANNOTATION_SHARD: shard.name, LABEL_RUN: run_id},
        ),
        spec=client.V1JobSpec(
            backoff_limit=attempts.retries,
            active_deadline_seconds=int(attempts.deadline_seconds),
            ttl_seconds_after_finished=settings.ttl_seconds_after_finished,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=meta_labels), spec=pod
            ),
        ),
    )
