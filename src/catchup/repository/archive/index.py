"""Reading a shard's archive index and checking it: order, chain, offsets."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from catchup.codec.keys import Keyring
from catchup.errors import IntegrityError, KeyUnavailableError
from catchup.repository.archive.records import (
    RECORD,
    ArchiveRecord,
    Mark,
    SessionKeys,
    archive_prefix,
    decode_record,
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
    breaks: set[int] = field(default_factory=set)  # seqs that start a new run

    @property
    def end(self) -> Mark | None:
        return self.records[-1].end if self.records else None

    @property
    def next_seq(self) -> int:
        return self.records[-1].seq + 1 if self.records else 0

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

    def bytes(self) -> int:
        return sum(record.size for record in self.records)

    def stored_bytes(self) -> int:
        return sum(record.stored_size for record in self.records)


def read_index(
    store: Store, keyring: Keyring, read_plain: bool, keyspace: str, shard: str, jobs: int = 16
) -> ArchiveIndex:
    """Every record of the shard's archive, checked: a record that fails authentication,
    is missing from the sequence or does not follow its predecessor is named in
    `problems` and starts a new run, so no replay ever crosses it."""
    prefix = archive_prefix(keyspace, shard)
    seqs = sorted(
        int(match.group(1))
        for obj in store.list(prefix + "index/")
        if (match := RECORD.match(obj.key.removeprefix(prefix + "index/")))
    )
    keys = SessionKeys(keyring)

    def read(seq: int) -> tuple[int, ArchiveRecord | None, bytes | None, str | None]:
        key = record_key(prefix, seq)
        try:
            record, data_key = decode_record(store.get(key), key, keys, read_plain, prefix)
        except KeyUnavailableError:
            raise
        except IntegrityError as exc:
            return seq, None, None, str(exc)
        if (record.seq, record.keyspace, record.shard) != (seq, keyspace, shard):
            return seq, None, None, f"archive record {key} was moved from {record.seq}"
        return seq, record, data_key, None

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = list(pool.map(read, seqs))
    index = ArchiveIndex(keyspace, shard, [])
    previous: ArchiveRecord | None = None
    offsets: dict[str, int] = {}
    for seq, record, data_key, problem in results:
        if record is None:
            index.problems.append(problem or f"archive record {seq} is unreadable")
            previous = None
            continue
        expected = previous.seq + 1 if previous else None
        if expected is not None and seq != expected:
            index.problems.append(
                f"archive records {_seqs(expected, seq - 1)} of {keyspace}/{shard} are "
                "missing: deleted from the store"
            )
            index.breaks.add(seq)
        elif previous is not None and record.previous != record_digest(previous):
            index.problems.append(
                f"archive record {record_key(prefix, seq)} does not follow record "
                f"{previous.seq}: reordered, replaced or altered"
            )
            index.breaks.add(seq)
        elif previous is None and index.records:
            index.breaks.add(seq)  # after an unreadable record
        if record.kind == "piece":
            have = offsets.get(record.file, 0 if record.offset == 0 else None)
            if have is not None and record.offset != have:
                index.problems.append(
                    f"archive record {record_key(prefix, seq)} puts {record.file} bytes at "
                    f"offset {record.offset}, but the archive holds it up to {have}"
                )
                index.breaks.add(seq)
            offsets[record.file] = record.offset + record.size
        index.records.append(record)
        index.data_keys[seq] = data_key
        previous = record
    return index


def _seqs(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}-{last}"
