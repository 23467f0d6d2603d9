"""Reading chunks back: ranged reads of packs, in parallel, every chunk authenticated
and rehashed to its id before a byte of it is written.

A *run* is consecutive chunks of one pack fetched with one ranged read (up to RUN
bytes, through gaps of up to GAP). A restore walks the chunk table once, file by
file, and keeps at most `jobs * 2` runs in flight, so memory stays bounded by a few
runs per thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import zstandard

from catchup.codec.encryption import DecryptionError
from catchup.errors import IntegrityError
from catchup.repository.chunks.keys import ChunkKey
from catchup.repository.chunks.packs import PackedChunk
from catchup.repository.chunks.table import ChunkRecord
from catchup.repository.layout import pack_key
from catchup.repository.manifest import ChunkedFile
from catchup.repository.transfer import PERMISSIONS, ByteCounter, RestoreTarget
from catchup.storage import ObjectNotFound, Store

T = TypeVar("T")
RUN = 16 << 20
# After many cycles a file's unchanged chunks lie in older packs, in order, with gaps where
# chunks changed: reading through a small gap costs less than another request.
GAP = 1 << 20
WINDOW = 1024  # chunks of a file fetched in pack order, by one thread: 256 MiB by default


@dataclass
class PackRun:
    pack: str
    chunks: list[PackedChunk] = field(default_factory=list)
    places: list[int] = field(default_factory=list)  # file offset of each chunk
    output: OpenFile | None = None

    @property
    def start(self) -> int:
        return self.chunks[0].offset

    @property
    def end(self) -> int:
        return self.chunks[-1].offset + self.chunks[-1].stored

    def extends(self, chunk: PackedChunk) -> bool:
        """Whether one read can fetch `chunk` too: the same pack, after this run's end by
        at most GAP bytes (read and dropped: one request instead of two)."""
        return (
            chunk.pack == self.pack
            and self.end <= chunk.offset <= self.end + GAP
            and chunk.offset + chunk.stored - self.start <= RUN
        )


class OpenFile:
    """A file being restored: closed, with its recorded mode, after its last run."""

    def __init__(self, fd: int, entry: ChunkedFile) -> None:
        self.fd, self.entry = fd, entry
        self.pending = 0
        self.complete = False  # every run of it was handed out
        self._lock = threading.Lock()

    def add_run(self) -> None:
        with self._lock:
            self.pending += 1

    def finish_run(self) -> None:
        with self._lock:
            self.pending -= 1
            self._close_if_done()

    def handed_out(self) -> None:
        with self._lock:
            self.complete = True
            self._close_if_done()

    def _close_if_done(self) -> None:
        if self.complete and self.pending == 0 and self.fd >= 0:
            os.fchmod(self.fd, self.entry.mode & PERMISSIONS)  # only once every chunk matched
            os.close(self.fd)
            self.fd = -1

    def abandon(self) -> None:
        with self._lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


class ChunkReader:
    """Fetches runs and opens their chunks: authentication, decompression, id."""

    def __init__(self, store: Store, key: ChunkKey, keyspace: str, shard: str) -> None:
        self.store, self.key, self.keyspace, self.shard = store, key, keyspace, shard
        self._local = threading.local()

    def fetch(self, run: PackRun) -> Iterator[tuple[PackedChunk, memoryview]]:
        name = pack_key(self.keyspace, self.shard, run.pack)
        buffer = self._buffer(run.end - run.start)
        try:
            count = self.store.read_range(name, run.start, buffer)
        except ObjectNotFound:
            raise IntegrityError(
                f"pack {run.pack} is missing from the repository; the backups that use it "
                "are damaged"
            ) from None
        if count != run.end - run.start:
            raise IntegrityError(
                f"pack {run.pack} is shorter than its chunks need ({run.start + count} "
                f"of {run.end} bytes): truncated or replaced"
            )
        for chunk in run.chunks:
            begin = chunk.offset - run.start
            yield chunk, buffer[begin : begin + chunk.stored]

    def _buffer(self, size: int) -> memoryview:
        """This thread's read buffer (RUN bytes, or more for one large chunk)."""
        found: bytearray | None = getattr(self._local, "buffer", None)
        if found is None or len(found) < size:
            found = self._local.buffer = bytearray(max(size, RUN))
        return memoryview(found)[:size]

    def open(
        self, chunk: PackedChunk, blob: memoryview, output: memoryview | None = None
    ) -> memoryview:
        """The chunk's plaintext, checked, decompressed into `output` (by default this
        thread's scratch buffer, valid until its next chunk): no allocation per chunk."""
        where = f"chunk {chunk.id.hex()[:16]}… at {chunk.pack}+{chunk.offset}"
        if output is None:
            output = self._output(chunk.size)
        try:
            compressed = self.key.open(chunk.id, blob)
            with self._decompressor().stream_reader(compressed) as frame:
                size = 0
                while size < chunk.size and (count := frame.readinto(output[size:])):
                    size += count
                if size == chunk.size and frame.read(1):
                    size += 1  # more than the record says
        except DecryptionError:
            raise IntegrityError(
                f"{where} failed authentication: the pack was altered, swapped or belongs "
                "to another shard or key"
            ) from None
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{where} is corrupt: {exc}") from None
        plain = output[: chunk.size]
        if size != chunk.size or self.key.chunk_id(plain) != chunk.id:
            raise IntegrityError(f"{where} does not match its id: the pack was altered or swapped")
        return plain

    def _output(self, size: int) -> memoryview:
        found: bytearray | None = getattr(self._local, "output", None)
        if found is None or len(found) < size:
            found = self._local.output = bytearray(size)
        return memoryview(found)[:size]

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        found: zstandard.ZstdDecompressor | None = getattr(self._local, "decompressor", None)
        if found is None:
            found = self._local.decompressor = zstandard.ZstdDecompressor()
        return found


