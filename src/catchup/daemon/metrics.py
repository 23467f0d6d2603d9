"""Prometheus metrics, read from the run book at scrape time so they can never
drift from what the API and the status page show.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from catchup.daemon.archivers import ArchiverPool
from catchup.daemon.dispatch import Clock, Dispatcher
from catchup.daemon.runs import FINISHED, RunBook
from catchup.fleet.archiver import ArchiverStatus

SHARD = ["keyspace", "shard"]


DamagedCounts = Callable[[], dict[str, int]]  # per "keyspace/shard", from the last listings


class FleetCollector(Collector):
    def __init__(
        self,
        book: RunBook,
        dispatcher: Dispatcher,
        clock: Clock,
        damaged_counts: DamagedCounts = dict,
        archivers: ArchiverPool | None = None,
    ) -> None:
        self.archivers = archivers
        self.book = book
        self.dispatcher = dispatcher
        self.clock = clock
        self.damaged_counts = damaged_counts

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        last_success = GaugeMetricFamily(
            "catchup_shard_last_success_timestamp_seconds",
            "Unix time of the shard's newest complete backup.",
            labels=SHARD,
        )
        age = GaugeMetricFamily(
            "catchup_shard_backup_age_seconds",
            "Age of the shard's newest complete backup.",
            labels=SHARD,
        )
        phase = GaugeMetricFamily(
            "catchup_shard_phase",
            "1 for the step the shard's cycle is in now ('idle' when none runs).",
            labels=[*SHARD, "phase"],
        )
        durations = GaugeMetricFamily(
            "catchup_shard_phase_duration_seconds",
            "How long each step of the shard's last cycle took.",
            labels=[*SHARD, "phase"],
        )
        pulled = CounterMetricFamily(
            "catchup_shard_source_bytes",
            "Bytes the shard's source sent to cycles run by this daemon.",
            labels=SHARD,
        )
        last_pulled = GaugeMetricFamily(
            "catchup_shard_last_cycle_source_bytes",
            "Bytes the source sent for the shard's last cycle.",
            labels=SHARD,
        )
        data = GaugeMetricFamily(
            "catchup_shard_data_bytes", "Data dir size of the newest backup.", labels=SHARD
        )
        stored = GaugeMetricFamily(
            "catchup_shard_stored_bytes",
            "Stored bytes a restore of the newest backup reads.",
            labels=SHARD,
        )
        added = GaugeMetricFamily(
            "catchup_shard_new_stored_bytes",
            "Stored bytes the newest backup added to the repository (format 3: its new "
            "chunks and its chunk table).",
            labels=SHARD,
        )
        cycles = CounterMetricFamily(
            "catchup_shard_cycles",
            "Cycles run by this daemon, by result.",
            labels=[*SHARD, "result"],
        )
        stalled = GaugeMetricFamily(
            "catchup_shard_catch_up_stalled",
            "1 when the shard's last cycle failed because catch-up made no progress.",
            labels=SHARD,
        )
        damaged = GaugeMetricFamily(
            "catchup_shard_damaged_backups",
            "Backups of the shard whose manifest is damaged or untrusted (skipped), as the "
            "latest listing of the repository found them.",
            labels=SHARD,
        )
        damaged_counts = self.damaged_counts()  # outside the book's lock: it has its own
        with self.book.lock:
            for state in self.book.states.values():
                labels = [state.shard.keyspace, state.shard.shard]
                damaged.add_metric(labels, damaged_counts.get(state.shard.name, 0))
                if state.newest:
                    last_success.add_metric(labels, state.newest.created_at.timestamp())
                    age.add_metric(labels, (now - state.newest.created_at).total_seconds())
                    data.add_metric(labels, state.newest.data_bytes)
                    stored.add_metric(labels, state.newest.stored_bytes)
                    if state.newest.new_stored_bytes is not None:
                        added.add_metric(labels, state.newest.new_stored_bytes)
                phase.add_metric([*labels, state.phase or "idle"], 1)
                for step, seconds in state.last_durations.items():
                    durations.add_metric([*labels, step], seconds)
                pulled.add_metric(labels, state.bytes_from_source_total)
                if state.history:
                    last_pulled.add_metric(labels, state.history[-1].bytes_from_source)
                for result in FINISHED:
                    cycles.add_metric([*labels, result], state.cycles[result])
                stalled.add_metric(labels, int(state.stalled))
            running = GaugeMetricFamily("catchup_cycles_running", "Cycles running now, fleet-wide.")
            running.add_metric([], len(self.dispatcher.running))
            queued = GaugeMetricFamily(
                "catchup_queue_length", "Cycles waiting for a free slot or their window."
            )
            queued.add_metric([], self.dispatcher.queue_length())
        yield from (last_success, age, phase, durations, pulled, last_pulled, data, stored, added)
        yield from (cycles, stalled, damaged, running, queued)
        if self.archivers is not None:
            yield from archive_metrics(self.archivers.statuses, now)


def archive_metrics(statuses: dict[str, ArchiverStatus], now: datetime) -> Iterator[Metric]:
    lag = GaugeMetricFamily(
        "catchup_archive_lag_seconds",
        "Now minus the commit time of the newest archived transaction, while log the "
        "source sent waits to be stored (0 when the archive holds all of it).",
        labels=SHARD,
    )
    up = GaugeMetricFamily(
        "catchup_archive_up", "1 while the shard's archiver is streaming.", labels=SHARD
    )
    newest = GaugeMetricFamily(
        "catchup_archive_newest_commit_timestamp_seconds",
        "Unix commit time of the newest archived transaction.",
        labels=SHARD,
    )
    flushed = GaugeMetricFamily(
        "catchup_archive_last_flush_timestamp_seconds",
        "Unix time the archiver last stored everything it had received.",
        labels=SHARD,
    )
    pending = GaugeMetricFamily(
        "catchup_archive_pending_bytes", "Log received but not yet stored.", labels=SHARD
    )
    archived = CounterMetricFamily(
        "catchup_archive_bytes", "Log bytes stored by this process's archiver.", labels=SHARD
    )
    gaps = CounterMetricFamily(
        "catchup_archive_gaps", "Gaps this process's archiver recorded.", labels=SHARD
    )
    restarts = CounterMetricFamily(
        "catchup_archive_restarts", "Times the shard's archiver was restarted.", labels=SHARD
    )
    for name, status in statuses.items():
        keyspace, _, shard = name.partition("/")
        labels = [keyspace, shard]
        with status.lock:
            lag.add_metric(labels, status.lag_seconds(now))
            up.add_metric(labels, int(status.state == "streaming"))
            if status.newest_commit:
                newest.add_metric(labels, status.newest_commit.timestamp())
            if status.last_flush:
                flushed.add_metric(labels, status.last_flush.timestamp())
            pending.add_metric(labels, status.pending_bytes)
            archived.add_metric(labels, status.archived_bytes)
            gaps.add_metric(labels, status.gaps)
            restarts.add_metric(labels, status.restarts)
    yield from (lag, up, newest, flushed, pending, archived, gaps, restarts)


class ArchiveCollector(Collector):
    """The archive metrics alone, for a `catchup archive` process."""

    def __init__(self, statuses: dict[str, ArchiverStatus]) -> None:
        self.statuses = statuses

    def collect(self) -> Iterator[Metric]:
        yield from archive_metrics(self.statuses, datetime.now(UTC))


def metrics_registry(
    book: RunBook,
    dispatcher: Dispatcher,
    clock: Clock,
    damaged_counts: DamagedCounts = dict,
    archivers: ArchiverPool | None = None,
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(book, dispatcher, clock, damaged_counts, archivers))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
