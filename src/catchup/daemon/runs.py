"""What the daemon knows: runs (a set of shards backed up on one trigger), the
state of each shard in a run, and each shard's freshness and recent cycles.

Everything here is read by the API, the metrics and the status page while
worker threads write it, so one lock guards the whole book.
"""

from __future__ import annotations

import secrets
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from catchup.cancel import CancelToken
from catchup.config import Shard
from catchup.fleet.run import ShardResult
from catchup.repository import Manifest

ShardRunState = Literal["queued", "running", "succeeded", "failed", "busy", "cancelled"]
FINISHED = ("succeeded", "failed", "busy", "cancelled")
KEPT_RUNS = 1000  # finished runs remembered for the API; older ones are forgotten
Trigger = Literal["api", "schedule"]


@dataclass
class ShardRun:
    """One shard's cycle within a run."""

    shard: Shard
    run_id: str
    state: ShardRunState = "queued"
    step: str | None = None
    progress: tuple[int, int] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: ShardResult | None = None


@dataclass
class Run:
    run_id: str
    trigger: Trigger
    created_at: datetime
    cancel: CancelToken
    bootstrap: bool = False
    shards: dict[str, ShardRun] = field(default_factory=dict)

    @property
    def state(self) -> str:
        states = {s.state for s in self.shards.values()}
        if not states <= set(FINISHED):
            return "running" if states - {"queued"} else "queued"
        if self.cancel.cancelled and "cancelled" in states:
            return "cancelled"
        return "succeeded" if states == {"succeeded"} else "failed"


@dataclass(frozen=True)
class CycleRecord:
    """One finished cycle, as the status page charts it."""

    finished_at: datetime
    ok: bool
    seconds: float
    bytes_from_source: int
    data_bytes: int
    kind: str | None

    @classmethod
    def of_manifest(cls, manifest: Manifest) -> CycleRecord:
        return cls(
            finished_at=manifest.created_at,
            ok=True,
            seconds=round((manifest.created_at - manifest.started_at).total_seconds(), 3),
            bytes_from_source=manifest.bytes_from_source,
            data_bytes=manifest.data_bytes,
            kind=manifest.kind,
        )


@dataclass(frozen=True)
class NewestBackup:
    backup_id: str
    created_at: datetime
    data_bytes: int
    stored_bytes: int
    new_stored_bytes: int | None = None  # format 3: what the backup added to the store

    @classmethod
    def of_manifest(cls, manifest: Manifest) -> NewestBackup:
        return cls(
            manifest.backup_id,
            manifest.created_at,
            manifest.data_bytes,
            manifest.stored_bytes,
            manifest.new_stored_bytes,
        )


@dataclass
class ShardState:
    """A shard's freshness, its last result and what it is doing now."""

    shard: Shard
    history: deque[CycleRecord]
    newest: NewestBackup | None = None
    last_result: str | None = None
    last_error: str | None = None
    last_finished_at: datetime | None = None
    last_started_at: datetime | None = None
    last_durations: dict[str, float] = field(default_factory=dict)
    phase: str | None = None
    stalled: bool = False
    cycles: Counter[str] = field(default_factory=Counter)
    bytes_from_source_total: int = 0


class RunBook:
    def __init__(self, shards: list[Shard], history: int) -> None:
        self.lock = threading.RLock()
        self.runs: dict[str, Run] = {}
        self.states = {s.name: ShardState(s, deque(maxlen=history)) for s in shards}

    def seed(self, manifests: list[Manifest]) -> None:
        """Freshness and recent cycles from the repository, oldest first."""
        with self.lock:
            for manifest in manifests:
                state = self.states.get(manifest.shard_name)
                if state is None:
                    continue  # a shard no longer in the config
                state.history.append(CycleRecord.of_manifest(manifest))
                state.newest = NewestBackup.of_manifest(manifest)
                state.last_durations = dict(manifest.durations)
                state.last_started_at = manifest.started_at

    def new_run(
        self, trigger: Trigger, shards: list[Shard], now: datetime, bootstrap: bool = False
    ) -> Run:
        run = Run(f"run-{secrets.token_hex(6)}", trigger, now, CancelToken(), bootstrap)
        run.shards = {s.name: ShardRun(s, run.run_id) for s in shards}
        with self.lock:
            self.runs[run.run_id] = run
            ended = [r for r in self.runs.values() if r.state not in ("queued", "running")]
            for old in sorted(ended, key=lambda r: r.created_at)[: max(0, len(ended) - KEPT_RUNS)]:
                del self.runs[old.run_id]
        return run

    def started(self, shard_run: ShardRun, now: datetime) -> None:
        with self.lock:
            shard_run.state, shard_run.started_at = "running", now
            state = self.states[shard_run.shard.name]
            state.last_started_at, state.phase = now, "starting"

    def stepped(self, shard_run: ShardRun, step: str) -> None:
        with self.lock:
            shard_run.step, shard_run.progress = step, None
            self.states[shard_run.shard.name].phase = step

    def progressed(self, shard_run: ShardRun, done: int, total: int) -> None:
        with self.lock:
            shard_run.progress = (done, total)

    def finished(self, shard_run: ShardRun, result: ShardResult, now: datetime) -> None:
        with self.lock:
            shard_run.result, shard_run.finished_at = result, now
            shard_run.state = outcome(result)
            state = self.states[shard_run.shard.name]
            state.phase = None
            state.cycles[shard_run.state] += 1
            state.last_result, state.last_finished_at = shard_run.state, now
            state.last_error = result.error
            state.stalled = result.stalled
            state.bytes_from_source_total += result.bytes_from_source
            if result.durations:
                state.last_durations = dict(result.durations)
            if result.ok and result.backup_id:
                state.newest = NewestBackup(
                    result.backup_id,
                    now,
                    result.data_bytes,
                    result.stored_bytes,
                    result.new_stored_bytes,
                )
            if result.ok or result.bytes_from_source:
                state.history.append(
                    CycleRecord(
                        now,
                        result.ok,
                        result.seconds,
                        result.bytes_from_source,
                        result.data_bytes,
                        result.kind,
                    )
                )

    def dropped(self, shard_run: ShardRun, now: datetime) -> None:
        """A queued cycle that never started: its run was cancelled or the daemon stopped."""
        with self.lock:
            shard_run.state, shard_run.finished_at = "cancelled", now

    def forget(self, run: Run) -> None:
        with self.lock:
            self.runs.pop(run.run_id, None)

    def run(self, run_id: str) -> Run | None:
        with self.lock:
            return self.runs.get(run_id)

    def recent_runs(self, limit: int) -> list[Run]:
        with self.lock:
            return sorted(self.runs.values(), key=lambda r: r.created_at, reverse=True)[:limit]


def outcome(result: ShardResult) -> ShardRunState:
    if result.ok:
        return "succeeded"
    if result.busy:
        return "busy"
    return "cancelled" if result.cancelled else "failed"