def file_runs(
    entry: ChunkedFile, records: Iterable[ChunkRecord], packs: list[str]
) -> Iterator[list[PackRun]]:
    """A file's chunks as runs, each with the file offsets its chunks go to, a WINDOW of
    the file at a time (one thread writes a window: no two write one stretch at once).

    After many cycles a file's chunks come from many packs, interleaved; within each
    WINDOW of the file they are taken in pack and offset order, so that the chunks of
    one older pack are fetched together instead of one request between each two of
    another pack's."""
    window: list[tuple[PackedChunk, int]] = []
    place = 0
    for record in records:
        if record.pack >= len(packs):
            raise IntegrityError(
                f"file {entry.path!r} names pack number {record.pack}, which the manifest "
                "does not list: altered"
            )
        chunk = PackedChunk(
            record.id, packs[record.pack], record.offset, record.stored, record.size
        )
        window.append((chunk, place))
        place += record.size
        if len(window) == WINDOW:
            yield list(runs_of(window))
            window = []
    if window:
        yield list(runs_of(window))
    if place != entry.size:
        raise IntegrityError(
            f"file {entry.path!r}: its chunks hold {place} bytes, not the {entry.size} its "
            "manifest entry says: altered"
        )


def _take(records: Iterator[ChunkRecord], entry: ChunkedFile) -> Iterator[ChunkRecord]:
    for _ in range(entry.count):
        record = next(records, None)
        if record is None:
            raise IntegrityError(
                f"the chunk table ends before the chunks of {entry.path!r}: altered"
            )
        yield record


def runs_of(chunks: Iterable[tuple[PackedChunk, int]]) -> Iterator[PackRun]:
    """Chunks and the file offsets they go to, as runs, in pack and offset order."""
    return _runs(sorted(chunks, key=lambda item: (item[0].pack, item[0].offset)))


def stored_runs(chunks: Iterable[PackedChunk]) -> Iterator[PackRun]:
    """Chunks already in pack and offset order (a check: nothing is written), as runs."""
    return _runs((chunk, 0) for chunk in chunks)


def _runs(chunks: Iterable[tuple[PackedChunk, int]]) -> Iterator[PackRun]:
    run: PackRun | None = None
    for chunk, place in chunks:
        if run is None or not run.extends(chunk):
            if run is not None:
                yield run
            run = PackRun(chunk.pack)
        run.chunks.append(chunk)
        run.places.append(place)
    if run is not None:
        yield run


def restore_files(
    reader: ChunkReader,
    files: list[ChunkedFile],
    records: Iterator[ChunkRecord],
    packs: list[str],
    target: RestoreTarget,
    jobs: int,
    progress: ByteCounter | None = None,
) -> None:
    """Write every file under `target` from its chunks."""
    opened: list[OpenFile] = []

    def write(window: list[PackRun]) -> None:
        for run in window:
            assert run.output is not None
            for (chunk, blob), place in zip(reader.fetch(run), run.places, strict=True):
                os.pwrite(run.output.fd, reader.open(chunk, blob), place)
                if progress:
                    progress(chunk.size)  # plaintext: a chunk used twice is written twice
        if window:
            assert window[0].output is not None
            window[0].output.finish_run()

    def windows() -> Iterator[list[PackRun]]:
        for entry in files:
            output = OpenFile(target.create_file(entry.path), entry)
            opened.append(output)
            for window in file_runs(entry, _take(records, entry), packs):
                for run in window:
                    run.output = output
                output.add_run()
                yield window
            output.handed_out()

    try:
        run_bounded(write, windows(), jobs)
        if next(records, None) is not None:
            raise IntegrityError("the chunk table has more records than its files: altered")
    finally:
        for output in opened:
            output.abandon()


def check_runs(
    reader: ChunkReader, runs: Iterable[PackRun], jobs: int, progress: ByteCounter | None
) -> None:
    def check(run: PackRun) -> None:
        for chunk, blob in reader.fetch(run):
            reader.open(chunk, blob)
            if progress:
                progress(chunk.stored)

    run_bounded(check, runs, jobs)


def run_bounded(work: Callable[[T], None], runs: Iterable[T], jobs: int) -> None:
    """`work` on every run, `jobs` threads, at most twice `jobs` runs handed out at once; the
    first error stops the rest and is raised."""
    slots = threading.BoundedSemaphore(max(1, jobs) * 2)
    failed: list[BaseException] = []

    def guarded(run: T) -> None:
        try:
            if not failed:
                work(run)
        except BaseException as exc:
            failed.append(exc)
        finally:
            slots.release()

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="chunks") as pool:
        try:
            for run in runs:
                slots.acquire()
                if failed:
                    slots.release()
                    break
                pool.submit(guarded, run)
        except BaseException as exc:  # the runs' source failed: stop the workers too
            failed.insert(0, exc)
    if failed:
        raise failed[0]
