"""Where a shard's cycle runs. The daemon's scheduler and API do not care:
they hand a shard to an executor and get its `ShardResult` back.

Both executors give a cycle `executor.retries` more attempts after a failed
one and stop it at `executor.deadline_minutes` (all attempts together), so a
shard behaves the same whether its cycles run here or as Kubernetes Jobs.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Protocol

from catchup.cancel import CancelToken
from catchup.config import Config, Shard
from catchup.cycle import CycleOptions, Reporter
from catchup.errors import Cancelled
from catchup.fleet.run import ShardResult, backup_shard, shard_message, shard_reason
from catchup.repository import Repository

log = logging.getLogger("catchup.daemon")


class Executor(Protocol):
    def run_cycle(
        self, shard: Shard, run_id: str, bootstrap: bool, reporter: Reporter, cancel: CancelToken
    ) -> ShardResult:
        """Run one cycle of `shard` to its end (or its cancellation) and say how it went."""
        ...


def attempts_text(attempts: int) -> str:
    return f"failed after {attempts} attempt{'s' * (attempts != 1)}"


class LocalExecutor:
    """Cycles as threads of this process, through the same code as `catchup backup`."""

    def __init__(self, config: Config, repository: Repository) -> None:
        self.config = config
        self.repository = repository

    def run_cycle(
        self, shard: Shard, run_id: str, bootstrap: bool, reporter: Reporter, cancel: CancelToken
    ) -> ShardResult:
        settings = self.config.executor
        deadline = f"deadline of {settings.deadline_minutes:g} min exceeded"
        options = CycleOptions(force_bootstrap=bootstrap)
        with cancel.limited(settings.deadline_minutes * 60, deadline) as token:
            for attempt in range(1, settings.retries + 2):
                result = backup_shard(self.config, shard, self.repository, options, reporter, token)
                if result.ok or result.busy or result.cancelled or attempt > settings.retries:
                    break
                log.warning(
                    "run=%s shard=%s attempt %d failed; retrying", run_id, shard.name, attempt
                )
                try:
                    token.sleep(settings.retry_delay_seconds)
                except Cancelled:
                    result = dataclasses.replace(result, cancelled=True)
                    break
        if result.cancelled and not cancel.cancelled:  # the deadline, not a person, stopped it
            error = shard_message(shard.name, f"{attempts_text(attempt)}: {deadline}")
            return dataclasses.replace(result, cancelled=False, error=error)
        if not (result.ok or result.busy or result.cancelled):
            why = shard_reason(shard.name, result.error or "")
            error = shard_message(shard.name, f"{attempts_text(attempt)}: {why}")
            return dataclasses.replace(result, error=error)
        return result


def executor_for(config: Config, repository: Repository) -> Executor:
    if config.executor.kind == "kubernetes":
        from catchup.daemon.kubernetes.executor import KubernetesExecutor, cluster_client

        return KubernetesExecutor(config, repository, cluster_client(config.kubernetes))
    return LocalExecutor(config, repository)
