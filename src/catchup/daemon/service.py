"""The daemon's core: a scheduler loop and a dispatcher running cycles through
an executor, with the run book they share. No HTTP here (see api.py) and no
signals (see process.py), so tests drive it directly.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from catchup.config import Config
from catchup.daemon.archivers import ArchiverPool
from catchup.daemon.dispatch import Clock, Dispatcher
from catchup.daemon.executors import Executor, executor_for
from catchup.daemon.metrics import metrics_registry
from catchup.daemon.runs import Run, RunBook
from catchup.daemon.scheduler import Scheduler
from catchup.repository import Repository
from catchup.repository.retention import future_dated

log = logging.getLogger("catchup.daemon")
TICK_SECONDS = 1.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class Daemon:
    def __init__(
        self,
        config: Config,
        repository: Repository,
        executor: Executor | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.config = config
        self.repository = repository
        self.clock = clock
        self.book = RunBook(config.shards, config.daemon.history)
        # A future-dated backup (see repository/retention.py) must not pose as the freshest.
        self.book.seed([m for m in repository.backups() if not future_dated(m, clock())])
        limit = config.daemon.max_concurrent or config.parallel
        self.dispatcher = Dispatcher(
            self.book, executor or executor_for(config, repository), limit, clock
        )
        self.scheduler = Scheduler(config, self.book, self.dispatcher, clock)
        self.archivers = ArchiverPool(config, repository)
        self.registry = metrics_registry(
            self.book, self.dispatcher, clock, repository.damaged_counts, self.archivers
        )
        self.stopping = threading.Event()
        self.loop_thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    def start(self) -> None:
        self.loop_thread.start()
        self.archivers.start()

    def _loop(self) -> None:
        while not self.stopping.wait(TICK_SECONDS):
            try:
                self.scheduler.tick()
                self.dispatcher.pump()
            except Exception:  # one bad tick must not end scheduling
                log.exception("scheduler tick failed")

    @property
    def ready(self) -> bool:
        return self.loop_thread.is_alive() and not self.stopping.is_set()

    def trigger(self, names: list[str] | None, bootstrap: bool = False) -> Run:
        """Queue a cycle of each named shard (all if None) as a new run."""
        shards = self.config.select(names)
        run = self.book.new_run("api", shards, self.clock(), bootstrap)
        try:
            self.dispatcher.submit(run)
        except Exception:
            self.book.forget(run)
            raise
        log.info("run=%s requested for %s", run.run_id, ", ".join(s.name for s in shards))
        return run

    def cancel(self, run: Run) -> None:
        log.info("run=%s cancel requested", run.run_id)
        self.dispatcher.cancel(run, "cancelled through the API")

    def stop(self, abandon: bool, timeout: float | None = None) -> bool:
        self.stopping.set()
        self.archivers.stop()
        what = "cancelling" if abandon else "waiting for"
        log.info("stopping: %s %d running cycle(s)", what, len(self.dispatcher.running))
        return self.dispatcher.drain(abandon, timeout)
