"""The chunks a backup may reuse, on disk, so that memory stays bounded whatever the
shard's size.

A 10 TB shard at 256 KiB chunks has 40 million chunks: as Python objects that is
gigabytes, in SQLite (a table keyed by the 32-byte id, without rowids) about 3 GB of
disk and a page cache of CACHE_MIB. A lookup costs microseconds, against the
milliseconds a chunk takes to read and hash.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from catchup.repository.chunks.packs import PackedChunk

CACHE_MIB = 16


class ChunkIndex:
    """id → where the chunk lies, and whether the backup being written uses it yet."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{CACHE_MIB << 10}"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute("PRAGMA temp_store=FILE")
        self._db.execute(
            "CREATE TABLE chunk (id BLOB PRIMARY KEY, pack INTEGER, offset INTEGER,"
            " stored INTEGER, size INTEGER, used INTEGER) WITHOUT ROWID"
        )
        self._db.execute(
            "CREATE TABLE reference (pack INTEGER, offset INTEGER, id BLOB, stored INTEGER,"
            " size INTEGER, PRIMARY KEY (pack, offset)) WITHOUT ROWID"
        )
        self._packs: dict[str, int] = {}
        self._names: list[str] = []

    def close(self) -> None:
        self._db.close()
        self.path.unlink(missing_ok=True)

    def pack_number(self, name: str) -> int:
        number = self._packs.get(name)
        if number is None:
            number = self._packs[name] = len(self._names)
            self._names.append(name)
        return number

    def add(self, chunks: Iterable[PackedChunk]) -> None:
        """Chunks that may be reused (a chunk known twice keeps its first place)."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO chunk VALUES (?, ?, ?, ?, ?, 0)",
                ((c.id, self.pack_number(c.pack), c.offset, c.stored, c.size) for c in chunks),
            )
            self._db.execute("COMMIT")

    def use(self, chunk_id: bytes) -> tuple[PackedChunk, bool] | None:
        """Where the chunk lies, and True if this is the backup's first use of it."""
        with self._lock:
            row = self._db.execute(
                "SELECT pack, offset, stored, size, used FROM chunk WHERE id = ?", (chunk_id,)
            ).fetchone()
            if row is None:
                return None
            if not row[4]:
                self._db.execute("UPDATE chunk SET used = 1 WHERE id = ?", (chunk_id,))
        return PackedChunk(chunk_id, self._names[row[0]], row[1], row[2], row[3]), not row[4]

    def stored(self, chunk: PackedChunk) -> None:
        """A chunk the backup just stored: used, and reusable by its later files."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO chunk VALUES (?, ?, ?, ?, ?, 1)",
                (chunk.id, self.pack_number(chunk.pack), chunk.offset, chunk.stored, chunk.size),
            )

    def refer(self, chunks: Iterable[PackedChunk]) -> None:
        """Chunks that backups reference, each stored copy kept once: what a check reads."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO reference VALUES (?, ?, ?, ?, ?)",
                ((self.pack_number(c.pack), c.offset, c.id, c.stored, c.size) for c in chunks),
            )
            self._db.execute("COMMIT")

    def references(self) -> Iterator[PackedChunk]:
        """Every referenced stored chunk once, by pack and offset."""
        cursor = self._db.execute(
            "SELECT pack, offset, id, stored, size FROM reference ORDER BY pack, offset"
        )
        for row in cursor:
            yield PackedChunk(row[2], self._names[row[0]], row[1], row[3], row[4])
