"""Cycles as threads of the daemon, through the same code as `catchup backup`."""

from __future__ import annotations

import dataclasses
import logging

from catchup.cancel import CancelToken
from catchup.config import Config, Shard
from catchup.cycle import CycleOptions, Reporter
from catchup.daemon.executors.attempts import Attempts, failed_after
from catchup.errors import Cancelled
from catchup.fleet.run import ShardResult, backup_shard, shard_message, shard_reason
from catchup.repository import Repository

log = logging.getLogger("catchup.daemon")


class LocalExecutor:
    def __init__(self, config: Config, repository: Repository) -> None:
        self.config = config
        self.repository = repository

    def execute(
        self, shard: Shard, run_id: str, bootstrap: bool, reporter: Reporter, cancel: CancelToken
    ) -> ShardResult:
        attempts = Attempts.of(self.config)
        options = CycleOptions(force_bootstrap=bootstrap)
        with cancel.limited(attempts.deadline_seconds, attempts.deadline_exceeded) as token:
            attempt = 1
            while True:
                result = backup_shard(self.config, shard, self.repository, options, reporter, token)
                if result.ok or result.busy or result.cancelled or attempt >= attempts.most:
                    break
                log.warning(
                    "run=%s shard=%s attempt %d failed; retrying", run_id, shard.name, attempt
                )
                try:
                    token.sleep(attempts.retry_delay_seconds)
                except Cancelled:
                    result = dataclasses.replace(result, cancelled=True)
                    break
                attempt += 1
        if result.cancelled and not cancel.cancelled:  # the deadline, not a person, stopped it
            error = shard_message(
                shard.name, f"{failed_after(attempt)}: {attempts.deadline_exceeded}"
            )
            return dataclasses.replace(result, cancelled=False, error=error)
        if not (result.ok or result.busy or result.cancelled):
            why = shard_reason(shard.name, result.error or "")
            error = shard_message(shard.name, f"{failed_after(attempt)}: {why}")
            return dataclasses.replace(result, error=error)
        return result
