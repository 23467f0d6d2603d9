"""Reading MySQL binlog files as `mysqlbinlog --raw` writes them: event headers, the
few event bodies that say where a transaction ends, and the GTID set after it.

The file layout (magic, 19-byte v4 headers, CRC32 per the format description) is
MariaDB's, read by the same `BinlogFile` (mariadb/binlog.py); the events that differ
are MySQL's:

- PREVIOUS_GTIDS (35), after the format description: the GTID set logged before the
  file. Untagged: n_sids u64, then per sid a 16-byte uuid, n_intervals u64 and
  (start, end exclusive) u64 pairs. With tagged GTIDs (8.3+) the u64 carries the
  format in its low and high bytes, n_sids in the six between, and each sid has its
  tag (a serialization varint length, then the bytes) after the uuid.
- GTID (33), ANONYMOUS_GTID (34) and GTID_TAGGED (42) open a transaction. 33 and 34:
  flags 1, uuid 16, gno 8, logical clock typecode 1, last_committed 8,
  sequence_number 8, then immediate_commit_timestamp 7 bytes in microseconds (its top
  bit says original_commit_timestamp follows). 42 is mysql::serialization: varint
  fields by id (1 uuid, 2 gno, 3 tag, 6 immediate_commit_timestamp).
- A transaction ends at XID (16), a COMMIT/ROLLBACK query, XA_PREPARE (38) or
  TRANSACTION_PAYLOAD (40: binlog_transaction_compression, the whole transaction
  compressed in one event). Without a BEGIN query it is DDL, one statement, except
  CREATE TABLE ... SELECT (8.0.21+: `... START TRANSACTION`, rows, then XID).

Commit times are immediate_commit_timestamp (the server that wrote the file), to the
microsecond; the header's whole seconds only where a server predates it (5.7).
A `MySQLBinlogReader` reads one file incrementally and records a `MySQLBoundary` after every
whole transaction and every event outside one, with the GTID set reached.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from catchup.engines.mariadb.binlog import (
    FORMAT_DESCRIPTION_EVENT,
    GROUP_ENDING_QUERIES,
    NAME,
    QUERY_EVENT,
    XA_PREPARE_LOG_EVENT,
    XID_EVENT,
    BinlogFile,
    BinlogFormatError,
    Boundary,
    archive_order,
    query_text,
)
from catchup.engines.mysql.gtid import GtidSet, MySQLGtid

__all__ = [
    "NAME",
    "QUERY_EVENT",
    "TRANSACTION_PAYLOAD_EVENT",
    "XA_PREPARE_LOG_EVENT",
    "XID_EVENT",
    "BinlogFormatError",
    "MySQLBinlogReader",
    "MySQLBoundary",
    "archive_order",
    "previous_gtids",
    "scan",
    "varint",
]

GTID_LOG_EVENT = 33
ANONYMOUS_GTID_LOG_EVENT = 34
PREVIOUS_GTIDS_LOG_EVENT = 35
TRANSACTION_PAYLOAD_EVENT = 40
GTID_TAGGED_LOG_EVENT = 42
GTID_EVENTS = (GTID_LOG_EVENT, ANONYMOUS_GTID_LOG_EVENT, GTID_TAGGED_LOG_EVENT)
GROUP_ENDERS = {XID_EVENT, XA_PREPARE_LOG_EVENT, TRANSACTION_PAYLOAD_EVENT}
# flags 1, uuid 16, gno 8, typecode 1, last_committed 8, sequence_number 8
GTID_TIMESTAMP_AT = 42
TIMESTAMP_SIZE = 7
TIMESTAMP_MASK = (1 << 55) - 1  # the top bit of the 7 bytes says another one follows
TAGGED_FORMAT = 1
# Field ids of a GTID_TAGGED event (Gtid_event::define_fields).
FIELD_UUID, FIELD_GNO, FIELD_TAG, FIELD_IMMEDIATE = 1, 2, 3, 6


MySQLBoundary = Boundary[GtidSet]


@dataclass
class _Group:
    gtid: MySQLGtid | None  # None: anonymous (gtid_mode OFF upstream)
    time: datetime | None  # immediate_commit_timestamp, if the event has it
    began: bool = False  # a BEGIN query: ends at XID or COMMIT (else DDL: one statement)


class MySQLBinlogReader(BinlogFile[GtidSet]):
    """One binlog file read incrementally. `floor`: a GTID set the file's state is never
    below (a stream with --exclude-gtids leaves the excluded transactions out of its
    files, whose PREVIOUS_GTIDS is still the source file's)."""

    bodies = frozenset(
        {FORMAT_DESCRIPTION_EVENT, PREVIOUS_GTIDS_LOG_EVENT, QUERY_EVENT, *GTID_EVENTS}
    )

    def __init__(self, floor: GtidSet | None = None, time: datetime | None = None) -> None:
        super().__init__(time)
        self.floor = floor.copy() if floor else GtidSet()
        # A copy of `state` for boundaries to share: a GtidSet grows in place, so a
        # boundary keeps a copy, made once per state rather than once per boundary.
        self.snapshot: GtidSet | None = None
        self.group: _Group | None = None

    def _event(self, timestamp: int, kind: int, server_id: int, body: bytes) -> None:
        if kind in GTID_EVENTS:
            gtid, when = _tagged_gtid(body) if kind == GTID_TAGGED_LOG_EVENT else _gtid(body)
            self.group = _Group(None if kind == ANONYMOUS_GTID_LOG_EVENT else gtid, when)
            return
        if self.group is None:
            if kind == PREVIOUS_GTIDS_LOG_EVENT:
                self.state = previous_gtids(body).union(self.floor)
                self.snapshot = None
            self._boundary(group=False)
            return
        if self._ends_group(kind, body):
            group = self.group
            self.group = None
            if group.gtid is not None and self.state is not None:
                self.state.add(group.gtid)
                self.snapshot = None
            self.time = group.time or datetime.fromtimestamp(timestamp, UTC)
            self._boundary(group=True)

    def _ends_group(self, kind: int, body: bytes) -> bool:
        group = self.group
        assert group is not None
        if kind in GROUP_ENDERS:
            return True
        if kind != QUERY_EVENT:
            return False  # rows, table maps, or a statement's context (INTVAR, USER_VAR)
        text = query_text(body).upper()
        if group.began:
            return text in GROUP_ENDING_QUERIES
        if text == b"BEGIN" or text.startswith(b"XA START"):
            group.began = True
            return False
        # CREATE TABLE ... SELECT logs its rows in the same transaction, up to an XID.
        group.began = text.endswith(b"START TRANSACTION")
        return not group.began

    def _position(self, state: GtidSet) -> GtidSet:
        if self.snapshot is None:
            self.snapshot = state.copy()
        return self.snapshot


def _gtid(body: bytes) -> tuple[MySQLGtid, datetime | None]:
    uuid = str(UUID(bytes=body[1:17]))
    (number,) = struct.unpack_from("<q", body, 17)
    when = None
    if len(body) >= GTID_TIMESTAMP_AT + TIMESTAMP_SIZE:  # 8.0.1+
        raw = int.from_bytes(body[GTID_TIMESTAMP_AT : GTID_TIMESTAMP_AT + TIMESTAMP_SIZE], "little")
        when = _micros(raw & TIMESTAMP_MASK)
    return MySQLGtid(uuid, "", number), when


def _micros(value: int) -> datetime | None:
    if not value:
        return None
    seconds, micros = divmod(value, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)


def _tagged_gtid(body: bytes) -> tuple[MySQLGtid, datetime | None]:
    """A GTID_TAGGED event: a serialization header (version, size, last non-ignorable
    field id), then (field id, value) pairs in id order, optional ones left out."""
    at = 0
    for _ in range(3):
        _, at = varint(body, at)
    uuid, number, tag, when = b"", 0, "", None
    while at < len(body):
        field, at = varint(body, at)
        if field == FIELD_UUID:
            octets = []
            for _ in range(16):
                octet, at = varint(body, at)
                octets.append(octet)
            uuid = bytes(octets)
        elif field == FIELD_TAG:
            length, at = varint(body, at)
            tag, at = body[at : at + length].decode("ascii"), at + length
        else:
            value, at = varint(body, at)
            if field == FIELD_GNO:
                number = (value >> 1) ^ -(value & 1)  # a signed field: zigzag
            elif field == FIELD_IMMEDIATE:
                when = _micros(value)
                break  # the fields this reader needs all come before it
    if len(uuid) != 16 or not number:
        raise ValueError("a tagged GTID event without its uuid or number")
    return MySQLGtid(str(UUID(bytes=uuid)), tag.lower(), number), when


def varint(data: bytes, at: int) -> tuple[int, int]:
    """One mysql::serialization unsigned integer at `at`, and the offset after it: the
    first byte's trailing 1 bits count the bytes that follow; the value is the
    little-endian whole shifted right by that count plus one (all 8 bytes after 0xff)."""
    first = data[at]
    extra = 8 if first == 0xFF else (~first & (first + 1)).bit_length() - 1
    if at + extra + 1 > len(data):
        raise ValueError("a varint past the end of the event")
    whole = int.from_bytes(data[at : at + extra + 1], "little")
    return (whole >> 8 if extra == 8 else whole >> (extra + 1)), at + extra + 1


def previous_gtids(body: bytes) -> GtidSet:
    """The GTID set of a PREVIOUS_GTIDS event's body (checksum already removed)."""
    (head,) = struct.unpack_from("<Q", body)
    # The format is in both the low and the high byte: an untagged count of 1 has only
    # the low byte set, and an untagged count never reaches the high one.
    tagged = head >> 56 == TAGGED_FORMAT and head & 0xFF == TAGGED_FORMAT
    count = (head >> 8) & ((1 << 48) - 1) if tagged else head
    at, result = 8, GtidSet()
    for _ in range(count):
        uuid, at = str(UUID(bytes=body[at : at + 16])), at + 16
        tag = ""
        if tagged:
            length, at = varint(body, at)
            tag, at = body[at : at + length].decode("ascii").lower(), at + length
        (intervals,) = struct.unpack_from("<Q", body, at)
        at += 8
        spans = []
        for _ in range(intervals):
            start, end = struct.unpack_from("<QQ", body, at)
            at += 16
            spans.append((start, end - 1))
        result = result.union(GtidSet({(uuid, tag): spans}))
    return result


def scan(path: Path, floor: GtidSet | None = None, limit: int | None = None) -> MySQLBinlogReader:
    """A reader that has read the whole file (or its first `limit` bytes' boundaries)."""
    reader = MySQLBinlogReader(floor)
    reader.read(path)
    if limit is not None:
        reader.at(limit)
    return reader
