"""The daemon's log archivers: one thread per archived shard, each restarted with backoff
by `fleet.archiver.supervise`, all stopped with the daemon."""

from __future__ import annotations

import threading

from catchup.cancel import CancelToken
from catchup.config import Config
from catchup.fleet.archiver import ArchiverStatus, supervise
from catchup.repository import Repository


class ArchiverPool:
    def __init__(self, config: Config, repository: Repository) -> None:
        self.config, self.repository = config, repository
        self.cancel = CancelToken()
        self.statuses = {
            shard.name: ArchiverStatus(shard.name)
            for shard in config.shards
            if config.archived(shard)
        }
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for shard in self.config.shards:
            status = self.statuses.get(shard.name)
            if status is None:
                continue
            thread = threading.Thread(
                target=supervise,
                args=(self.config, shard, self.repository, self.cancel, status),
                name=f"archive-{shard.keyspace}-{shard.shard}",
                daemon=True,
            )
            thread.start()
            self.threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every archiver: each stores what it holds at its next tick, or drops it
        (the next run streams it again from the archive's end)."""
        self.cancel.cancel("the daemon is stopping")
        for thread in self.threads:
            thread.join(timeout)

    def summaries(self) -> dict[str, dict[str, object]]:
        result = {}
        for name, status in self.statuses.items():
            with status.lock:
                result[name] = status.summary()
        return result
