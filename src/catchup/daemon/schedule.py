"""When a shard's next scheduled cycle may start: cron, window, minimum
interval and jitter, as pure functions of the time so tests can drive a clock.

Catching up after downtime: the next slot is counted from the last time the
shard's schedule fired (or its newest backup), so however many slots were
missed, the shard is due once, now, and then the schedule resumes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from catchup.config import Schedules, ScheduleSettings, Shard

UTC = ZoneInfo("UTC")


@dataclass(frozen=True)
class Window:
    """Daily hours in which a scheduled cycle may start; may span midnight."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> Window:
        start, end = (time.fromisoformat(part) for part in text.split("-"))
        return cls(start, end)

    def contains(self, moment: datetime) -> bool:
        now = moment.time()
        if self.start <= self.end:
            return self.start <= now < self.end
        return now >= self.start or now < self.end

    def next_open(self, moment: datetime) -> datetime:
        """`moment` if inside the window, else when the window next opens."""
        if self.contains(moment):
            return moment
        opening = moment.replace(
            hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0
        )
        return opening if opening > moment else opening + timedelta(days=1)


@dataclass(frozen=True)
class Schedule:
    cron: str | None
    zone: ZoneInfo
    window: Window | None
    min_interval: timedelta
    jitter_seconds: float

    @classmethod
    def for_shard(cls, schedules: Schedules, shard: Shard) -> Schedule:
        """The shard's own settings, else its keyspace's, else the fleet's, key by key."""
        levels: list[ScheduleSettings] = [
            schedules.shards.get(shard.name) or ScheduleSettings(),
            schedules.keyspaces.get(shard.keyspace) or ScheduleSettings(),
            schedules,
        ]

        def pick(key: str) -> Any:
            return next((v for v in (getattr(lvl, key) for lvl in levels) if v is not None), None)

        window = pick("window")
        return cls(
            cron=pick("cron"),
            zone=ZoneInfo(pick("timezone") or "UTC"),
            window=Window.parse(window) if window else None,
            min_interval=timedelta(minutes=pick("min_interval_minutes") or 0),
            jitter_seconds=pick("jitter_seconds") or 0.0,
        )

    def next_slot(self, after: datetime) -> datetime | None:
        """The first cron time strictly after `after`, in UTC."""
        if self.cron is None:
            return None
        local = after.astimezone(self.zone)
        return croniter(self.cron, local).get_next(datetime).astimezone(UTC)

    def period(self, around: datetime) -> timedelta | None:
        """How far apart slots are near `around`: what "fresh" is measured against."""
        first = self.next_slot(around)
        if first is None:
            return None
        second = self.next_slot(first)
        assert second is not None
        return second - first

    def jitter(self, shard: str, slot: datetime) -> timedelta:
        """The same spread for the same shard and slot, so restarts do not reshuffle."""
        if not self.jitter_seconds:
            return timedelta(0)
        digest = hashlib.sha256(f"{shard}@{slot.isoformat()}".encode()).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2**64
        return timedelta(seconds=fraction * self.jitter_seconds)

    def allows(self, moment: datetime) -> bool:
        """Whether a scheduled cycle may start at `moment` (windows only bind scheduled runs)."""
        return self.window is None or self.window.contains(moment.astimezone(self.zone))

    def due_at(
        self, shard: str, anchor: datetime, last_started: datetime | None
    ) -> datetime | None:
        """When the shard's next scheduled cycle may start.

        `anchor` is when its schedule last fired (or its newest backup was
        taken); `last_started` is when any cycle of it last started.
        """
        slot = self.next_slot(anchor)
        if slot is None:
            return None
        due = slot + self.jitter(shard, slot)
        if last_started is not None:
            due = max(due, last_started + self.min_interval)
        if self.window is not None:
            due = self.window.next_open(due.astimezone(self.zone)).astimezone(UTC)
        return due
