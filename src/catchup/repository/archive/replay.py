"""Choosing the pieces a replay needs, and writing them back as log files."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from catchup.codec import decode
from catchup.codec.encryption import Encryptor
from catchup.errors import ArchiveGapError
from catchup.repository.archive.index import ArchiveIndex
from catchup.repository.archive.records import (
    ArchiveRecord,
    Compare,
    Mark,
    archive_prefix,
    batch_key,
    piece_key,
    record_key,
)
from catchup.storage import ObjectNotFound, Store

# --- reading the log back -----------------------------------------------------


def restore_files(
    store: Store,
    index: ArchiveIndex,
    records: list[ArchiveRecord],
    target: Path,
    jobs: int = 4,
) -> list[str]:
    """Write the pieces of `records` into `target` (created 0700), each at its offset in
    its file, verifying every piece's hash; returns the file names, in log order."""
    prefix = archive_prefix(index.keyspace, index.shard)
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    names: list[str] = []
    for record in records:
        if record.file not in names:
            names.append(record.file)
            fd = _create(target / record.file)
            fd.close()

    def fetch(record: ArchiveRecord) -> None:
        key = piece_key(prefix, record.seq)
        data_key = index.data_keys.get(record.seq)
        sink = io.BytesIO()
        assert record.hash is not None
        with store.reader(key) as source:
            decode(
                source,
                sink,
                record.hash,
                record.size,
                key,
                Encryptor(data_key) if data_key else None,
            )
        with open(target / record.file, "r+b") as out:
            out.seek(record.offset)
            out.write(sink.getvalue())

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(fetch, records))
    return names


def _create(path: Path) -> io.BufferedWriter:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    return os.fdopen(fd, "wb")


def pieces_for_replay(
    index: ArchiveIndex,
    compare: Compare,
    position: str,
    until: Callable[[Mark], bool] | None = None,
) -> list[ArchiveRecord]:
    """The pieces a replay from `position` needs, whole files from their first byte, up
    to the first piece for which `until(piece.end)` holds (the target is inside or before
    it). ArchiveGapError, naming what is covered, when one stretch does not hold it all.
    Without `until`: whatever the stretch holding `position` has after it (maybe none)."""
    for stretch in index.runs():
        if not _within(compare, stretch.start.position, position, stretch.end.position):
            continue
        needed: list[ArchiveRecord] = []
        for record in stretch.records:
            after = compare(record.end.position, position)
            if after is not None and after <= 0 and not needed:
                continue  # wholly before the backup's position
            needed.append(record)
            if until is not None and until(record.end):
                break
        else:
            if until is not None:
                raise ArchiveGapError(
                    f"the archive of {index.keyspace}/{index.shard} ends before the target: "
                    f"the stretch from the backup's position covers {stretch.describe()}"
                )
        files = {r.file for r in needed}
        whole = [r for r in index.records if r.kind == "piece" and r.file in files]
        _require_whole(index, whole)
        return whole
    if until is None:
        return []
    raise ArchiveGapError(
        f"the archive of {index.keyspace}/{index.shard} does not hold the log from position "
        f"{position}; it covers {covered(index)}"
    )


def _within(compare: Compare, start: str, position: str, end: str) -> bool:
    first, last = compare(start, position), compare(position, end)
    return first is not None and last is not None and first <= 0 and last <= 0


def _require_whole(index: ArchiveIndex, records: list[ArchiveRecord]) -> None:
    seen: set[str] = set()
    for record in records:
        if record.file not in seen and record.offset != 0:
            raise ArchiveGapError(
                f"the archive of {index.keyspace}/{index.shard} lacks the beginning of log "
                f"file {record.file} (its first {record.offset} bytes were pruned or never "
                "archived)"
            )
        seen.add(record.file)


def covered(index: ArchiveIndex) -> str:
    runs = index.runs()
    return "; ".join(run.describe() for run in runs) if runs else "nothing yet"


def expired_records(index: ArchiveIndex, compare: Compare, oldest_kept: str) -> list[ArchiveRecord]:
    """The oldest records no kept backup needs: each lies wholly at or before the oldest
    kept backup's position, with every piece of its log file (replay reads whole files).
    Only a prefix of the index goes, never its last record (the archiver resumes after
    it), so what stays is still one chain."""
    files_after = {
        r.file
        for r in index.records
        if r.kind == "piece" and _after(compare, r.end.position, oldest_kept)
    }
    expired: list[ArchiveRecord] = []
    for record in index.records[:-1]:
        order = compare(record.end.position, oldest_kept)
        if order is None or order > 0 or (record.kind == "piece" and record.file in files_after):
            break
        expired.append(record)
    return expired


def _after(compare: Compare, a: str, b: str) -> bool:
    order = compare(a, b)
    return order is None or order > 0


def delete_records(store: Store, index: ArchiveIndex, records: list[ArchiveRecord]) -> None:
    """Oldest first, each index object before its pieces: no record ever names a gone
    piece. A batch goes only with all its records; a partly expired one stays whole."""
    prefix = archive_prefix(index.keyspace, index.shard)
    doomed = {record.seq for record in records}
    for first, last in index.objects:
        seqs = range(first, last + 1)
        if not all(seq in doomed for seq in seqs):
            continue
        with contextlib.suppress(ObjectNotFound):
            store.delete(
                batch_key(prefix, first, last) if last > first else record_key(prefix, first)
            )
        for seq in seqs:
            with contextlib.suppress(ObjectNotFound):
                store.delete(piece_key(prefix, seq))
