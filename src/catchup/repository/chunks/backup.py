"""Storing a data dir as chunks: every file is read and hashed, and only the chunks the
shard does not hold yet are compressed, sealed and packed.

Work is cut into units (UNIT bytes of one file) so that one large file is read by
all threads. Two threads that meet the same new chunk (zero pages are everywhere)
store it once: the second waits for the first.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from catchup.repository.chunks.index import ChunkIndex
from catchup.repository.chunks.keys import ChunkKey
from catchup.repository.chunks.packs import PackedChunk, PackWriter
from catchup.repository.chunks.table import RECORD, ChunkRecord, TableSpool
from catchup.repository.manifest import ChunkedFile
from catchup.repository.transfer import ByteCounter, DataDirError, DataDirListing, run_parallel

UNIT = 64 << 20


@dataclass(frozen=True)
class Unit:
    number: int
    file: int  # index into the listing's files
    start: int
    end: int


def units_of(listing: DataDirListing, chunk_size: int) -> list[Unit]:
    step = max(chunk_size, UNIT - UNIT % chunk_size)
    units: list[Unit] = []
    for index, (_, size, _) in enumerate(listing.files):
        for start in range(0, size, step):
            units.append(Unit(len(units), index, start, min(size, start + step)))
    return units


class ParentChunks:
    """The parent backup's chunks by place: file path and chunk number. Read from its
    decoded chunk table with positioned reads, a unit's worth at a time."""

    def __init__(self, table: BinaryIO, files: list[ChunkedFile], packs: list[str | None]):
        self.fd = table.fileno()
        self.files = {entry.path: entry for entry in files}
        self.packs = packs  # None: a pack not to reuse (gone, or too sparse)

    def at(self, path: str, first: int, count: int) -> list[PackedChunk | None]:
        entry = self.files.get(path)
        if entry is None or first >= entry.count:
            return [None] * count
        available = min(count, entry.count - first)
        data = os.pread(self.fd, available * RECORD.size, (entry.first + first) * RECORD.size)
        found: list[PackedChunk | None] = []
        for record in map(ChunkRecord._make, RECORD.iter_unpack(data)):
            pack = self.packs[record.pack] if record.pack < len(self.packs) else None
            found.append(
                None
                if pack is None
                else PackedChunk(record.id, pack, record.offset, record.stored, record.size)
            )
        return found + [None] * (count - available)


class ChunkStorer:
    """Finds each chunk (at its place in the parent, else in the index), or stores it
    once, whichever thread meets it first."""

    def __init__(self, index: ChunkIndex, packs: PackWriter, key: ChunkKey, level: int) -> None:
        self.index, self.packs, self.key, self.level = index, packs, key, level
        self.new_bytes = 0
        self._lock = threading.Lock()
        self._pending: dict[bytes, threading.Event] = {}
        self._local = threading.local()

    def place(self, data: memoryview, parent: PackedChunk | None) -> PackedChunk:
        chunk_id = self.key.chunk_id(data)
        if parent is not None and parent.id == chunk_id and parent.size == len(data):
            return parent  # unchanged since the parent: the common case, no lookup
        while True:
            with self._lock:
                found = self.index.find(chunk_id)
                if found is not None:
                    return found
                waiting = self._pending.get(chunk_id)
                if waiting is None:
                    self._pending[chunk_id] = threading.Event()
                    break
            waiting.wait()  # another thread is storing this very chunk
        try:
            return self._store(chunk_id, data)
        finally:
            with self._lock:
                self._pending.pop(chunk_id).set()

    def _store(self, chunk_id: bytes, data: memoryview) -> PackedChunk:
        compressed = self._compressor().compress(data)
        chunk = self.packs.add(chunk_id, self.key.seal(chunk_id, compressed), len(data))
        self.index.stored(chunk)
        with self._lock:
            self.new_bytes += chunk.stored
        return chunk

    def _compressor(self) -> zstandard.ZstdCompressor:
        compressor: zstandard.ZstdCompressor | None = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = self._local.compressor = zstandard.ZstdCompressor(level=self.level)
        return compressor


def store_files(
    root: Path,
    listing: DataDirListing,
    storer: ChunkStorer,
    spool: TableSpool,
    parent: ParentChunks | None,
    chunk_size: int,
    jobs: int,
    progress: ByteCounter | None = None,
) -> list[ChunkedFile]:
    """Chunk every listed file; returns the files' manifest entries (records numbered in
    unit order, which is file order)."""
    units = units_of(listing, chunk_size)

    def store_unit(unit: Unit) -> None:
        rel, size, _ = listing.files[unit.file]
        buffer = bytearray(chunk_size)
        chunks: list[PackedChunk] = []
        first = unit.start // chunk_size
        count = -(-(unit.end - unit.start) // chunk_size)
        before = parent.at(rel, first, count) if parent else [None] * count
        with open(root / rel, "rb") as source, memoryview(buffer) as view:
            source.seek(unit.start)
            position = unit.start
            while position < unit.end:
                want = min(chunk_size, unit.end - position)
                read = source.readinto(view[:want])
                if read != want:
                    raise DataDirError(
                        f"'{rel}' in the data dir shrank while it was backed up (it had "
                        f"{size} bytes); is a server still running on it?"
                    )
                chunks.append(storer.place(view[:want], before[len(chunks)]))
                position += want
                if progress:
                    progress(want)
            if unit.end == size and os.fstat(source.fileno()).st_size != size:
                raise DataDirError(
                    f"'{rel}' in the data dir changed size while it was backed up; is a "
                    "server still running on it?"
                )
        spool.append(unit.number, chunks)

    # Largest files first, so that no big file is left running alone at the end.
    order = sorted(units, key=lambda u: (-listing.files[u.file][1], u.number))
    run_parallel(store_unit, [(u,) for u in order], jobs)
    files: list[ChunkedFile] = []
    by_file: dict[int, int] = {}
    for unit in units:
        by_file[unit.file] = by_file.get(unit.file, 0) + spool.count(unit.number)
    first = 0
    for index, (rel, size, mode) in enumerate(listing.files):
        count = by_file.get(index, 0)
        files.append(ChunkedFile(path=rel, size=size, mode=mode, first=first, count=count))
        first += count
    return files
