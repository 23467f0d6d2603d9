"""A backup's chunk table: for every file in manifest order, its chunks in file order.

One record is 52 bytes, big-endian:

    id (32) | pack number (u32: index into the manifest's `packs`) | offset (u64)
            | stored size (u32) | plaintext size (u32)

The table is stored as one object beside the manifest, compressed and encrypted like
any object (codec.encode), so a 10 TB shard's manifest stays small and the table is
streamed, never held in memory.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Iterator
from typing import BinaryIO, NamedTuple

from catchup.errors import IntegrityError
from catchup.repository.chunks.packs import PackedChunk, PackNames
from catchup.streams import Readable, Writable

RECORD = struct.Struct(">32sIQII")
BATCH = 4096  # records read at a time


class ChunkRecord(NamedTuple):
    id: bytes
    pack: int
    offset: int
    stored: int
    size: int


class TableSpool:
    """Records written by many threads, a unit (a stretch of one file) at a time, and
    copied into the table in unit order; numbers the packs in order of first use."""

    def __init__(self, spool: BinaryIO) -> None:
        self.spool = spool
        self.units: dict[int, tuple[int, int]] = {}  # unit → (spool offset, records)
        self.packs = PackNames()
        self._lock = threading.Lock()

    def append(self, unit: int, chunks: Iterable[PackedChunk]) -> None:
        with self._lock:
            data = b"".join(
                RECORD.pack(c.id, self.packs.number(c.pack), c.offset, c.stored, c.size)
                for c in chunks
            )
            self.spool.seek(0, 2)
            self.units[unit] = (self.spool.tell(), len(data) // RECORD.size)
            self.spool.write(data)

    def count(self, unit: int) -> int:
        return self.units[unit][1]

    def copy_to(self, sink: Writable, units: Iterable[int]) -> int:
        """Write the units' records in the given order; returns the number of records."""
        total = 0
        for unit in units:
            offset, count = self.units[unit]
            self.spool.seek(offset)
            sink.write(self.spool.read(count * RECORD.size))
            total += count
        return total


def read_records(source: Readable, name: str) -> Iterator[ChunkRecord]:
    while data := source.read(RECORD.size * BATCH):
        if len(data) % RECORD.size:
            raise IntegrityError(f"chunk table {name} ends inside a record: damaged")
        for fields in RECORD.iter_unpack(data):
            yield ChunkRecord(*fields)
