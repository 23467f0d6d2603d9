"""Retention over the whole repository, and removal of incomplete leftovers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from catchup.errors import ShardBusyError
from catchup.fleet.lock import shard_lock
from catchup.repository import Repository
from catchup.repository.retention import expired_backups


@dataclass
class PruneResult:
    removed: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    kept: int = 0


def prune(
    repository: Repository,
    work_dir: Path,
    min_count: int,
    min_age: timedelta,
    dry_run: bool,
    now: datetime | None = None,
) -> PruneResult:
    """Remove expired backups and incomplete prefixes; never a shard's newest complete backup.

    An incomplete prefix may be a backup being written right now, so a shard
    whose lock is held is skipped.
    """
    now = now or datetime.now(UTC)
    backups = repository.backups()
    expired = expired_backups(backups, min_count, min_age, now)
    targets = [(m.keyspace, m.shard, m.backup_id, "expired") for m in expired]
    targets += [(ks, sh, bid, "incomplete") for ks, sh, bid in repository.incomplete()]
    result = PruneResult(kept=len(backups) - len(expired))
    for keyspace, shard, backup_id, reason in targets:
        entry = {"shard": f"{keyspace}/{shard}", "id": backup_id, "reason": reason}
        try:
            with shard_lock(work_dir, keyspace, shard):
                if not dry_run:
                    repository.delete(keyspace, shard, backup_id)
        except ShardBusyError:
            result.skipped.append({**entry, "reason": "shard is being backed up"})
            continue
        result.removed.append(entry)
    return result
