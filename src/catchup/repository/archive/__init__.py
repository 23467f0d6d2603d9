"""The log archive: a shard's log, piece by piece, as an authenticated chain of records.

    <keyspace>/<shard>/archive/index/<seq>.json    one record per piece (or gap)
    <keyspace>/<shard>/archive/pieces/<seq>.zst    bytes [offset, offset + size) of one log file
    <keyspace>/<shard>/archive/lease.json          the archiver's lease

A record names its piece's log file, offset, size and plaintext hash, and the
engine's position and commit time before and after it. It carries the hash of
the previous record, and is sealed like a manifest (or checksummed when no key
is configured), so a missing, reordered, replaced or altered record is found by
reading the index: `ArchiveIndex.problems` names it. A record is stored only
after its piece, with a create-if-absent put: of two archivers racing for one
sequence number, one fails. A gap record says the log between two positions is
not in the archive (the archiver could not resume where it stopped).
"""

from catchup.repository.archive.index import ArchiveIndex, Stretch, read_index
from catchup.repository.archive.records import (
    ArchiveConflictError,
    ArchiveRecord,
    Compare,
    Mark,
    archive_prefix,
)
from catchup.repository.archive.replay import (
    covered,
    delete_records,
    expired_records,
    pieces_for_replay,
    restore_files,
)
from catchup.repository.archive.writer import ArchiveWriter

__all__ = [
    "ArchiveConflictError",
    "ArchiveIndex",
    "ArchiveRecord",
    "ArchiveWriter",
    "Compare",
    "Mark",
    "Stretch",
    "archive_prefix",
    "covered",
    "delete_records",
    "expired_records",
    "pieces_for_replay",
    "read_index",
    "restore_files",
]
