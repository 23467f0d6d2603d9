"""Which backups retention lets go.

A backup is kept while it is among its shard's `min_count` newest complete
backups or younger than `min_age`; the newest complete backup of a shard is
never removed, whatever the settings.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from catchup.repository.manifest import Manifest


def expired_backups(
    backups: list[Manifest], min_count: int, min_age: timedelta, now: datetime
) -> list[Manifest]:
    by_shard: dict[str, list[Manifest]] = defaultdict(list)
    for manifest in backups:
        by_shard[manifest.shard_name].append(manifest)
    expired = []
    for chain in by_shard.values():
        newest_first = sorted(chain, key=lambda m: m.backup_id, reverse=True)
        for rank, manifest in enumerate(newest_first):
            if rank >= max(1, min_count) and now - manifest.created_at >= min_age:
                expired.append(manifest)
    return sorted(expired, key=lambda m: m.backup_id)
