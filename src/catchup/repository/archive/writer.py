"""Appending an archiver session's pieces and gaps."""

from __future__ import annotations

import contextlib
import io
from datetime import UTC, datetime

from catchup.codec import CodecSettings, encode
from catchup.codec.encryption import Encryptor, new_data_key
from catchup.codec.keys import Keyring
from catchup.repository.archive.index import ArchiveIndex
from catchup.repository.archive.records import (
    ArchiveConflictError,
    ArchiveRecord,
    Mark,
    archive_prefix,
    batch_key,
    encode_index,
    piece_key,
    record_digest,
    record_key,
    session_context,
)
from catchup.repository.envelope import BackupKeys
from catchup.storage import ObjectNotFound, Store

# --- writing ------------------------------------------------------------------


# Records per batch: an hour of them at the default flush_seconds of 5, so that reading
# a week's index is some 170 objects instead of 120,000.
BATCH = 720


class ArchiveWriter:
    """Appends one archiver session's pieces and gaps to a shard's archive.

    Not thread-safe: one archiver loop owns it. Every record is created only if its
    sequence number is free, so a second writer that slipped past the lease fails
    instead of forking the chain. Each full BATCH of intact records is then stored
    again as one object, and its single records are deleted.
    """

    def __init__(
        self,
        store: Store,
        keyring: Keyring,
        index: ArchiveIndex,
        session: str,
        source: str,
        codec: CodecSettings,
    ) -> None:
        self.store, self.index, self.session, self.source = store, index, session, source
        self.codec = codec
        self.prefix = archive_prefix(index.keyspace, index.shard)
        active = keyring.active
        self.keys = (
            BackupKeys.create(active, new_data_key(), session_context(self.prefix, session))
            if active
            else None
        )
        self.next_seq = index.next_seq
        self.previous = record_digest(index.records[-1]) if index.records else None
        self.lengths = index.archived_lengths()
        self.records = {record.seq: record for record in index.records}
        self.wraps = dict(index.wraps)
        if self.keys:
            self.wraps[session] = (self.keys.key_id, self.keys.wrapped)
        self.batch_size = BATCH
        self._delete_singles(index.stale)  # a batch written, its singles left by a crash

    def append(self, file: str, offset: int, data: bytes, start: Mark, end: Mark) -> ArchiveRecord:
        """Store bytes [offset, offset + len(data)) of `file`, then their record."""
        seq = self.next_seq
        key = piece_key(self.prefix, seq)
        encryptor = Encryptor(self.keys.data_key) if self.keys else None
        with self.store.writer(key) as sink:
            encoded = encode(io.BytesIO(data), sink, self.codec, encryptor, key)
        record = self._record(
            seq,
            kind="piece",
            file=file,
            offset=offset,
            size=len(data),
            hash=encoded.digest,
            stored_size=encoded.stored_size,
            start=start,
            end=end,
        )
        self.lengths[file] = offset + len(data)
        return record

    def gap(self, start: Mark, end: Mark, reason: str) -> ArchiveRecord:
        return self._record(self.next_seq, kind="gap", start=start, end=end, reason=reason)

    def _record(self, seq: int, **fields: object) -> ArchiveRecord:
        record = ArchiveRecord.model_validate(
            {
                "seq": seq,
                "keyspace": self.index.keyspace,
                "shard": self.index.shard,
                "session": self.session,
                "source": self.source,
                "written_at": datetime.now(UTC),
                "previous": self.previous,
                **{k: v.model_dump() if isinstance(v, Mark) else v for k, v in fields.items()},
            }
        )
        key = record_key(self.prefix, seq)
        if not self._create(key, [record]):
            raise ArchiveConflictError(
                f"archive record {key} was written by another archiver; this one stops (only "
                "one archiver per shard may run: check for a second `catchup archive`)"
            )
        self.next_seq, self.previous = seq + 1, record_digest(record)
        self.records[seq] = record
        if (seq + 1) % self.batch_size == 0:
            self._gather(seq + 1 - self.batch_size, seq)
        return record

    def _create(self, key: str, records: list[ArchiveRecord]) -> bool:
        blob = encode_index(records, self.wraps, self.keys, self.session, key)
        # Equal bytes: our own create, whose answer was lost and retried by the store.
        return self.store.create(key, blob) is not None or self.store.get(key) == blob

    def _gather(self, first: int, last: int) -> None:
        """Store records first..last again as one batch, if all are intact and chained."""
        seqs = range(first, last + 1)
        if any(seq not in self.records or seq in self.index.breaks for seq in seqs):
            return  # damaged or missing ones stay single, where the reader names them
        if any(
            self.records[seq].previous != record_digest(self.records[seq - 1]) for seq in seqs[1:]
        ):
            return
        if self._create(batch_key(self.prefix, first, last), [self.records[s] for s in seqs]):
            self._delete_singles(list(seqs))

    def _delete_singles(self, seqs: list[int]) -> None:
        for seq in seqs:
            with contextlib.suppress(ObjectNotFound):
                self.store.delete(record_key(self.prefix, seq))
