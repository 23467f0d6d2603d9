"""Reading MariaDB binlog files as `mariadb-binlog --raw` writes them: event headers,
the few event bodies that say where a transaction ends, and the GTID state after it.

Pure file-format reading (the documented v4 layout), no protocol: a file is the
4-byte magic, then events of a 19-byte header (timestamp, type, server id, size,
next position, flags) and a body, the last 4 bytes of which are a CRC32 when the
format description event says so. A transaction is an event group: a GTID event,
its events, and an XID event or a COMMIT/ROLLBACK query (an XA PREPARE event for a
prepared XA transaction); a standalone group (DDL) ends with its one statement.

A `BinlogFile` reads one file incrementally, MariaDB's or MySQL's (mysql/binlog.py):
each call reads only the bytes that arrived since the last, and records a `Boundary`
after every whole group and every event outside a group, with the GTID position
reached and the group's time. Bytes up to the last boundary are whole transactions:
the settled length an archive may take. `BinlogReader` is MariaDB's events on it.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, ClassVar, Generic, TypeVar

from catchup.engines.mariadb.gtid import Gtid, Position

MAGIC = b"\xfebin"
HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server id, event size, next pos, flags
HEADER_SIZE = HEADER.size  # 19

QUERY_EVENT = 2
ROTATE_EVENT = 4
INTVAR_EVENT = 5
RAND_EVENT = 13
USER_VAR_EVENT = 14
FORMAT_DESCRIPTION_EVENT = 15
XID_EVENT = 16
XA_PREPARE_LOG_EVENT = 38
ANNOTATE_ROWS_EVENT = 160
GTID_EVENT = 162
GTID_LIST_EVENT = 163

# Events that may precede a standalone group's one statement (they set its context).
CONTEXT_EVENTS = {INTVAR_EVENT, RAND_EVENT, USER_VAR_EVENT, ANNOTATE_ROWS_EVENT}
FL_STANDALONE = 0x01
QUERY_POST_HEADER = 13  # thread id 4, exec time 4, db length 1, error code 2, status length 2
GROUP_ENDING_QUERIES = (b"COMMIT", b"ROLLBACK")
# In the format description: binlog version 2, server version 50, create time 4, header
# length 1, then one post-header length per event type, then the checksum algorithm 1.
FD_FIXED = 2 + 50 + 4 + 1
CHECKSUM_CRC32 = 1
CHECKSUM_SIZE = 4


class BinlogFormatError(ValueError):
    """The bytes are not a MariaDB or MySQL binlog (or are damaged)."""


P = TypeVar("P")  # a position: MariaDB's GTID position, MySQL's GTID set


@dataclass(frozen=True)
class Boundary(Generic[P]):
    """A point of the file between whole transactions."""

    offset: int
    position: P  # never changed once made (the reader makes a new state, or a copy)
    time: datetime | None  # the last commit's time (MariaDB: whole seconds; MySQL: microseconds)
    group: bool  # whether a transaction ends here (not an event outside any)


class BinlogFile(Generic[P]):
    """The v4 framing both engines' binlogs share, read incrementally: the magic, whole
    events only (a partial one is left for the next call), the CRC per the format
    description, and the boundaries. A subclass reads the event bodies of `bodies`
    (`_event`) and keeps `state`, the position after the last whole transaction."""

    bodies: ClassVar[frozenset[int]]  # the event types whose bodies `_event` needs

    def __init__(self, time: datetime | None) -> None:
        self.offset = 0  # bytes read: the end of the last whole event
        self.state: P | None = None  # unknown until the file's GTID list (PREVIOUS_GTIDS)
        self.time = time  # of the last transaction, carried over from earlier files
        self.time_before = time
        self.checksum = False
        self.boundaries: list[Boundary[P]] = []
        self.settled = 0  # the offset of the last boundary
        # Given, each boundary goes there instead of into `boundaries` (a whole-file scan).
        self.sink: Callable[[Boundary[P]], None] | None = None

    def read(self, path: Path) -> None:
        """Read what `path` has past `offset`: whole events only, a partial one is left."""
        with open(path, "rb") as file:
            size = file.seek(0, 2)
            file.seek(self.offset)
            if self.offset == 0:
                if size < len(MAGIC):
                    return
                if file.read(len(MAGIC)) != MAGIC:
                    raise BinlogFormatError(f"{path.name} does not start with the binlog magic")
                self.offset = len(MAGIC)
            self._read_events(file, size)

    def _read_events(self, file: BinaryIO, size: int) -> None:
        while size - self.offset >= HEADER_SIZE:
            header = file.read(HEADER_SIZE)
            timestamp, kind, server_id, length, _next, _flags = HEADER.unpack(header)
            if length < HEADER_SIZE:
                raise BinlogFormatError(f"event at {self.offset} claims {length} bytes")
            if self.offset + length > size:
                return  # being written
            if kind in self.bodies:
                body = file.read(length - HEADER_SIZE)
            else:
                body = b""
                file.seek(length - HEADER_SIZE, 1)
            event_at = self.offset
            self.offset += length
            try:
                self._event(timestamp, kind, server_id, self._payload(kind, body))
            except (struct.error, IndexError, ValueError) as exc:
                raise BinlogFormatError(f"event {kind} at {event_at} is damaged ({exc})") from None

    def _payload(self, kind: int, body: bytes) -> bytes:
        if kind == FORMAT_DESCRIPTION_EVENT:
            # The format description itself carries the algorithm, and its CRC when set.
            algorithm_at = len(body) - CHECKSUM_SIZE - 1
            self.checksum = algorithm_at >= FD_FIXED and body[algorithm_at] == CHECKSUM_CRC32
        return body[:-CHECKSUM_SIZE] if self.checksum and body else body

    def _event(self, timestamp: int, kind: int, server_id: int, body: bytes) -> None:
        raise NotImplementedError

    def _position(self, state: P) -> P:
        """`state` as a boundary keeps it: as it is, when the reader never changes it."""
        return state

    def _boundary(self, group: bool) -> None:
        if self.state is None:
            return  # before the file's GTID list: not a point anyone can resume from
        boundary = Boundary(self.offset, self._position(self.state), self.time, group)
        if self.sink is not None:
            self.sink(boundary)
        else:
            self.boundaries.append(boundary)
        self.settled = self.offset

    def at(self, length: int) -> Boundary[P] | None:
        """The last boundary within the first `length` bytes, forgetting earlier ones
        (asked for growing lengths, the list stays short)."""
        found = None
        for index, boundary in enumerate(self.boundaries):
            if boundary.offset > length:
                break
            found = index
        if found is None:
            return None
        del self.boundaries[:found]
        return self.boundaries[0]


@dataclass
class _Group:
    gtid: Gtid
    time: datetime
    standalone: bool


class BinlogReader(BinlogFile[Position]):
    """One MariaDB binlog file read incrementally. `floor`: a position the file's state is
    never below (a stream started at a GTID first sends the file's own GTID list, from
    the file's start, then its start position as a second list)."""

    bodies = frozenset({FORMAT_DESCRIPTION_EVENT, GTID_EVENT, GTID_LIST_EVENT, QUERY_EVENT})

    def __init__(self, floor: Position | None = None, time: datetime | None = None) -> None:
        super().__init__(time)
        self.floor = Position(floor or {})
        self.group: _Group | None = None

    def _event(self, timestamp: int, kind: int, server_id: int, body: bytes) -> None:
        when = datetime.fromtimestamp(timestamp, UTC)
        if kind == GTID_EVENT:
            seqno, domain, flags = struct.unpack_from("<QIB", body)
            self.group = _Group(Gtid(domain, server_id, seqno), when, bool(flags & FL_STANDALONE))
            return
        if self.group is None:
            if kind == GTID_LIST_EVENT:
                self._gtid_list(body)
            self._boundary(group=False)
            return
        if self._ends_group(kind, body):
            gtid = self.group.gtid
            # A new Position, never the one the last boundary holds (see `_position`).
            self.state = Position(self.state or {})
            self.state[gtid.domain] = gtid
            self.time = self.group.time
            self.group = None
            self._boundary(group=True)

    def _ends_group(self, kind: int, body: bytes) -> bool:
        assert self.group is not None
        if kind in (XID_EVENT, XA_PREPARE_LOG_EVENT):
            return True
        if self.group.standalone:
            return kind not in CONTEXT_EVENTS
        return kind == QUERY_EVENT and query_text(body).upper() in GROUP_ENDING_QUERIES

    def _gtid_list(self, body: bytes) -> None:
        (count,) = struct.unpack_from("<I", body)
        state = Position()
        for index in range(count & 0x0FFFFFFF):  # the top 4 bits are flags
            domain, server, seqno = struct.unpack_from("<IIQ", body, 4 + 16 * index)
            state[domain] = Gtid(domain, server, seqno)  # each domain's newest comes last
        for domain, gtid in self.floor.items():
            if domain not in state or state[domain].seqno < gtid.seqno:
                state[domain] = gtid
        self.state = state


def query_text(body: bytes) -> bytes:
    """The statement of a QUERY event's body (checksum already removed)."""
    status_length = struct.unpack_from("<H", body, 11)[0]
    db_length = body[8]
    start = QUERY_POST_HEADER + status_length + db_length + 1  # the db name ends in NUL
    return body[start:].strip()


# Spool and archive file names: `<stream start, UTC>-<the source's binlog name>`. The stamp
# makes a name unique over the shard's history (a new primary reuses binlog names, and a
# resumed stream writes a file of the same name that starts elsewhere) and orders streams.
NAME = re.compile(r"^(\d{8}T\d{6}\.\d{6}Z)-(.+)\.(\d+)$")


def archive_order(name: str) -> tuple[str, str, int]:
    """Sort key of an archived file name: stream start, then binlog sequence."""
    match = NAME.match(name)
    if not match:
        raise ValueError(f"{name!r} is not an archived binlog name")
    return match.group(1), match.group(2), int(match.group(3))
