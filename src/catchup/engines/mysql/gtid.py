"""MySQL GTID sets (`uuid:1-5:7,uuid2[:tag]:1-3`) and how two of them relate.

Pure logic: the coverage and errant-transaction decisions of the precheck live
here so they can be tested without a server. A set is what `@@gtid_executed`
says; positions in catchup's manifests are sets in their normal form (lower-case
UUIDs in order, merged intervals, no spaces), so equal sets compare equal as text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from catchup.engines import Coverage, Verdict

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TAG = re.compile(r"^[a-z_][a-z0-9_]{0,31}$")  # MySQL 8.3+ tagged GTIDs
EXPECTED = "a MySQL GTID set: uuid:1-100, several joined by commas, e.g. 3e11fa47-…:1-5:7"

Interval = tuple[int, int]  # first and last transaction number, inclusive
Origin = tuple[str, str]  # (server uuid, tag); the tag is "" for untagged GTIDs


@dataclass(frozen=True)
class MySQLGtid:
    uuid: str
    tag: str
    number: int

    def __str__(self) -> str:
        return f"{self.uuid}:{self.tag + ':' if self.tag else ''}{self.number}"


class GtidSet:
    """A set of GTIDs, as intervals per (uuid, tag)."""

    def __init__(self, intervals: dict[Origin, list[Interval]] | None = None) -> None:
        self.intervals: dict[Origin, list[Interval]] = {}
        for source, spans in (intervals or {}).items():
            for span in spans:
                self._add_interval(source, span)

    @classmethod
    def parse(cls, text: str | None) -> GtidSet:
        """`@@gtid_executed` (newlines and spaces allowed); ValueError if not a GTID set."""
        result = cls()
        for item in re.sub(r"\s+", "", text or "").split(","):
            if not item:
                continue
            parts = item.lower().split(":")
            uuid, tag = parts[0], ""
            if not UUID.match(uuid) or len(parts) < 2:
                raise ValueError(f"{item!r} is not {EXPECTED}")
            pending = True  # a uuid or a tag still waits for its first interval
            for part in parts[1:]:
                if TAG.match(part):
                    if pending:
                        raise ValueError(f"{item!r} names a tag without intervals; {EXPECTED}")
                    tag, pending = part, True
                    continue
                pending = False
                first, _, last = part.partition("-")
                if not first.isdigit() or (last and not last.isdigit()):
                    raise ValueError(f"{item!r} is not {EXPECTED}")
                low, high = int(first), int(last or first)
                if low < 1 or high < low:
                    raise ValueError(f"{item!r} has an empty or zero interval; {EXPECTED}")
                result._add_interval((uuid, tag), (low, high))
            if pending:
                raise ValueError(f"{item!r} ends without an interval; {EXPECTED}")
        return result

    def _add_interval(self, source: Origin, span: Interval) -> None:
        merged: list[Interval] = []
        low, high = span
        for a, b in self.intervals.get(source, []):
            if b + 1 < low or high + 1 < a:
                merged.append((a, b))
            else:
                low, high = min(low, a), max(high, b)
        merged.append((low, high))
        self.intervals[source] = sorted(merged)

    def add(self, gtid: MySQLGtid) -> None:
        self._add_interval((gtid.uuid, gtid.tag), (gtid.number, gtid.number))

    def union(self, other: GtidSet) -> GtidSet:
        result = self.copy()
        for source, spans in other.intervals.items():
            for span in spans:
                result._add_interval(source, span)
        return result

    def copy(self) -> GtidSet:
        return GtidSet({source: list(spans) for source, spans in self.intervals.items()})

    def __contains__(self, gtid: object) -> bool:
        if not isinstance(gtid, MySQLGtid):
            return False
        spans = self.intervals.get((gtid.uuid, gtid.tag), [])
        return any(a <= gtid.number <= b for a, b in spans)

    def issubset(self, other: GtidSet) -> bool:
        return not self.minus(other)

    def minus(self, other: GtidSet) -> GtidSet:
        """The GTIDs of this set that `other` lacks."""
        result = GtidSet()
        for source, spans in self.intervals.items():
            theirs = other.intervals.get(source, [])
            for low, high in spans:
                for piece in _subtract((low, high), theirs):
                    result._add_interval(source, piece)
        return result

    def count(self) -> int:
        """How many transactions: a measure of progress between two sets."""
        return sum(b - a + 1 for spans in self.intervals.values() for a, b in spans)

    def uuids(self) -> set[str]:
        return {uuid for uuid, _ in self.intervals}

    def __iter__(self) -> Iterator[Origin]:
        return iter(sorted(self.intervals))

    def __bool__(self) -> bool:
        return bool(self.intervals)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GtidSet) and self.intervals == other.intervals

    def __hash__(self) -> int:
        return hash(str(self))

    def __str__(self) -> str:
        by_uuid: dict[str, list[str]] = {}
        for uuid, tag in sorted(self.intervals):
            spans = ":".join(f"{a}-{b}" if b > a else str(a) for a, b in self.intervals[uuid, tag])
            by_uuid.setdefault(uuid, []).append(f"{tag}:{spans}" if tag else spans)
        return ",".join(f"{uuid}:{':'.join(parts)}" for uuid, parts in by_uuid.items())

    def __repr__(self) -> str:
        return f"GtidSet({str(self)!r})"


def _subtract(span: Interval, others: Iterable[Interval]) -> list[Interval]:
    pieces = [span]
    for a, b in others:
        next_pieces: list[Interval] = []
        for low, high in pieces:
            if b < low or high < a:
                next_pieces.append((low, high))
                continue
            if low < a:
                next_pieces.append((low, a - 1))
            if b < high:
                next_pieces.append((b + 1, high))
        pieces = next_pieces
    return pieces


def judge_coverage(backup: GtidSet, executed: GtidSet, purged: GtidSet) -> Verdict:
    """Can the source send what comes after `backup`?

    `executed` is the source's @@gtid_executed and `purged` its @@gtid_purged (what its
    binary logs no longer hold). A backup with transactions the source never executed
    carries errant GTIDs: catching it up would silently keep them, so it is refused.
    """
    errant = backup.minus(executed)
    if errant:
        unknown = errant.uuids() - executed.uuids()
        if unknown:
            return Verdict(
                Coverage.FOREIGN,
                f"backup has transactions of server(s) {', '.join(sorted(unknown))} that the "
                f"source has never executed (errant GTIDs {errant})",
            )
        return Verdict(
            Coverage.AHEAD,
            f"backup has transactions the source has not executed (errant GTIDs {errant})",
        )
    missing = purged.minus(backup)
    if missing:
        return Verdict(
            Coverage.PURGED,
            f"source's binary logs no longer hold {missing}, which the backup lacks",
        )
    return Verdict(Coverage.COVERED, "source's binary logs cover the delta")


def compare_positions(a: GtidSet, b: GtidSet) -> int | None:
    """-1, 0 or 1 as `a` is a proper subset of, equal to or a proper superset of `b`;
    None when neither contains the other (different histories)."""
    if a == b:
        return 0
    if a.issubset(b):
        return -1
    if b.issubset(a):
        return 1
    return None


def parse_position(text: str) -> GtidSet:
    """A GTID set typed by an operator, normalised; ValueError naming the expected form."""
    try:
        position = GtidSet.parse(text)
    except ValueError as exc:
        raise ValueError(f"{text!r}: {exc}") from None
    if not position:
        raise ValueError(f"{text!r} is not {EXPECTED}")
    return position
