"""Reading a shard's archive index and checking it: order, chain, offsets."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from catchup.codec.keys import Keyring
from catchup.errors import IntegrityError, KeyUnavailableError
from catchup.repository.archive.records import (
    INDEX_OBJECT,
    ArchiveRecord,
    Decoded,
    Mark,
    SessionKeys,
    Wrapped,
    archive_prefix,
    batch_key,
    decode_index,
    record_digest,
    record_key,
)
from catchup.storage import Store

# --- reading the index --------------------------------------------------------


@dataclass
class Stretch:
    """A stretch of the archive without a gap: replay can cross any point inside it."""

    records: list[ArchiveRecord]

    @property
    def start(self) -> Mark:
        return self.records[0].start

    @property
    def end(self) -> Mark:
        return self.records[-1].end

    def describe(self) -> str:
        return f"{_describe(self.start)} to {_describe(self.end)}"


def _describe(mark: Mark) -> str:
    when = f" ({mark.time:%Y-%m-%dT%H:%M:%SZ})" if mark.time else ""
    return f"{mark.position or '(start)'}{when}"


@dataclass
class ArchiveIndex:
    """A shard's archive records as read and checked: in order, with what is wrong."""

    keyspace: str
    shard: str
    records: list[ArchiveRecord]
    problems: list[str] = field(default_factory=list)
    data_keys: dict[int, bytes | None] = field(default_factory=dict)
    breaks: set[int] = field(default_factory=set)  # seqs that start a new stretch
    wraps: dict[str, Wrapped] = field(default_factory=dict)  # session data keys, wrapped
    stale: list[int] = field(default_factory=list)  # single records a batch also holds
    top: int = -1  # the highest sequence number stored
    objects: list[tuple[int, int]] = field(default_factory=list)  # (first, last) per object

    @property
    def end(self) -> Mark | None:
        return self.records[-1].end if self.records else None

    @property
    def next_seq(self) -> int:
        """After every record stored, readable or not: a writer never collides."""
        return max(self.top, self.records[-1].seq if self.records else -1) + 1

    def archived_lengths(self) -> dict[str, int]:
        lengths: dict[str, int] = {}
        for record in self.records:
            if record.kind == "piece":
                lengths[record.file] = record.offset + record.size
        return lengths

    def runs(self) -> list[Stretch]:
        """Stretches between gaps and damage, oldest first."""
        runs: list[Stretch] = []
        current: list[ArchiveRecord] = []
        for record in self.records:
            if record.kind == "gap" or record.seq in self.breaks:
                if current:
                    runs.append(Stretch(current))
                current = []
            if record.kind == "piece":
                current.append(record)
        if current:
            runs.append(Stretch(current))
        return runs

    def gaps(self) -> list[ArchiveRecord]:
        return [record for record in self.records if record.kind == "gap"]


def read_index(
    store: Store,
    keyring: Keyring,
    read_plain: bool,
    keyspace: str,
    shard: str,
    jobs: int = 16,
    known: ArchiveIndex | None = None,
) -> ArchiveIndex:
    """Every record of the shard's archive, checked: a record that fails authentication,
    is missing from the sequence or does not follow its predecessor is named in
    `problems` and starts a new stretch, so no replay ever crosses it.

    Records are stored one per object, then gathered into batches (writer.py); a
    record both alone and in a batch (a batch written, its singles not yet deleted)
    is read from the batch. `known`: an index read before, extended with only the
    records stored since (one listing, and the new objects)."""
    prefix = archive_prefix(keyspace, shard)
    batches: list[tuple[int, int]] = []
    singles: list[int] = []
    for obj in store.list(prefix + "index/"):
        match = INDEX_OBJECT.match(obj.key.removeprefix(prefix + "index/"))
        if match and match.group(2):
            batches.append((int(match.group(1)), int(match.group(2))))
        elif match:
            singles.append(int(match.group(1)))
    in_batches = {seq for first, last in batches for seq in range(first, last + 1)}
    objects = sorted(
        [(first, last, batch_key(prefix, first, last)) for first, last in batches]
        + [(seq, seq, record_key(prefix, seq)) for seq in singles if seq not in in_batches]
    )
    if known is not None:
        objects = [o for o in objects if o[0] > known.top]
    keys = SessionKeys(keyring)

    def read(first: int, last: int, key: str) -> tuple[int, int, Decoded | None, str | None]:
        try:
            decoded = decode_index(store.get(key), key, keys, read_plain, prefix)
        except KeyUnavailableError:
            raise
        except IntegrityError as exc:
            return first, last, None, str(exc)
        seqs = [(r.seq, r.keyspace, r.shard) for r, _ in decoded.records]
        if seqs != [(seq, keyspace, shard) for seq in range(first, last + 1)]:
            return first, last, None, f"archive index {key} holds other records: moved there"
        return first, last, decoded, None

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(lambda o: read(*o), objects))
    index = known or ArchiveIndex(keyspace, shard, [])
    index.stale = sorted(set(singles) & in_batches)
    index.top = max([index.top, *(last for _, last, _ in objects)])
    index.objects += [(first, last) for first, last, _ in objects]
    checker = ChainChecker(index, prefix)
    for first, last, decoded, problem in results:
        if decoded is None:
            index.problems.append(problem or f"archive records {_seqs(first, last)} unreadable")
            checker.previous = None
            continue
        index.wraps.update(decoded.wraps)
        for record, data_key in decoded.records:
            checker.add(record, data_key)
    return index


class ChainChecker:
    """Appends records to an index in order, noting every break in the chain."""

    def __init__(self, index: ArchiveIndex, prefix: str) -> None:
        self.index, self.prefix = index, prefix
        self.previous: ArchiveRecord | None = index.records[-1] if index.records else None
        self.offsets: dict[str, int] = index.archived_lengths()

    def add(self, record: ArchiveRecord, data_key: bytes | None) -> None:
        index, previous, seq = self.index, self.previous, record.seq
        expected = previous.seq + 1 if previous else None
        if expected is not None and seq != expected:
            index.problems.append(
                f"archive records {_seqs(expected, seq - 1)} of {index.keyspace}/"
                f"{index.shard} are missing: deleted from the store"
            )
            index.breaks.add(seq)
        elif previous is not None and record.previous != record_digest(previous):
            index.problems.append(
                f"archive record {seq} ({record_key(self.prefix, seq)}) does not follow "
                f"record {previous.seq}: reordered, replaced or altered"
            )
            index.breaks.add(seq)
        elif previous is None and index.records:
            index.breaks.add(seq)  # after an unreadable record
        if record.kind == "piece":
            have = self.offsets.get(record.file, 0 if record.offset == 0 else None)
            if have is not None and record.offset != have:
                index.problems.append(
                    f"archive record {seq} puts {record.file} bytes at offset "
                    f"{record.offset}, but the archive holds it up to {have}"
                )
                index.breaks.add(seq)
            self.offsets[record.file] = record.offset + record.size
        index.records.append(record)
        index.data_keys[seq] = data_key
        self.previous = record


def _seqs(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"
