"""The queue between triggers and executors: at most `limit` cycles at once
fleet-wide and at most one per shard; a queued scheduled cycle starts only
inside its window.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from catchup.daemon.executors import Executor
from catchup.daemon.runs import Run, RunBook, ShardRun
from catchup.errors import ShardBusyError
from catchup.fleet.run import ShardResult

log = logging.getLogger("catchup.daemon")

Clock = Callable[[], datetime]


Allowed = Callable[[str, datetime], bool]  # may this shard's queued cycle start now?


def always(shard: str, moment: datetime) -> bool:
    return True


@dataclass
class Request:
    """One shard's cycle in a run, queued or running."""

    run: Run
    shard_run: ShardRun
    allowed: Allowed = always

    @property
    def shard(self) -> str:
        return self.shard_run.shard.name


class BookReporter:
    """Steps and progress of a running cycle, into the run book."""

    def __init__(self, book: RunBook, shard_run: ShardRun) -> None:
        self.book = book
        self.shard_run = shard_run

    def step(self, shard: str, step: str) -> None:
        log.info("run=%s shard=%s step=%s", self.shard_run.run_id, shard, step)
        self.book.stepped(self.shard_run, step)

    def progress(self, shard: str, done: int, total: int) -> None:
        self.book.progressed(self.shard_run, done, total)

    def warn(self, shard: str, message: str) -> None:
        log.warning("run=%s shard=%s %s", self.shard_run.run_id, shard, message)


class Dispatcher:
    def __init__(self, book: RunBook, executor: Executor, limit: int, clock: Clock) -> None:
        self.book = book
        self.executor = executor
        self.limit = limit
        self.clock = clock
        self.queue: list[Request] = []
        self.running: dict[str, Request] = {}
        self.accepting = True
        self.idle = threading.Condition(book.lock)
        self.pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="cycle")

    def active(self, shard: str) -> bool:
        with self.book.lock:
            return shard in self.running or any(request.shard == shard for request in self.queue)

    def submit(self, run: Run, allowed: Allowed = always) -> None:
        """Queue every shard of `run`, or none if any of them is queued or running."""
        with self.book.lock:
            if not self.accepting:
                raise ShardBusyError("the daemon is shutting down")
            busy = [name for name in run.shards if self.active(name)]
            if busy:
                raise ShardBusyError(
                    f"{', '.join(busy)}: a cycle is already queued or running; wait for it"
                )
            self.queue += [Request(run, shard_run, allowed) for shard_run in run.shards.values()]
        self.pump()

    def pump(self) -> None:
        """Start queued cycles while there is room and their window is open."""
        now = self.clock()
        with self.book.lock:
            for request in list(self.queue):
                if len(self.running) >= self.limit:
                    break
                if request.run.cancel.cancelled:
                    self.queue.remove(request)
                    self.book.dropped(request.shard_run, now)
                elif request.allowed(request.shard, now):
                    self.queue.remove(request)
                    self.running[request.shard] = request
                    self.book.started(request.shard_run, now)
                    self.pool.submit(self._work, request)
            self.idle.notify_all()

    def _work(self, request: Request) -> None:
        try:
            result = self.executor.execute(
                request.shard_run.shard,
                request.run.run_id,
                request.run.bootstrap,
                BookReporter(self.book, request.shard_run),
                request.run.cancel,
            )
        except Exception as exc:  # an executor bug must not wedge the shard forever
            log.exception("run=%s shard=%s executor failed", request.run.run_id, request.shard)
            result = ShardResult.failure(request.shard, time.monotonic(), f"executor: {exc}")
        with self.book.lock:
            self.book.finished(request.shard_run, result, self.clock())
            del self.running[request.shard]
        self.pump()

    def cancel(self, run: Run, reason: str) -> None:
        run.cancel.cancel(reason)
        self.pump()  # drops the run's queued cycles now, not when a slot frees

    def queue_length(self) -> int:
        with self.book.lock:
            return len(self.queue)

    def drain(self, abandon: bool, timeout: float | None = None) -> bool:
        """Stop taking work, drop what is queued, and wait for running cycles.

        With `abandon`, running cycles are cancelled and unwind through their
        cleanup (no half backup, no server left); otherwise they finish.
        Returns whether everything stopped within `timeout`.
        """
        with self.book.lock:
            self.accepting = False
            now = self.clock()
            for request in self.queue:
                self.book.dropped(request.shard_run, now)
            self.queue.clear()
            if abandon:
                for request in self.running.values():
                    request.run.cancel.cancel("the daemon is stopping")
            done = self.idle.wait_for(lambda: not self.running, timeout)
        self.pool.shutdown(wait=done)
        return done
