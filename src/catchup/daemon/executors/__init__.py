"""Where a shard's cycle runs. The daemon's scheduler and API do not care:
they hand a shard to an executor and get its `ShardResult` back.

`executor.kind` picks one from `EXECUTORS`: `local` (local.py) runs cycles as
threads of the daemon, `kubernetes` (kubernetes/) as Jobs. Both apply the same
retries and deadline (attempts.py). A new executor is a module here with a
class that has `execute`, and one entry in `EXECUTORS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from catchup.cancel import CancelToken
from catchup.config import Config, Shard
from catchup.cycle import Reporter
from catchup.daemon.executors.local import LocalExecutor
from catchup.fleet.run import ShardResult
from catchup.repository import Repository


class Executor(Protocol):
    def execute(
        self, shard: Shard, run_id: str, bootstrap: bool, reporter: Reporter, cancel: CancelToken
    ) -> ShardResult:
        """Run one cycle of `shard` to its end (or its cancellation) and say how it went."""
        ...


def kubernetes_executor(config: Config, repository: Repository) -> Executor:
    # The Kubernetes client loads only when the daemon runs Jobs.
    from catchup.daemon.executors.kubernetes.executor import KubernetesExecutor, cluster_client

    return KubernetesExecutor(config, repository, cluster_client(config.kubernetes))


EXECUTORS: dict[str, Callable[[Config, Repository], Executor]] = {
    "local": LocalExecutor,
    "kubernetes": kubernetes_executor,
}


def executor_for(config: Config, repository: Repository) -> Executor:
    return EXECUTORS[config.executor.kind](config, repository)
