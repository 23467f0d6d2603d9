"""The pure parts of the PostgreSQL log archive: spool file names, settled lengths,
record ends, pg_waldump's lines, positions, where a stream begins, replay settings."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from catchup.config import Shard
from catchup.engines import LogTarget
from catchup.engines.postgres.archive import archive_slot_name, plan_start
from catchup.engines.postgres.lsn import (
    WAL_SEGMENT,
    compare_positions,
    parse_position,
)
from catchup.engines.postgres.replay import recovery_settings
from catchup.engines.postgres.source import SLOT_NAME_LIMIT, is_chain_slot_of, legacy_slot_name
from catchup.engines.postgres.walfiles import (
    WalName,
    parse_name,
    parse_waldump,
    record_end,
    settled_length,
)


def test_names_strip_partial_and_sort_in_log_order() -> None:
    assert parse_name("000000010000000000000003.partial") == WalName(1, True, 3)
    assert parse_name("000000020000000100000002") == WalName(2, True, 0x102)
    assert parse_name("00000002.history") == WalName(2, False, 0)
    for stranger in ("00000002.history.tmp", "000000010000000000000003.tmp", "backup_label"):
        assert parse_name(stranger) is None
    names = [
        "000000020000000000000005",
        "00000002.history",
        "000000010000000000000005.partial",
        "000000010000000000000004",
    ]
    ordered = sorted(w for n in names if (w := parse_name(n)) is not None)
    assert [w.name for w in ordered] == [
        "000000010000000000000004",
        "000000010000000000000005",
        "00000002.history",
        "000000020000000000000005",
    ]
    assert WalName(1, True, 0x102).start_lsn == 0x102 * WAL_SEGMENT


def test_a_partial_segment_is_settled_up_to_its_last_non_zero_byte(tmp_path: Path) -> None:
    partial = tmp_path / "000000010000000000000001.partial"
    partial.write_bytes(b"\1" * 100 + b"\0\0\7" + b"\0" * 5000)
    assert settled_length(partial) == 103
    assert settled_length(partial, chunk=7) == 103  # found across chunk boundaries
    assert settled_length(partial, floor=103) == 103
    partial.write_bytes(b"\0" * 4096)
    assert settled_length(partial) == 0
    assert settled_length(partial, floor=50) == 50  # never less than settled before
    complete = tmp_path / "000000010000000000000001"
    complete.write_bytes(b"\1" + b"\0" * 99)  # a completed segment: all of it
    assert settled_length(complete) == 100


def test_record_ends_are_maxaligned_and_skip_page_headers() -> None:
    assert record_end(0x1000028, 34) == 0x1000050  # 0x...4A aligned up
    assert record_end(0x1000028, 40) == 0x1000050
    # 8 bytes left on the page: the rest follows the next page's 24-byte header.
    assert record_end(0x1001FF8, 24) == 0x1002000 + 24 + 16
    # Across a segment boundary the header is the long one (40 bytes).
    assert record_end(WAL_SEGMENT * 2 - 8, 24) == WAL_SEGMENT * 2 + 40 + 16
    assert record_end(0x1001FE0, 32) == 0x1002000  # ends exactly at the page end


def test_waldump_lines_give_the_last_end_and_commit_time() -> None:
    output = (
        "rmgr: Heap        len (rec/tot):     59/    59, tx:        729, lsn: 0/01519A68, "
        "prev 0/01519A40, desc: INSERT off 2 flags 0x00, blkref #0: rel 1663/5/16385 blk 0\n"
        "rmgr: Transaction len (rec/tot):     34/    34, tx:        729, lsn: 0/01519AA8, "
        "prev 0/01519A68, desc: COMMIT 2026-12-03 07:57:23.813844 UTC\n"
        "rmgr: Standby     len (rec/tot):     50/    50, tx:          0, lsn: 0/01519AD0, "
        "prev 0/01519AA8, desc: RUNNING_XACTS nextXid 730 latestCompletedXid 729 "
        "oldestRunningXid 730\n"
    )
    dumped = parse_waldump(output)
    assert dumped.end == 0x1519B08
    assert dumped.commit_time == datetime(2026, 12, 3, 7, 57, 23, 813844, tzinfo=UTC)
    switch = (
        "rmgr: XLOG        len (rec/tot):     24/    24, tx:          0, lsn: 0/0401DF80, "
        "prev 0/0401DDE8, desc: SWITCH \n"
    )
    assert parse_waldump(switch).end == 0x5000000  # the rest of the segment is its
    assert parse_waldump("pg_waldump: error: could not find a valid record").end is None


def test_positions_compare_on_a_timeline_and_across_a_failover() -> None:
    assert compare_positions("0/3000148@1", "0/3000150@1:catchup_x") == -1
    assert compare_positions("0/3000148@1:a", "0/3000148@1:b") == 0
    assert compare_positions("1/0@1", "0/FFFFFFFF@1") == 1
    # The newer timeline descends from the older: before it up to its position …
    assert compare_positions("0/3000148@1", "0/4000000@2") == -1
    assert compare_positions("0/4000000@2", "0/3000148@1") == 1
    # … and past it, on the old timeline, the histories differ.
    assert compare_positions("0/5000000@1", "0/4000000@2") is None
    assert compare_positions("0/4000000@2", "0/5000000@1") is None
    # An operator's bare LSN falls on whichever timeline it is compared with.
    assert compare_positions("0/5000000", "0/4000000@2") == 1


def test_positions_typed_by_an_operator() -> None:
    assert parse_position(" 0/3000148 ") == "0/3000148"
    assert parse_position("0/03000148@2") == "0/3000148@2"
    assert parse_position("a/b") == "A/B"
    for bad in ("3000148", "0/3000148@", "0/3000148@x", "0/3000148@0", "x/1", "0/1/2", ""):
        with pytest.raises(ValueError, match="X/Y in hex"):
            parse_position(bad)


SEGMENT = WAL_SEGMENT


def test_a_new_stream_begins_at_the_slots_segment() -> None:
    start, partial = plan_start(None, 1, 3 * SEGMENT + 500, [])
    assert start == "0/3000000@1" and partial == WalName(1, True, 3)


def test_a_resumed_stream_begins_exactly_at_the_archives_end() -> None:
    # The slot still holds the segment: a zero .partial makes pg_receivewal begin there.
    start, partial = plan_start("0/5000100@1", 2, 5 * SEGMENT + 64, [])
    assert start == "0/5000100@1" and partial == WalName(1, True, 5)
    # The spool has it (kill -9 of the tool): pg_receivewal begins at its .partial.
    spool = [(WalName(1, True, 5), True)]
    assert plan_start("0/5000100@1", 1, 5 * SEGMENT, spool) == ("0/5000100@1", None)
    # The spool even holds later, not yet archived segments.
    spool = [(WalName(1, True, 5), False), (WalName(1, True, 6), True)]
    assert plan_start("0/5000100@1", 1, 6 * SEGMENT + 8, spool) == ("0/5000100@1", None)


def test_a_stream_that_cannot_resume_exactly_begins_later() -> None:
    # The slot moved on (its WAL lost, recreated) and the spool is gone: a gap.
    start, partial = plan_start("0/5000100@1", 1, 9 * SEGMENT + 8, [])
    assert start == "0/9000000@1" and partial == WalName(1, True, 9)
    # A hole in the spool between the archive's end and where the tool goes on.
    spool = [(WalName(1, True, 5), False), (WalName(1, True, 7), True)]
    assert plan_start("0/5000100@1", 1, 5 * SEGMENT, spool) == ("0/7000000@1", None)


def test_the_archive_slot_is_no_chain_slot() -> None:
    shard = Shard(keyspace="pg", shard="0", engine="postgres", source="db:5432")
    name = archive_slot_name(shard)
    assert name.startswith("catchup_archive_") and len(name) <= SLOT_NAME_LIMIT
    assert not is_chain_slot_of(shard, name) and name != legacy_slot_name(shard)
    long = Shard(keyspace="k" * 60, shard="s" * 60, engine="postgres", source="db:5432")
    assert len(archive_slot_name(long)) <= SLOT_NAME_LIMIT


def test_replay_settings_make_both_targets_inclusive(tmp_path: Path) -> None:
    moment = datetime(2026, 12, 3, 10, 14, 0, 123456, tzinfo=UTC)
    by_time = recovery_settings(tmp_path, LogTarget(time=moment))
    assert "recovery_target_time = '2026-12-03 10:14:00.123456+00:00'" in by_time
    assert "recovery_target_inclusive = on" in by_time
    by_position = recovery_settings(tmp_path, LogTarget(position="0/3000148@1"))
    assert "recovery_target_lsn = '0/3000148'" in by_position
    # Records beginning before the position: the commit ending there is in.
    assert "recovery_target_inclusive = off" in by_position
    assert f"test -f {tmp_path}/%f && cp {tmp_path}/%f %p" in by_position
    nothing = recovery_settings(tmp_path, LogTarget())
    assert "recovery_target_time =" not in nothing and "recovery_target_lsn" not in nothing
