"""File-level chunk snapshots of a data dir for several chunkings, and the bytes a
content-addressed repository would have to add to hold a new snapshot.

A chunking cuts every file of the data dir into chunks: fixed sizes (page-aligned,
as repository format 3 does) or content-defined (FastCDC, from the `fastcdc` package,
installed only for this measurement). A chunk is known by the BLAKE3 hash of its
bytes; a repository stores each distinct chunk once, so what a new snapshot adds is
the distinct chunks the previous one did not have.
"""

from __future__ import annotations

import mmap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import zstandard

from dedup_parts.files import listing

KIB = 1024

Cutter = Callable[[memoryview], Iterator[tuple[int, int]]]  # -> (offset, length)


@dataclass(frozen=True)
class Chunking:
    name: str
    size: int  # the fixed size, or FastCDC's average
    content_defined: bool = False

    def cutter(self) -> Cutter:
        if not self.content_defined:
            return lambda data: (
                (o, min(self.size, len(data) - o)) for o in range(0, len(data), self.size)
            )
        from fastcdc import fastcdc  # only for this measurement; not a catchup dependency

        return lambda data: ((c.offset, c.length) for c in fastcdc(data, avg_size=self.size))


SWEEP = [
    Chunking("fixed 16 KiB", 16 * KIB),
    Chunking("fixed 64 KiB", 64 * KIB),
    Chunking("fixed 256 KiB", 256 * KIB),
    Chunking("fixed 1 MiB", 1024 * KIB),
    Chunking("FastCDC avg 64 KiB", 64 * KIB, content_defined=True),
    Chunking("FastCDC avg 256 KiB", 256 * KIB, content_defined=True),
]


@dataclass
class Snapshot:
    """One chunking of one data dir: its distinct chunks, and against a previous
    snapshot, what is new (raw bytes, zstd -1 bytes, per file)."""

    chunking: Chunking
    digests: set[bytes] = field(default_factory=set)
    data_bytes: int = 0
    chunks: int = 0  # chunks of the data dir (each file's, duplicates included)
    seconds: float = 0.0  # reading, cutting and hashing
    new_bytes: int = 0
    new_zstd_bytes: int = 0
    new_by_file: Counter[str] = field(default_factory=Counter)

    @property
    def mib_per_second(self) -> float:
        return self.data_bytes / (1 << 20) / self.seconds if self.seconds else 0.0


def files_of(data_dir: Path) -> list[Path]:
    """The files catchup's backup step would store (dedup_parts/files.py)."""
    return sorted(data_dir / name for name, _, _ in listing(data_dir).files)


def snapshot(data_dir: Path, chunking: Chunking, previous: Snapshot | None = None) -> Snapshot:
    """Cut and hash every file of `data_dir`; with `previous`, count what is new.
    (The zstd of new chunks is outside the timed part: a throughput is hashing's.)"""
    cut = chunking.cutter()
    shot = Snapshot(chunking)
    compressor = zstandard.ZstdCompressor(level=1)
    timed = 0.0
    for path in files_of(data_dir):
        size = path.stat().st_size
        shot.data_bytes += size
        if size == 0:
            continue
        with (
            path.open("rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
        ):
            data = memoryview(mapped)
            started = time.perf_counter()
            pieces = [(o, n, blake3.blake3(data[o : o + n]).digest()) for o, n in cut(data)]
            timed += time.perf_counter() - started
            shot.chunks += len(pieces)
            for offset, length, digest in pieces:
                if digest in shot.digests:
                    continue
                shot.digests.add(digest)
                if previous is not None and digest not in previous.digests:
                    shot.new_bytes += length
                    shot.new_by_file[str(path.relative_to(data_dir))] += length
                    shot.new_zstd_bytes += len(compressor.compress(data[offset : offset + length]))
            del data, pieces
    shot.seconds = timed
    return shot
