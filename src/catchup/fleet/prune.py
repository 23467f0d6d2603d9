"""Retention over the whole repository, and removal of incomplete leftovers.

Each shard is decided on under its shard lock (the flock and the repository
lease that every writer takes), from a listing made after the lock was taken:
a backup committed a moment earlier is seen, and no upload is running while
its incomplete prefix is judged. A busy shard is skipped and reported; the
others go on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from catchup.engines.registry import engine_for
from catchup.errors import ShardBusyError
from catchup.fleet.lease import Held, LeaseLostError
from catchup.fleet.lock import shard_lock
from catchup.repository import Manifest, Repository
from catchup.repository.archive import delete_records, expired_records
from catchup.repository.layout import backup_time
from catchup.repository.retention import expired_backups

log = logging.getLogger("catchup.prune")
DEFAULT_GRACE = timedelta(hours=6)
DEFAULT_LEASE_SECONDS = 120.0


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
    incomplete_grace: timedelta = DEFAULT_GRACE,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    pitr: timedelta = timedelta(0),
) -> PruneResult:
    """Remove expired backups and incomplete prefixes; never a shard's newest complete backup.

    An incomplete prefix goes only when it is older than `incomplete_grace` (its
    id says when its upload began) and the shard lock is held, so no live writer
    can be uploading into it. A first look without the lock finds the shards with
    something to remove; `dry_run` stops there and says what would go now.

    `pitr`: keep what a point-in-time restore to any moment of that long ago needs,
    the newest backup before it included. The log archive is kept from the oldest
    kept backup's position on; older records and pieces go under the same lock.
    """
    policy = Policy(min_count, min_age, incomplete_grace, now or datetime.now(UTC), pitr)
    result = PruneResult()
    for keyspace, shard in repository.shards():  # each is then listed on its own
        plan = PruneResult()
        _prune_shard(repository, keyspace, shard, policy, plan, None)
        if dry_run or not plan.removed:  # a shard with nothing to remove needs no lock
            result.kept += plan.kept
            result.removed += plan.removed
            result.skipped += plan.skipped
            continue
        try:
            with shard_lock(work_dir, repository.store, keyspace, shard, lease_seconds) as held:
                _prune_shard(repository, keyspace, shard, policy, result, held)
        except (ShardBusyError, LeaseLostError) as exc:
            log.warning("prune skipped %s/%s: %s", keyspace, shard, exc)
            result.skipped.append(
                {"shard": f"{keyspace}/{shard}", "id": "*", "reason": f"shard is busy: {exc}"}
            )
    return result


@dataclass(frozen=True)
class Policy:
    min_count: int
    min_age: timedelta
    incomplete_grace: timedelta
    now: datetime
    pitr: timedelta = timedelta(0)


def _prune_shard(
    repository: Repository,
    keyspace: str,
    shard: str,
    policy: Policy,
    result: PruneResult,
    held: Held | None,
) -> None:
    """List the shard afresh, decide, and delete under `held` (None: a dry run)."""
    name = f"{keyspace}/{shard}"
    catalog = repository.catalog(keyspace, shard)
    backups = catalog.backups
    expired = expired_backups(
        backups, policy.min_count, max(policy.min_age, policy.pitr), policy.now
    )
    if policy.pitr:
        # The base of a restore to exactly `pitr` ago is the newest backup before then.
        cutoff = policy.now - policy.pitr
        bases = [m for m in backups if m.created_at <= cutoff]
        if bases and bases[-1] in expired:
            expired.remove(bases[-1])
    result.kept += len(backups) - len(expired)
    targets = [(m.backup_id, "expired") for m in expired]
    for _, _, backup_id in repository.incomplete(keyspace, shard):
        if policy.now - backup_time(backup_id) >= policy.incomplete_grace:
            targets.append((backup_id, "incomplete"))
            continue
        hours = policy.incomplete_grace.total_seconds() / 3600
        why = f"incomplete, younger than retention.incomplete_grace_hours ({hours:g} h)"
        result.skipped.append({"shard": name, "id": backup_id, "reason": why})
    for backup_id, reason in targets:
        if held is not None:
            if reason == "incomplete":
                held.confirm()  # still ours, so no writer can have started since the listing
            repository.delete(keyspace, shard, backup_id)
        result.removed.append({"shard": name, "id": backup_id, "reason": reason})
    kept = [m for m in backups if m not in expired]
    if catalog.damaged:
        why = (
            f"{len(catalog.damaged)} damaged backup(s) may name any pack; no pack is removed "
            "until they are repaired or deleted (`catchup list`)"
        )
        result.skipped.append({"shard": name, "id": "packs", "reason": why})
    else:
        _collect_packs(repository, keyspace, shard, kept, policy.now, result, held)
    if kept:
        _prune_archive(repository, keyspace, shard, kept[0], result, held)


def _collect_packs(
    repository: Repository,
    keyspace: str,
    shard: str,
    kept: list[Manifest],
    now: datetime,
    result: PruneResult,
    held: Held | None,
) -> None:
    """Format 3: the packs no kept backup names, once older than the safety window (a
    backup being written, or retried, may reuse younger ones)."""
    garbage = repository.chunks.garbage(keyspace, shard, kept, now)
    if not garbage:
        return
    if held is not None:
        held.confirm()  # still ours: no writer can have started since the listing
        repository.delete_packs(keyspace, shard, garbage)
    window = repository.chunk_settings.gc_window_minutes
    result.removed.append(
        {
            "shard": f"{keyspace}/{shard}",
            "id": f"{len(garbage)} packs",
            "reason": f"named by no kept backup, older than chunks.gc_window_minutes ({window:g})",
        }
    )


def _prune_archive(
    repository: Repository,
    keyspace: str,
    shard: str,
    oldest_kept: Manifest,
    result: PruneResult,
    held: Held | None,
) -> None:
    """The archived log before the oldest kept backup: no restore can start before it."""
    index = repository.archive_index(keyspace, shard)
    if not index.records:
        return
    engine = engine_for(oldest_kept.engine)
    records = expired_records(index, engine.compare_positions, oldest_kept.position)
    if not records:
        return
    if held is not None:
        delete_records(repository.store, index, records)
    result.removed.append(
        {
            "shard": f"{keyspace}/{shard}",
            "id": f"archive records {records[0].seq}-{records[-1].seq}",
            "reason": f"log before the oldest kept backup {oldest_kept.backup_id}",
        }
    )
