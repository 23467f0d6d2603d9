"""The log archive as cycles use it: what it holds after a backup, and waiting for a
live archiver to store a checkpoint."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from catchup.cancel import CancelToken
from catchup.config import Config, Shard
from catchup.engines.registry import engine_for
from catchup.errors import ArchiveGapError
from catchup.repository import Manifest, Repository
from catchup.repository.archive import ArchiveIndex, ArchiveRecord, pieces_for_replay


def archived_after(
    repository: Repository, shard: Shard, parent: Manifest, index: ArchiveIndex | None = None
) -> tuple[ArchiveIndex | None, list[ArchiveRecord]]:
    """The shard's archived log after `parent`, in the stretch holding its position."""
    index = index or repository.archive_index(shard.keyspace, shard.shard)
    if not index.records:
        return None, []
    engine = engine_for(shard.engine)
    try:
        return index, pieces_for_replay(index, engine.compare_positions, parent.position)
    except ArchiveGapError:  # a file's start was pruned: the source alone, as without
        return index, []


def wait_for_archive(
    repository: Repository,
    shard: Shard,
    index: ArchiveIndex,
    position: str,
    config: Config,
    cancel: CancelToken,
) -> ArchiveIndex:
    """`index`, extended until it holds `position`, while an archiver is storing: for at
    most three flush intervals and 5 s, and only while the archive grows (no new record
    within two flush intervals: no archiver runs, stop waiting). An archive nobody wrote
    to lately is not waited for."""
    flush = config.archive.flush_seconds
    last = index.records[-1] if index.records else None
    live = max(timedelta(minutes=1), timedelta(seconds=10 * flush))
    if last is None or datetime.now(UTC) - last.written_at > live:
        return index
    compare = engine_for(shard.engine).compare_positions
    started = time.monotonic()
    deadline, quiet_until = started + 3 * flush + 5, started + 2 * flush + 2
    while True:
        end = index.end
        order = compare(end.position, position) if end else None
        now = time.monotonic()
        if (order is not None and order >= 0) or now > deadline or now > quiet_until:
            return index
        cancel.sleep(min(1.0, flush / 2))
        seen = index.top
        index = repository.archive_index(shard.keyspace, shard.shard, known=index)
        if index.top > seen:
            quiet_until = time.monotonic() + 2 * flush + 2
