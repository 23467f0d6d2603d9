"""The shard's Lease in the cluster, as one more `Leaser` (fleet/lease.py).

The daemon takes it before it creates a shard's Job, so at most one Job per
shard runs, decided by the API server, not by this process's memory: the Lease
is created, or taken over from a Job that has ended, and both are refused by
the API server if someone else got there first. It is not renewed: a Lease
counts as held while its Job is active, or for `LEASE_GRACE` after it was
taken (its Job may still be being created). The Job's pod then takes the
shard lock every writer takes (flock and repository lease) on its own.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from catchup.config import Config, Shard
from catchup.daemon.executors.kubernetes.job import (
    job_outcome,
    lease_holder,
    lease_name,
    shard_lease,
)
from catchup.errors import ShardBusyError
from catchup.fleet.lease import LeaseLostError

log = logging.getLogger("catchup.kubernetes")
LEASE_GRACE = timedelta(minutes=2)


class KubernetesLeaser:
    """Leases for the Job `holder`, in the namespace of `config.kubernetes`."""

    def __init__(self, config: Config, api: client.ApiClient, holder: str) -> None:
        self.config = config
        self.namespace = config.kubernetes.namespace
        self.coordination = client.CoordinationV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.holder = holder

    def acquire(self, keyspace: str, shard: str) -> KubernetesLease:
        """Hold the shard's Lease for Job `holder`, or raise ShardBusyError."""
        selected = self.config.shard(f"{keyspace}/{shard}")
        lease = KubernetesLease(self, selected)
        try:
            self.coordination.create_namespaced_lease(
                self.namespace, shard_lease(selected, self.holder)
            )
            return lease
        except ApiException as exc:
            if exc.status != 409:
                raise
        current = self.coordination.read_namespaced_lease(lease_name(selected), self.namespace)
        previous = lease_holder(current)
        acquired = current.spec.acquire_time if current.spec else None
        # A young Lease may be one whose Job is still being created.
        young = acquired is not None and datetime.now(UTC) - acquired < LEASE_GRACE
        if previous and (young or self.job_active(previous)):
            raise ShardBusyError(
                f"shard {selected.name}: Job {previous} is still running in namespace "
                f"{self.namespace}; wait for it"
            )
        # Its Job ended without releasing it (a daemon died): take it over, unless
        # another taker changed it since we read it (the API server compares versions).
        current.spec = shard_lease(selected, self.holder).spec
        try:
            self.coordination.replace_namespaced_lease(
                lease_name(selected), self.namespace, current
            )
        except ApiException as exc:
            if exc.status == 409:
                raise ShardBusyError(f"shard {selected.name}: another cycle just started") from None
            raise
        return lease

    def job_active(self, name: str) -> bool:
        try:
            job = self.batch.read_namespaced_job_status(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return job_outcome(job) is None


class KubernetesLease:
    ttl: float | None = None  # held while its Job is active; never renewed

    def __init__(self, leaser: KubernetesLeaser, shard: Shard) -> None:
        self.leaser, self.shard = leaser, shard

    def renew(self) -> None:
        pass

    def confirm(self) -> None:
        current = self.leaser.coordination.read_namespaced_lease(
            lease_name(self.shard), self.leaser.namespace
        )
        holder = lease_holder(current)
        if holder != self.leaser.holder:
            raise LeaseLostError(f"shard {self.shard.name}: its Lease is now held by {holder}")

    def release(self) -> None:
        namespace = self.leaser.namespace
        try:
            current = self.leaser.coordination.read_namespaced_lease(
                lease_name(self.shard), namespace
            )
            if lease_holder(current) == self.leaser.holder:
                self.leaser.coordination.delete_namespaced_lease(lease_name(self.shard), namespace)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("lease of %s not released (%s); the next cycle takes it over",
                            self.shard.name, exc.status)  # fmt: skip
