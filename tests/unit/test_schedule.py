"""Schedules with a controllable clock: cron slots in a time zone, windows,
minimum interval, jitter, no pile-up after downtime, and the dispatcher's
limits (N at once fleet-wide, one per shard)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from catchup.config import parse_config
from catchup.daemon.dispatch import Dispatcher
from catchup.daemon.runs import RunBook
from catchup.daemon.schedule import Schedule
from catchup.daemon.scheduler import Scheduler
from catchup.errors import ShardBusyError
from catchup.fleet.run import ShardResult


def config(schedule: str = "", shards: int = 1, extra: str = ""):
    import tomllib

    text = 'repository = "/tmp/r"\n' + extra + schedule
    for i in range(shards):
        text += f'[[shards]]\nkeyspace = "ks"\nshard = "s{i}"\nsource = "db{i}:3306"\n'
    return parse_config(tomllib.loads(text))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class HeldExecutor:
    """Records which shards started; each cycle ends when the test releases it."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.release: dict[str, threading.Event] = {}
        self.lock = threading.Lock()

    def execute(self, shard, run_id, bootstrap, reporter, cancel):
        with self.lock:
            self.started.append(shard.name)
            event = self.release.setdefault(shard.name, threading.Event())
        reporter.step(shard.name, "catch_up")
        while not event.wait(0.01):
            if cancel.cancelled:
                return ShardResult(shard.name, ok=False, seconds=0, cancelled=True, error="x")
        event.clear()
        return ShardResult(shard.name, ok=True, seconds=1, backup_id="b", kind="catchup")

    def finish(self, name: str) -> None:
        with self.lock:
            self.release.setdefault(name, threading.Event()).set()


def daemon_parts(cfg, clock, limit: int = 2):
    book = RunBook(cfg.shards, 10)
    executor = HeldExecutor()
    dispatcher = Dispatcher(book, executor, limit, clock)
    return book, executor, dispatcher, Scheduler(cfg, book, dispatcher, clock)


def dispatching(shards: int, limit: int):
    """A config of `shards` shards, a clock stopped at 10:00 and a daemon's parts that
    dispatch at most `limit` cycles at once."""
    cfg = config(shards=shards)
    clock = Clock(at("2026-11-24T10:00:00"))
    return cfg, clock, *daemon_parts(cfg, clock, limit)


