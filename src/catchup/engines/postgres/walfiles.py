"""WAL files as pg_receivewal writes them and pg_waldump reads them, as pure logic:
names (a segment `TTTTTTTTXXXXXXXXYYYYYYYY`, `.partial` while it is written, a
timeline's `TTTTTTTT.history`), how much of a file is settled, and where records end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from catchup.engines.postgres.lsn import PAGE_HEADERS, WAL_PAGE, WAL_SEGMENT

SEGMENT = re.compile(r"([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})")
HISTORY = re.compile(r"([0-9A-F]{8})\.history")
PARTIAL = ".partial"
MAXALIGN = 8
# One pg_waldump record line: its length, its start, and a commit's time (xact records).
RECORD = re.compile(r"len \(rec/tot\):\s*\d+/\s*(\d+), tx:\s*\d+, lsn: ([0-9A-F]+/[0-9A-F]+),")
COMMIT_TIME = re.compile(
    r"desc: COMMIT(?:_PREPARED)?\b.*?(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)


@dataclass(frozen=True, order=True)
class WalName:
    """A spool file's canonical name, ordered as the log is: timeline by timeline (a
    timeline's history file first), segment by segment."""

    timeline: int
    is_segment: bool
    segment: int  # the segment number (LSN // segment size); 0 for a history file

    @property
    def name(self) -> str:
        if not self.is_segment:
            return f"{self.timeline:08X}.history"
        per_xlogid = 0x100000000 // WAL_SEGMENT
        high, low = divmod(self.segment, per_xlogid)
        return f"{self.timeline:08X}{high:08X}{low:08X}"

    @property
    def start_lsn(self) -> int:
        return self.segment * WAL_SEGMENT


def parse_name(name: str) -> WalName | None:
    """The canonical WAL name of a spool file (`.partial` stripped); None for anything
    else (pg_receivewal's `.tmp` files, strangers)."""
    found = SEGMENT.fullmatch(name.removesuffix(PARTIAL))
    if found:
        timeline, high, low = (int(part, 16) for part in found.groups())
        return WalName(timeline, True, high * (0x100000000 // WAL_SEGMENT) + low)
    found = HISTORY.fullmatch(name)
    return WalName(int(found.group(1), 16), False, 0) if found else None


def settled_length(path: Path, floor: int = 0, chunk: int = 1 << 20) -> int:
    """How many bytes of a spool file will never change.

    A completed segment and a history file: all of them. A `.partial` segment is
    preallocated with zeros and filled from its start, so its bytes up to the last
    non-zero one are settled; a zero tail is not reported (WAL that really ends in zero
    bytes is reported once a later byte arrives, which is still correct because the
    archiver uploads from its own archived length). Bytes below `floor` (settled
    earlier) are not read again.
    """
    with open(path, "rb") as stream:
        size = stream.seek(0, 2)
        if not path.name.endswith(PARTIAL):
            return size
        end = size
        while end > floor:
            begin = max(floor, end - chunk)
            stream.seek(begin)
            data = stream.read(end - begin).rstrip(b"\0")
            if data:
                return begin + len(data)
            end = begin
        return floor


def record_end(start: int, total_length: int) -> int:
    """Where a record of `total_length` bytes starting at `start` ends, MAXALIGNed (the
    position PostgreSQL gives the end of a replayed record): page headers it crosses
    take room too."""
    position, remaining = start, total_length
    while True:
        room = WAL_PAGE - position % WAL_PAGE
        if remaining <= room:
            end = position + remaining
            return (end + MAXALIGN - 1) // MAXALIGN * MAXALIGN
        remaining -= room
        position += room  # a page boundary: its header comes first
        position += PAGE_HEADERS[1] if position % WAL_SEGMENT == 0 else PAGE_HEADERS[0]


@dataclass(frozen=True)
class Dumped:
    """What pg_waldump's output says: the end of its last whole record, and the commit
    time of its last commit record (None for either when it has none)."""

    end: int | None
    commit_time: datetime | None


def parse_waldump(output: str) -> Dumped:
    end: int | None = None
    commit: datetime | None = None
    for line in output.splitlines():
        record = RECORD.search(line)
        if record is None:
            continue
        high, _, low = record.group(2).partition("/")
        end = record_end((int(high, 16) << 32) | int(low, 16), int(record.group(1)))
        if "desc: SWITCH" in line:  # the rest of the segment belongs to it
            end = -(-end // WAL_SEGMENT) * WAL_SEGMENT
        found = COMMIT_TIME.search(line)
        if found:
            commit = datetime.fromisoformat(found.group(1)).replace(tzinfo=UTC)
    return Dumped(end, commit)
