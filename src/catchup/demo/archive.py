"""The demo's log archive: an archiver per shard from the first backup on; the moment
in the middle of the workload that a point-in-time restore must reproduce; the RPO
measured when the workload ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from catchup.cancel import CancelToken
from catchup.config import Config, Shard
from catchup.daemon.archivers import ArchiverPool
from catchup.demo.sandbox import Sandbox
from catchup.engines import LogTarget
from catchup.engines.registry import engine_for
from catchup.pitr import check_instance, replay_to
from catchup.repository import Repository

# MariaDB's binlog stamps whole seconds: the moment is kept this far from the writes on
# either side of it, so a restore to it is exact on every engine.
QUIET_SECONDS = 1.2


@dataclass(frozen=True)
class Moment:
    """A source's state at a time in the middle of the workload."""

    time: datetime
    checksums: dict[str, int | None]


@dataclass
class PitrProof:
    shard: str
    target: datetime
    backup_id: str = ""
    position: str = ""
    checksums_equal: bool = False
    findings_ok: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.checksums_equal and self.findings_ok and self.error is None


@contextmanager
def archiving(config: Config, repository: Repository) -> Iterator[ArchiverPool]:
    """Every shard's archiver, from now until the block ends."""
    pool = ArchiverPool(config, repository)
    pool.start()
    try:
        yield pool
    finally:
        pool.stop()


def capture_moment(sources: list[Sandbox]) -> list[Moment]:
    """Each source's state now, between two quiet spells (see QUIET_SECONDS)."""
    time.sleep(QUIET_SECONDS)
    moments = [Moment(datetime.now(UTC), source.checksums()) for source in sources]
    time.sleep(QUIET_SECONDS)
    return moments


def measure_rpo(
    pool: ArchiverPool, shards: list[Shard], sources: list[Sandbox], timeout: float = 120.0
) -> dict[str, float | None]:
    """Per shard, the seconds from now (the workload just ended) until the archive held
    the source's position: what a crash of the sources now would have lost. None: not
    reached within `timeout`."""
    started = time.monotonic()
    targets = {
        shard.name: (
            engine_for(shard.engine),
            engine_for(shard.engine).parse_position(src.position()),
        )
        for shard, src in zip(shards, sources, strict=True)
    }
    found: dict[str, float | None] = {}
    while len(found) < len(targets) and time.monotonic() - started < timeout:
        for name, (engine, target) in targets.items():
            if name in found:
                continue
            status = pool.statuses[name]
            with status.lock:
                position = status.position
            order = engine.compare_positions(position, target) if position else None
            if order is not None and order >= 0:
                found[name] = round(time.monotonic() - started, 3)
        time.sleep(0.05)
    return {name: found.get(name) for name in targets}


def prove_point_in_time(
    config: Config,
    repository: Repository,
    shard: Shard,
    moment: Moment,
    cancel: CancelToken,
) -> PitrProof:
    """Restore `shard` to `moment` on an ephemeral instance; compare every table."""
    proof = PitrProof(shard.name, moment.time)
    try:
        result = replay_to(
            config, shard, repository, LogTarget(time=moment.time), cancel, check_instance(True)
        )
    except Exception as exc:  # the demo reports it as not verified, with the reason
        proof.error = f"{type(exc).__name__}: {exc}"
        return proof
    proof.backup_id, proof.position = result.backup_id, result.position
    proof.findings_ok = all(f.ok for f in result.findings)
    proof.checksums_equal = result.checksums == moment.checksums
    return proof
