"""The chunks a backup may reuse, on disk, so that memory stays bounded whatever the
shard's size.

A 10 TB shard at 256 KiB chunks has 40 million chunks: as Python objects that is
gigabytes; in SQLite it is a table on the work dir's disk and a page cache of
CACHE_MIB. Most chunks never reach it: a backup first compares each chunk with the
parent's chunk at the same place of the same file (ParentChunks in backup.py), and
asks the index only about chunks that changed there (moved content, zero pages, a
renamed table, what a failed attempt stored). The parent's chunks are loaded in
bulk and indexed once, after the load: measured in bench/chunk_index.py.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from catchup.repository.chunks.packs import PackedChunk, PackNames

CACHE_MIB = 16
BATCH = 50_000


class ChunkIndex:
    """id → where a reusable chunk lies; and the tallies a backup and a check need."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{CACHE_MIB << 10}"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute("PRAGMA temp_store=FILE")
        self._db.execute(
            "CREATE TABLE chunk (id BLOB, pack INTEGER, offset INTEGER, stored INTEGER,"
            " size INTEGER)"
        )
        self._db.execute(
            "CREATE TABLE reference (pack INTEGER, offset INTEGER, id BLOB, stored INTEGER,"
            " size INTEGER, PRIMARY KEY (pack, offset)) WITHOUT ROWID"
        )
        self._indexed = False
        self._packs = PackNames()

    def close(self) -> None:
        self._db.close()
        self.path.unlink(missing_ok=True)

    def load(self, chunks: Iterable[PackedChunk]) -> None:
        """Reusable chunks, in bulk, before the first lookup (appended, indexed later)."""
        assert not self._indexed, "load before the first lookup"
        self._insert("chunk", ((c.id, c.pack, c.offset, c.stored, c.size) for c in chunks))

    def find(self, chunk_id: bytes) -> PackedChunk | None:
        with self._lock:
            self._index()
            row = self._db.execute(
                "SELECT pack, offset, stored, size FROM chunk WHERE id = ? LIMIT 1", (chunk_id,)
            ).fetchone()
        if row is None:
            return None
        return PackedChunk(chunk_id, self._packs.names[row[0]], row[1], row[2], row[3])

    def stored(self, chunk: PackedChunk) -> None:
        """A chunk the backup just stored: reusable by its later files."""
        with self._lock:
            self._index()
            self._db.execute(
                "INSERT INTO chunk VALUES (?, ?, ?, ?, ?)",
                (chunk.id, self._packs.number(chunk.pack), chunk.offset, chunk.stored, chunk.size),
            )

    def refer(self, chunks: Iterable[PackedChunk]) -> None:
        """Chunks that a backup references; each stored copy is kept once."""
        self._insert(
            "reference",
            ((c.pack, c.offset, c.id, c.stored, c.size) for c in chunks),
            "OR IGNORE",
        )

    def references(self) -> Iterator[PackedChunk]:
        """Every referenced stored chunk once, by pack and offset."""
        cursor = self._db.execute(
            "SELECT pack, offset, id, stored, size FROM reference ORDER BY pack, offset"
        )
        for row in cursor:
            yield PackedChunk(row[2], self._packs.names[row[0]], row[1], row[3], row[4])

    def used_bytes(self) -> dict[str, int]:
        """Per pack, the stored bytes of the distinct chunks referenced."""
        rows = self._db.execute("SELECT pack, SUM(stored) FROM reference GROUP BY pack")
        return {self._packs.names[pack]: int(total) for pack, total in rows}

    def _insert(self, table: str, rows: Iterable[tuple[object, ...]], conflict: str = "") -> None:
        """Rows in transactions of BATCH; a pack name becomes its number."""
        batch: list[tuple[object, ...]] = []
        statement = f"INSERT {conflict} INTO {table} VALUES (?, ?, ?, ?, ?)"
        pack_column = 1 if table == "chunk" else 0
        with self._lock:
            for row in rows:
                values = list(row)
                values[pack_column] = self._packs.number(str(values[pack_column]))
                batch.append(tuple(values))
                if len(batch) == BATCH:
                    self._commit(statement, batch)
                    batch = []
            self._commit(statement, batch)

    def _commit(self, statement: str, batch: list[tuple[object, ...]]) -> None:
        self._db.execute("BEGIN")
        self._db.executemany(statement, batch)
        self._db.execute("COMMIT")

    def _index(self) -> None:
        if not self._indexed:
            self._db.execute("CREATE INDEX chunk_id ON chunk (id)")
            self._indexed = True
