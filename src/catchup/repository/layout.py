"""Where things live in a store: `<keyspace>/<shard>/<backup-id>/…`.

Backup ids are UTC timestamps with a random suffix, so they sort by time and
two writers never collide.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

MANIFEST = "manifest.json"
BACKUP_ID = re.compile(r"^\d{8}T\d{6}\d{3}Z-[0-9a-f]{6}$")


def new_backup_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def backup_time(backup_id: str) -> datetime:
    """When the backup's upload began, from its id."""
    return datetime.strptime(backup_id[:18], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)


def shard_prefix(keyspace: str, shard: str) -> str:
    return f"{keyspace}/{shard}/"


def backup_prefix(keyspace: str, shard: str, backup_id: str) -> str:
    return f"{keyspace}/{shard}/{backup_id}/"


def object_key(index: int) -> str:
    return f"data/{index:06d}.zst"


def parse_key(key: str) -> tuple[str, str, str, str] | None:
    """(keyspace, shard, backup_id, rest) for a key inside a backup, else None."""
    parts = key.split("/", 3)
    if len(parts) == 4 and BACKUP_ID.match(parts[2]):
        return parts[0], parts[1], parts[2], parts[3]
    return None
