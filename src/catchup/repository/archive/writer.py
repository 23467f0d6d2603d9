"""Appending an archiver session's pieces and gaps."""

from __future__ import annotations

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
    encode_record,
    piece_key,
    record_digest,
    record_key,
    session_context,
)
from catchup.repository.envelope import BackupKeys
from catchup.storage import Store

# --- writing ------------------------------------------------------------------


class ArchiveWriter:
    """Appends one archiver session's pieces and gaps to a shard's archive.

    Not thread-safe: one archiver loop owns it. Every record is created only if its
    sequence number is free, so a second writer that slipped past the lease fails
    instead of forking the chain.
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
        self.last: ArchiveRecord | None = index.records[-1] if index.records else None

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
        blob = encode_record(record, self.keys, key)
        if self.store.create(key, blob) is None and self.store.get(key) != blob:
            # (Equal bytes: our own create, whose answer was lost and retried by the store.)
            raise ArchiveConflictError(
                f"archive record {key} was written by another archiver; this one stops (only "
                "one archiver per shard may run: check for a second `catchup archive`)"
            )
        self.next_seq, self.previous, self.last = seq + 1, record_digest(record), record
        return record
