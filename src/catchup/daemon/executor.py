"""Where a shard's cycle runs. The daemon's scheduler and API do not care:
they hand a shard to an executor and get its `ShardResult` back.
"""

from __future__ import annotations

from typing import Protocol

from catchup.cancel import CancelToken
from catchup.config import Config, Shard
from catchup.cycle import CycleOptions, Reporter
from catchup.fleet.run import ShardResult, backup_shard
from catchup.repository import Repository


class Executor(Protocol):
    def run_cycle(
        self, shard: Shard, run_id: str, bootstrap: bool, reporter: Reporter, cancel: CancelToken
    ) -> ShardResult:
        """Run one cycle of `shard` to its end (or its cancellation) and say how it went."""
        ...


class LocalExecutor:
    """Cycles as threads of this process, through the same code as `catchup backup`."""

    def __init__(self, config: Config, repository: Repository) -> None:
        self.config = config
        self.repository = repository

    def run_cycle(
        self, shard: Shard, run_id: str, bootstrap: bool, reporter: Reporter, cancel: CancelToken
    ) -> ShardResult:
        options = CycleOptions(force_bootstrap=bootstrap)
        return backup_shard(self.config, shard, self.repository, options, reporter, cancel)
