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


# --- format 3: the chunks a shard's backups share (repository/chunks/) -------------------

CHUNK_TABLE = "chunks.zst"  # a backup's chunk table, under its prefix
PACK_NAME = re.compile(r"^\d{8}T\d{9}Z-[0-9a-f]{16}$")
CHUNK_KEY_ID = re.compile(r"^c-\d{8}T\d{9}Z-[0-9a-f]{16}$")


def chunks_prefix(keyspace: str, shard: str) -> str:
    return f"{keyspace}/{shard}/chunks/"


def new_pack_name(now: datetime | None = None) -> str:
    """Like a backup id, so packs sort by the time they were started."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z-{secrets.token_hex(8)}"


def pack_time(name: str) -> datetime:
    return backup_time(name)


def pack_key(keyspace: str, shard: str, name: str) -> str:
    return f"{chunks_prefix(keyspace, shard)}packs/{name}.pack"


def pack_index_key(keyspace: str, shard: str, name: str) -> str:
    return f"{chunks_prefix(keyspace, shard)}packs/{name}.index"


def chunk_key_object(keyspace: str, shard: str, key_id: str) -> str:
    return f"{chunks_prefix(keyspace, shard)}keys/{key_id}.json"
