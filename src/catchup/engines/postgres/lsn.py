"""PostgreSQL WAL positions (LSNs, `X/Y`; positions `LSN@timeline:slot`) and the
precheck's verdict, as pure logic."""

from __future__ import annotations

import re
from dataclasses import dataclass

from catchup.engines import Coverage, Verdict

WAL_SEGMENT = 16 * 1024 * 1024
WAL_PAGE = 8192
# XLogPageHeaderData and XLogLongPageHeaderData (a segment's first page), MAXALIGNed.
PAGE_HEADERS = (24, 40)


def parse_lsn(text: str) -> int:
    high, sep, low = text.strip().partition("/")
    if not sep:
        raise ValueError(f"{text!r} is not a PostgreSQL LSN (X/Y)")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def stopped_at(stop: int, target: int) -> bool:
    """Whether recovery that stopped after the record starting at `stop` stopped at
    `target`: replay stops at the first record starting at or after it, which is past the
    page header when `target` (an insert position, say) falls on a page boundary."""
    if target % WAL_PAGE:
        return stop == target
    return stop - target in PAGE_HEADERS


def segment_name(timeline: int, lsn: int, segment_size: int = WAL_SEGMENT) -> str:
    """The WAL file holding `lsn` on `timeline`."""
    number = lsn // segment_size
    per_xlogid = 0x100000000 // segment_size
    return f"{timeline:08X}{number // per_xlogid:08X}{number % per_xlogid:08X}"


@dataclass(frozen=True)
class SlotState:
    exists: bool
    wal_status: str | None = None  # reserved, extended, unreserved, lost
    restart_lsn: int | None = None


def holds(slot: SlotState, lsn: int) -> bool:
    """Whether `slot` keeps the source's WAL at `lsn`: the source keeps the whole
    segment holding the slot's restart_lsn, and every later one."""
    if not slot.exists or slot.wal_status in ("lost", "unreserved") or slot.restart_lsn is None:
        return False
    return slot.restart_lsn // WAL_SEGMENT * WAL_SEGMENT <= lsn


def judge_with_slots(
    backup_lsn: int,
    backup_timeline: int,
    current_lsn: int,
    current_timeline: int,
    chain: tuple[str, SlotState],
    others: dict[str, SlotState],
    database_bytes: int,
    wal_ratio: float,
) -> tuple[Verdict, str | None]:
    """`judge_coverage` by the chain's slot; when that one no longer holds the WAL at
    the position (dropped, invalidated, advanced past it), by any other slot of the
    shard that does (the archiver's, say). Returns the verdict and the other slot it
    relies on (None: the chain's own), whose WAL a new chain slot must then take over."""
    name, slot = chain
    verdict = judge_coverage(
        backup_lsn, backup_timeline, current_lsn, current_timeline, slot, database_bytes,
        wal_ratio, slot_name=name,
    )  # fmt: skip
    if verdict.coverage is not Coverage.PURGED or holds(slot, backup_lsn):
        return verdict, None
    for other, state in sorted(others.items()):
        if other == name or not holds(state, backup_lsn):
            continue
        borrowed = judge_coverage(
            backup_lsn, backup_timeline, current_lsn, current_timeline, state, database_bytes,
            wal_ratio, slot_name=other,
        )  # fmt: skip
        if borrowed.coverage in (Coverage.COVERED, Coverage.COSTLY):
            reason = f"{verdict.reason}, but slot {other} holds it: {borrowed.reason}"
            return Verdict(borrowed.coverage, reason), other
    return verdict, None


