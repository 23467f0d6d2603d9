"""Turning schedules into runs: each tick, every shard whose next scheduled
cycle is due (and is not already queued or running) joins one new run.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from catchup.config import Config
from catchup.daemon.dispatch import Clock, Dispatcher
from catchup.daemon.runs import Run, RunBook
from catchup.daemon.schedule import Schedule

log = logging.getLogger("catchup.daemon")


class Scheduler:
    def __init__(self, config: Config, book: RunBook, dispatcher: Dispatcher, clock: Clock) -> None:
        self.book = book
        self.dispatcher = dispatcher
        self.clock = clock
        self.schedules = {s.name: Schedule.for_shard(config.schedule, s) for s in config.shards}
        now = clock()
        # A slot counts from the newest backup, so downtime costs one catch-up run, not N.
        self.anchors = {
            name: state.newest.created_at if state.newest else now
            for name, state in book.states.items()
        }

    def due_at(self, shard: str) -> datetime | None:
        state = self.book.states[shard]
        return self.schedules[shard].due_at(shard, self.anchors[shard], state.last_started_at)

    def period(self, shard: str) -> timedelta | None:
        return self.schedules[shard].period(self.clock())

    def allows(self, shard: str, moment: datetime) -> bool:
        return self.schedules[shard].allows(moment)

    def tick(self) -> Run | None:
        """Queue the shards that are due now, as one run."""
        now = self.clock()
        due = []
        for name, state in self.book.states.items():
            at = self.due_at(name)
            if at is None or at > now:
                continue
            self.anchors[name] = now  # this slot is served (or skipped while a cycle runs)
            if self.dispatcher.active(name):
                log.info("shard=%s scheduled cycle skipped: one is already queued or running", name)
                continue
            due.append(state.shard)
        if not due:
            return None
        run = self.book.new_run("schedule", due, now)
        self.dispatcher.submit(run, self.allows)
        log.info("run=%s scheduled for %s", run.run_id, ", ".join(s.name for s in due))
        return run
