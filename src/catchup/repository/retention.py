"""Which backups retention lets go, and which backups are dated in the future.

A backup is kept while it is among its shard's `min_count` newest complete
backups or younger than `min_age`; the newest complete backup of a shard is
never removed, whatever the settings.

A backup dated more than FUTURE_TOLERANCE ahead of now (a writer's clock was
wrong, this host's clock is slow, or someone forged it) is *future-dated*. Its
real age is unknown, so it must neither stay `latest` nor shield other backups:
it is never `latest` and it ranks after every present-dated backup of its
shard. Retention removes one only when it is *far* in the future, more than
max(FAR_FUTURE, min_age) ahead of now: a forgery dated 2999 expires, but a
backup that merely looks early because one clock is off by minutes or hours
(maybe this host's, and the backup was just committed) is never removed by
retention; it is kept until the clocks agree and it ages like any other.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from catchup.repository.layout import backup_time
from catchup.repository.manifest import Manifest

FUTURE_TOLERANCE = timedelta(minutes=10)
FAR_FUTURE = timedelta(days=1)


def backup_id_time(backup_id: str) -> datetime | None:
    """The UTC time a backup id starts with ("20261124T023647009Z-…"), if it parses."""
    try:
        return backup_time(backup_id)
    except ValueError:
        return None


def dated(manifest: Manifest) -> datetime:
    """The later of the backup's id time and its `created_at`: both must be believable."""
    return max(filter(None, (backup_id_time(manifest.backup_id), manifest.created_at)))


def future_dated(manifest: Manifest, now: datetime) -> bool:
    return dated(manifest) > now + FUTURE_TOLERANCE


def expired_backups(
    backups: list[Manifest], min_count: int, min_age: timedelta, now: datetime
) -> list[Manifest]:
    by_shard: dict[str, list[Manifest]] = defaultdict(list)
    for manifest in backups:
        by_shard[manifest.shard_name].append(manifest)
    expired = []
    for chain in by_shard.values():
        newest_first = sorted(
            chain, key=lambda m: (not future_dated(m, now), m.backup_id), reverse=True
        )
        for rank, manifest in enumerate(newest_first):
            if future_dated(manifest, now):
                old_enough = dated(manifest) > now + max(FAR_FUTURE, min_age)
            else:
                old_enough = now - manifest.created_at >= min_age
            if rank >= max(1, min_count) and old_enough:
                expired.append(manifest)
    return sorted(expired, key=lambda m: m.backup_id)