def wait_until(predicate, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def only(cfg) -> Schedule:
    return Schedule.for_shard(cfg.schedule, cfg.shards[0])


def test_cron_slots_follow_the_time_zone():
    cfg = config('[schedule]\ncron = "0 2 * * *"\ntimezone = "Europe/Paris"\n')
    # 02:00 in Paris is 01:00 UTC in winter.
    assert only(cfg).next_slot(at("2026-11-24T00:00:00")) == at("2026-11-24T01:00:00")
    assert only(cfg).period(at("2026-11-24T00:00:00")) == timedelta(days=1)


def test_a_slot_outside_the_window_waits_for_it_to_open():
    cfg = config('[schedule]\ncron = "0 * * * *"\nwindow = "01:00-05:00"\n')
    schedule = only(cfg)
    assert schedule.due_at("ks/s0", at("2026-11-24T01:10:00"), None) == at("2026-11-24T02:00:00")
    # Slot 06:00 is past the window: it waits for 01:00 the next day.
    assert schedule.due_at("ks/s0", at("2026-11-24T05:30:00"), None) == at("2026-11-25T01:00:00")


def test_a_window_may_span_midnight():
    cfg = config('[schedule]\ncron = "*/30 * * * *"\nwindow = "22:00-02:00"\n')
    schedule = only(cfg)
    assert schedule.allows(at("2026-11-24T23:30:00"))
    assert schedule.allows(at("2026-11-25T01:59:00"))
    assert not schedule.allows(at("2026-11-25T02:00:00"))
    assert schedule.due_at("ks/s0", at("2026-11-24T12:00:00"), None) == at("2026-11-24T22:00:00")


def test_minimum_interval_holds_back_the_next_slot():
    cfg = config('[schedule]\ncron = "*/10 * * * *"\nmin_interval_minutes = 25\n')
    started = at("2026-11-24T10:00:00")
    assert only(cfg).due_at("ks/s0", started, started) == at("2026-11-24T10:25:00")


def test_jitter_is_bounded_and_stable_per_shard_and_slot():
    cfg = config('[schedule]\ncron = "0 * * * *"\njitter_seconds = 600\n', shards=2)
    a, b = (Schedule.for_shard(cfg.schedule, s) for s in cfg.shards)
    anchor = at("2026-11-24T10:00:00")
    due_a, due_b = a.due_at("ks/s0", anchor, None), b.due_at("ks/s1", anchor, None)
    slot = at("2026-11-24T11:00:00")
    assert slot <= due_a <= slot + timedelta(seconds=600)
    assert slot <= due_b <= slot + timedelta(seconds=600)
    assert due_a != due_b  # shards spread out
    assert a.due_at("ks/s0", anchor, None) == due_a  # and a restart does not reshuffle


def test_shard_and_keyspace_overrides_inherit_key_by_key():
    cfg = config(
        '[schedule]\ncron = "0 2 * * *"\ntimezone = "Asia/Tokyo"\nwindow = "01:00-05:00"\n'
        '[schedule.keyspaces.ks]\ncron = "0 3 * * *"\n'
        '[schedule.shards."ks/s1"]\nwindow = "00:00-23:00"\n',
        shards=2,
    )
    s0, s1 = (Schedule.for_shard(cfg.schedule, s) for s in cfg.shards)
    assert s0.cron == s1.cron == "0 3 * * *"
    assert str(s1.zone) == "Asia/Tokyo"
    assert s0.window and s0.window.end.hour == 5
    assert s1.window and s1.window.end.hour == 23


def test_no_schedule_means_only_on_request():
    cfg = config()
    assert only(cfg).due_at("ks/s0", at("2026-11-24T00:00:00"), None) is None


def test_after_downtime_missed_slots_run_once_not_n_times():
    cfg = config('[schedule]\ncron = "0 * * * *"\n')
    clock = Clock(at("2026-11-24T10:00:30"))
    _book, executor, dispatcher, scheduler = daemon_parts(cfg, clock)
    # The newest backup is three days old: 72 hourly slots were missed.
    scheduler.anchors["ks/s0"] = at("2026-11-21T10:00:00")
    run = scheduler.tick()
    assert run is not None and run.trigger == "schedule"
    wait_until(lambda: executor.started == ["ks/s0"])
    executor.finish("ks/s0")
    wait_until(lambda: not dispatcher.running)
    for _ in range(10):  # later ticks in the same hour start nothing
        clock.advance(minutes=5)
        if clock.now < at("2026-11-24T11:00:00"):
            assert scheduler.tick() is None
    clock.now = at("2026-11-24T11:00:01")
    assert scheduler.tick() is not None
    wait_until(lambda: executor.started == ["ks/s0", "ks/s0"])
    executor.finish("ks/s0")
    assert dispatcher.drain(abandon=False, timeout=5)


def test_a_due_shard_waits_for_its_window_and_then_starts():
    cfg = config('[schedule]\ncron = "0 * * * *"\nwindow = "01:00-05:00"\n')
    clock = Clock(at("2026-11-24T05:30:00"))
    _book, executor, dispatcher, scheduler = daemon_parts(cfg, clock)
    scheduler.anchors["ks/s0"] = at("2026-11-24T04:00:00")  # slot 05:00 was missed
    assert scheduler.tick() is None
    assert scheduler.due_at("ks/s0") == at("2026-11-25T01:00:00")
    clock.now = at("2026-11-25T01:00:00")
    assert scheduler.tick() is not None
    wait_until(lambda: executor.started == ["ks/s0"])
    executor.finish("ks/s0")
    assert dispatcher.drain(abandon=False, timeout=5)


def test_at_most_n_cycles_at_once_and_one_per_shard():
    cfg, clock, book, executor, dispatcher, _ = dispatching(shards=4, limit=2)
    run = book.new_run("api", cfg.shards, clock())
    dispatcher.submit(run)
    wait_until(lambda: len(executor.started) == 2)
    assert dispatcher.queue_length() == 2
    with pytest.raises(ShardBusyError):
        dispatcher.submit(book.new_run("api", [cfg.shards[3]], clock()))  # queued
    with pytest.raises(ShardBusyError):
        dispatcher.submit(book.new_run("api", [cfg.shards[0]], clock()))  # running
    executor.finish("ks/s0")
    wait_until(lambda: len(executor.started) == 3)
    assert len(dispatcher.running) == 2
    for name in ("ks/s1", "ks/s2", "ks/s3"):
        executor.finish(name)
    wait_until(lambda: run.state == "succeeded")
    assert book.states["ks/s0"].cycles["succeeded"] == 1


def test_cancelling_a_run_drops_queued_cycles_and_cancels_running_ones():
    cfg, clock, book, executor, dispatcher, _ = dispatching(shards=3, limit=1)
    run = book.new_run("api", cfg.shards, clock())
    dispatcher.submit(run)
    wait_until(lambda: executor.started == ["ks/s0"])
    dispatcher.cancel(run, "test")
    wait_until(lambda: run.state == "cancelled")
    assert executor.started == ["ks/s0"]
    assert [s.state for s in run.shards.values()] == ["cancelled"] * 3


def test_drain_abandon_cancels_running_cycles_and_refuses_new_work():
    cfg, clock, book, executor, dispatcher, _ = dispatching(shards=2, limit=1)
    dispatcher.submit(book.new_run("api", cfg.shards, clock()))
    wait_until(lambda: executor.started == ["ks/s0"])
    assert dispatcher.drain(abandon=True, timeout=5)
    assert executor.started == ["ks/s0"]
    with pytest.raises(ShardBusyError, match="shutting down"):
        dispatcher.submit(book.new_run("api", cfg.shards, clock()))
