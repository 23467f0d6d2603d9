"""What the chunk index costs at scale: memory, disk and time, for a shard of --tb TB.

Usage: .venv/bin/python bench/chunk_index.py [--tb 1] [--chunk-kib 256] [--json]

A format 3 backup keeps the chunks it may reuse in an on-disk SQLite index
(src/catchup/repository/chunks/index.py) instead of in memory. This fills one with
the chunks of a --tb TB shard (--tb TB / chunk size records, as the parent's
chunk table would), then looks every one of them up as a steady backup does (a changed
chunk: the rest are compared with the parent's chunk at their place and never
reach the index), found, plus as many misses, and reports peak RSS (this process, which holds
nothing else), the index's size on disk, and the rates. Memory does not grow with
--tb: only SQLite's page cache (CACHE_MIB) and a batch of rows are resident.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import blake3

from catchup.repository.chunks.index import CACHE_MIB, ChunkIndex
from catchup.repository.chunks.packs import PackedChunk

BATCH = 100_000


def chunk_id(number: int) -> bytes:
    return blake3.blake3(number.to_bytes(8, "big")).digest()


def measure(tb: float, chunk_kib: int, scratch: Path) -> dict[str, float]:
    chunks = int(tb * (1 << 40) / (chunk_kib << 10))
    index = ChunkIndex(scratch / "index.sqlite")
    started = time.monotonic()
    for first in range(0, chunks, BATCH):
        index.load(
            PackedChunk(chunk_id(n), f"pack-{n // 256}", (n % 256) << 18, 90_000, chunk_kib << 10)
            for n in range(first, min(chunks, first + BATCH))
        )
    filled = time.monotonic() - started
    disk = os.path.getsize(scratch / "index.sqlite")
    started = time.monotonic()
    step = max(1, chunks // 1_000_000)  # a sample of a million lookups
    sampled = range(0, chunks, step)
    hits = sum(index.find(chunk_id(n)) is not None for n in sampled)
    misses = sum(index.find(chunk_id(chunks + n)) is None for n in sampled)
    looked = time.monotonic() - started
    index.close()
    assert hits == len(sampled) and misses == len(sampled)
    return {
        "tb": tb,
        "chunk_kib": chunk_kib,
        "chunks": chunks,
        "fill_seconds": round(filled, 1),
        "fill_per_second": round(chunks / filled),
        "lookups_per_second": round(2 * len(sampled) / looked),
        "index_disk_mib": round(disk / 2**20),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "sqlite_cache_mib": CACHE_MIB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tb", type=float, default=1.0)
    parser.add_argument("--chunk-kib", type=int, default=256)
    parser.add_argument("--work", type=Path, default=None, help="where the index goes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work) as scratch:
        result = measure(args.tb, args.chunk_kib, Path(scratch))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:20} {value}")


if __name__ == "__main__":
    main()
