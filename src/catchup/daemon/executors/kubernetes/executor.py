"""Cycles as Kubernetes Jobs: one Job per shard per cycle, running the same
`catchup backup SHARD` as everywhere else, watched (a Kubernetes watch) until
it ends, its result line collected from the pod's log, and the Job deleted.

At most one Job per shard, decided by the cluster, not this process's memory:
the executor first takes the shard's Lease (`KubernetesLeaser`, lease.py), then
checks that no Job with the shard's label is still active. The pod's
`catchup backup` takes the shard lock every writer takes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from catchup.cancel import CancelToken
from catchup.config import Config, KubernetesSettings, Shard
from catchup.cycle import Reporter
from catchup.daemon.executors.attempts import failed_after
from catchup.daemon.executors.kubernetes.job import (
    created_at,
    cycle_job,
    job_name,
    job_outcome,
    object_name,
    shard_selector,
)
from catchup.daemon.executors.kubernetes.lease import KubernetesLeaser
from catchup.errors import Cancelled, CatchupError, ShardBusyError
from catchup.fleet.lease import hold
from catchup.fleet.run import ShardResult, shard_reason
from catchup.repository import Repository

log = logging.getLogger("catchup.kubernetes")


def cluster_client(settings: KubernetesSettings) -> client.ApiClient:
    """An API client from the kubeconfig file, or from the pod's service account."""
    from kubernetes import config as kube_config

    if settings.kubeconfig:
        api: client.ApiClient = kube_config.new_client_from_config(str(settings.kubeconfig))
        return api
    kube_config.load_incluster_config()
    return client.ApiClient()


class KubernetesExecutor:
    def __init__(
        self,
        config: Config,
        repository: Repository,
        api: client.ApiClient,
    ) -> None:
        self.config = config
        self.settings = config.kubernetes
        self.repository = repository
        self.api = api
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)

    def execute(
        self, shard: Shard, run_id: str, bootstrap: bool, reporter: Reporter, cancel: CancelToken
    ) -> ShardResult:
        started = time.monotonic()
        name = job_name(shard, run_id)
        leaser = KubernetesLeaser(self.config, self.api, holder=name)
        try:
            with hold([leaser], shard.keyspace, shard.shard, cancel) as held:
                self.refuse_if_busy(shard)
                with self.job_in_cluster(shard, run_id, bootstrap):
                    reporter.step(shard.name, "job created")
                    outcome, why = self.wait_for_job(name, shard, reporter, held.cancel)
                    return self.collect_result(name, shard, outcome, why, started)
        except CatchupError as exc:
            return ShardResult.failure(shard.name, started, exc)
        except ApiException as exc:
            return ShardResult.failure(
                shard.name, started, f"Kubernetes API refused {name}: {exc.status} {exc.reason}"
            )

    @contextmanager
    def job_in_cluster(self, shard: Shard, run_id: str, bootstrap: bool) -> Iterator[None]:
        """The cycle's Job, deleted (with its pods) however the block ends."""
        self.create_job(shard, run_id, bootstrap)
        try:
            yield
        finally:
            self.delete_job(job_name(shard, run_id))

    def refuse_if_busy(self, shard: Shard) -> None:
        jobs = self.batch.list_namespaced_job(
            self.settings.namespace, label_selector=shard_selector(shard)
        )
        active = [object_name(job) for job in jobs.items if job_outcome(job) is None]
        if active:
            raise ShardBusyError(
                f"shard {shard.name}: Job {', '.join(active)} is still running in namespace "
                f"{self.settings.namespace}; wait for it"
            )

    def create_job(self, shard: Shard, run_id: str, bootstrap: bool) -> None:
        newest = self.repository.latest(shard.keyspace, shard.shard)
        job = cycle_job(
            self.config, shard, run_id, bootstrap, newest.data_bytes if newest else None
        )
        try:
            self.batch.create_namespaced_job(self.settings.namespace, job)
        except ApiException as exc:
            if exc.status == 409:  # the name encodes the run: someone runs this very cycle
                raise ShardBusyError(f"shard {shard.name}: Job {object_name(job)} exists") from None
            raise
        log.info("shard=%s job=%s created", shard.name, object_name(job))

    def wait_for_job(
        self, name: str, shard: Shard, reporter: Reporter, cancel: CancelToken
    ) -> tuple[str, str]:
        """Watch the Job until it ends. Each watch lasts `watch_seconds`, so a
        cancellation is noticed within that, and a dropped watch is renewed."""
        reported = ""
        watcher = watch.Watch()
        while True:
            for event in watcher.stream(
                self.batch.list_namespaced_job,
                self.settings.namespace,
                field_selector=f"metadata.name={name}",
                timeout_seconds=self.settings.watch_seconds,
            ):
                if event["type"] == "DELETED":
                    raise CatchupError(f"Job {name} was deleted before it ended")
                job = event["object"]
                ended = job_outcome(job)
                if ended:
                    watcher.stop()
                    return ended
                step = self.job_step(job)
                if step != reported:
                    reporter.step(shard.name, step)
                    reported = step
                if cancel.cancelled:
                    break
            if cancel.cancelled:
                raise Cancelled(f"cancelled: {cancel.reason}; Job {name} deleted")

    @staticmethod
    def job_step(job: client.V1Job) -> str:
        status = job.status
        if status and status.active:
            return f"job running (attempt {1 + (status.failed or 0)})"
        return "job pending"

    def collect_result(
        self, name: str, shard: Shard, outcome: str, why: str, started: float
    ) -> ShardResult:
        """The result line of the Job's last pod, or a failure that says why there is none."""
        job = self.batch.read_namespaced_job_status(name, self.settings.namespace)
        attempts = ((job.status and job.status.failed) or 0) + (outcome == "Complete")
        printed, last_line = self.read_result(name)
        if outcome == "Complete" and printed and printed.ok:
            return printed
        detail = (
            shard_reason(shard.name, printed.error)
            if printed and printed.error
            else f"no result line in its log, which ends: {last_line or '(nothing)'}"
        )
        return ShardResult.failure(
            shard.name,
            started,
            f"{failed_after(attempts)} (Job {name}: {why or outcome}): {detail}",
        )

    def read_result(self, name: str) -> tuple[ShardResult | None, str]:
        """The result line of the newest pod that printed one, and the last log line seen."""
        last_line = ""
        pods = self.core.list_namespaced_pod(
            self.settings.namespace, label_selector=f"job-name={name}"
        ).items
        for pod in sorted(pods, key=created_at, reverse=True):
            try:
                text = self.core.read_namespaced_pod_log(
                    object_name(pod), self.settings.namespace, tail_lines=200
                )
            except ApiException:
                continue  # a pod gone with its node: try an older attempt's
            lines = [line for line in text.splitlines() if line.strip()]
            last_line = last_line or (lines[-1][-300:] if lines else "")
            for line in reversed(lines):
                parsed = ShardResult.from_result_line(line)
                if parsed:
                    return parsed, last_line
        return None, last_line

    def delete_job(self, name: str) -> None:
        try:
            self.batch.delete_namespaced_job(
                name, self.settings.namespace, propagation_policy="Background"
            )
        except ApiException as exc:
            if exc.status != 404:
                log.warning(
                    "job=%s not deleted (%s %s); its TTL will", name, exc.status, exc.reason
                )