def judge_coverage(
    backup_lsn: int,
    backup_timeline: int,
    current_lsn: int,
    current_timeline: int,
    slot: SlotState,
    database_bytes: int,
    wal_ratio: float,
    slot_name: str = "",
) -> Verdict:
    """Can the source stream everything after the backup, and is that cheaper than a base backup?"""
    if backup_lsn > current_lsn and backup_timeline == current_timeline:
        return Verdict(
            Coverage.AHEAD,
            f"backup is at {format_lsn(backup_lsn)}, ahead of the source's "
            f"{format_lsn(current_lsn)}",
        )
    if backup_timeline != current_timeline:
        return Verdict(
            Coverage.PURGED,
            f"the source is on timeline {current_timeline}, the backup on {backup_timeline} "
            "(failover or restore since the backup)",
        )
    if not slot.exists:
        named = f" {slot_name}" if slot_name else ""
        return Verdict(
            Coverage.PURGED,
            f"the backup chain's replication slot{named} is gone from the source (dropped?)",
        )
    if slot.wal_status in ("lost", "unreserved") or slot.restart_lsn is None:
        return Verdict(Coverage.PURGED, f"the slot's WAL is {slot.wal_status or 'not reserved'}")
    if not holds(slot, backup_lsn):
        return Verdict(
            Coverage.PURGED,
            f"the slot holds WAL only from {format_lsn(slot.restart_lsn)}, after the backup's "
            f"{format_lsn(backup_lsn)}",
        )
    delta = current_lsn - backup_lsn
    if database_bytes and delta > wal_ratio * database_bytes:
        return Verdict(
            Coverage.COSTLY,
            f"WAL since the backup ({delta >> 20} MiB) exceeds {wal_ratio:g} x the database "
            f"({database_bytes >> 20} MiB): a base backup costs the source less",
        )
    return Verdict(Coverage.COVERED, "the slot holds the WAL since the backup")


def split_position(position: str) -> tuple[int, int]:
    """'X/Y@timeline:slot' → (lsn, timeline)."""
    lsn, _, rest = position.partition("@")
    return parse_lsn(lsn), int(rest.partition(":")[0] or 1)


def make_position(lsn: int, timeline: int, slot: str | None) -> str:
    return f"{format_lsn(lsn)}@{timeline}" + (f":{slot}" if slot else "")


def position_slot(position: str) -> str | None:
    """The chain's slot named in a position; None in positions of older versions."""
    return position.partition("@")[2].partition(":")[2] or None


def compare_positions(a: str, b: str) -> int | None:
    """-1, 0 or 1 as `a` is before, at or after `b`; the `:slot` part is ignored.

    On one timeline, LSNs order positions. Across timelines this takes the newer one to
    descend from the older, as after a failover or promotion (LSNs continue across the
    switch): the older-timeline position is before one at an equal or later LSN, and
    None (no common history it can vouch for) when it lies beyond the newer-timeline
    position, past any switch point. Without the history files it cannot tell a
    position on an abandoned tail (written on the old timeline after the switch point)
    from one before the switch: replay, which reads the history files, refuses those.
    """
    (lsn_a, timeline_a), (lsn_b, timeline_b) = split_position(a), split_position(b)
    if "@" not in a or "@" not in b:
        timeline_a = timeline_b  # an operator's bare LSN: on whichever timeline it falls
    if timeline_a == timeline_b or (timeline_a < timeline_b) == (lsn_a <= lsn_b):
        return (lsn_a > lsn_b) - (lsn_a < lsn_b)
    return None


def parse_position(text: str) -> str:
    """An operator's `--to-position`: `X/Y` (an LSN, e.g. pg_current_wal_lsn(); it
    compares with any timeline's positions by LSN alone) or `X/Y@timeline`; normalised
    (upper-case hex, no leading zeros)."""
    lsn_text, at, timeline_text = text.strip().partition("@")
    try:
        lsn = parse_lsn(lsn_text)
        timeline = int(timeline_text) if timeline_text else 1
        if not re.fullmatch(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}", lsn_text.strip()):
            raise ValueError(lsn_text)
        if (at and not timeline_text.isdigit()) or timeline < 1:
            raise ValueError(timeline_text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a PostgreSQL position: give an LSN as X/Y in hex (as "
            "pg_current_wal_lsn() prints it, e.g. 0/3000148), optionally @timeline "
            "(e.g. 0/3000148@2)"
        ) from None
    return make_position(lsn, timeline, None) if timeline_text else format_lsn(lsn)
