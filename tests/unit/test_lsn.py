import pytest

from catchup.engines import Coverage
from catchup.engines.postgres.lsn import (
    SlotState,
    format_lsn,
    judge_coverage,
    judge_with_slots,
    parse_lsn,
    segment_name,
)

GIB = 1 << 30


def test_lsn_round_trip_and_segments():
    assert parse_lsn("0/4DE7BF8") == 0x4DE7BF8
    assert format_lsn(parse_lsn("1A/FF000028")) == "1A/FF000028"
    assert segment_name(1, parse_lsn("0/4DE7B48")) == "000000010000000000000004"
    assert segment_name(2, parse_lsn("1/FF000000")) == "0000000200000001000000FF"
    with pytest.raises(ValueError):
        parse_lsn("4DE7BF8")


HELD = SlotState(True, "reserved", 0x1000)


@pytest.mark.parametrize(
    ("backup", "tl", "current", "current_tl", "slot", "db", "expected"),
    [
        (0x2000, 1, 0x3000, 1, HELD, GIB, Coverage.COVERED),
        (0x2000, 1, 0x2000, 1, HELD, GIB, Coverage.COVERED),  # zero delta
        (0x4000, 1, 0x3000, 1, HELD, GIB, Coverage.AHEAD),
        (0x2000, 1, 0x3000, 2, HELD, GIB, Coverage.PURGED),  # a failover since
        (0x2000, 1, 0x3000, 1, SlotState(False), GIB, Coverage.PURGED),
        (0x2000, 1, 0x3000, 1, SlotState(True, "lost", None), GIB, Coverage.PURGED),
        # The source keeps the whole segment of the slot's restart_lsn, not past it.
        (0x2000, 1, 0x3000, 1, SlotState(True, "reserved", 0x2500), GIB, Coverage.COVERED),
        (0x2000, 1, 0x1003000, 1, SlotState(True, "reserved", 0x1002500), GIB, Coverage.PURGED),
        (0x2000, 1, 0x2000 + 2 * GIB, 1, HELD, GIB, Coverage.COSTLY),
    ],
)
def test_judge_coverage(backup, tl, current, current_tl, slot, db, expected):
    verdict = judge_coverage(backup, tl, current, current_tl, slot, db, 1.0)
    assert verdict.coverage is expected, verdict.reason


SEGMENT = 16 << 20
ARCHIVE = "catchup_archive_x"


@pytest.mark.parametrize(
    ("chain", "others", "expected", "borrowed"),
    [
        # The chain's slot holds it: the others do not matter.
        (HELD, {ARCHIVE: HELD}, Coverage.COVERED, None),
        # Dropped, lost or advanced past the position: the archiver's slot holds it.
        (SlotState(False), {ARCHIVE: HELD}, Coverage.COVERED, ARCHIVE),
        (SlotState(True, "lost", None), {ARCHIVE: HELD}, Coverage.COVERED, ARCHIVE),
        (SlotState(True, "reserved", 5 * SEGMENT), {ARCHIVE: HELD}, Coverage.COVERED, ARCHIVE),
        # Its restart_lsn a little past the position, in the same segment: still held.
        (SlotState(False), {ARCHIVE: SlotState(True, "reserved", 0x2F00)}, Coverage.COVERED,
         ARCHIVE),
        # No slot holds it.
        (SlotState(False), {ARCHIVE: SlotState(True, "reserved", SEGMENT)}, Coverage.PURGED,
         None),
        (SlotState(False), {ARCHIVE: SlotState(True, "unreserved", 0x1000)}, Coverage.PURGED,
         None),
        (SlotState(False), {}, Coverage.PURGED, None),
    ],
)  # fmt: skip
def test_judge_with_slots_takes_any_slot_that_holds_the_position(chain, others, expected, borrowed):
    verdict, relied_on = judge_with_slots(
        0x2000, 1, 0x3000, 1, ("catchup_chain", chain), others, GIB, 1.0
    )
    assert verdict.coverage is expected, verdict.reason
    assert relied_on == borrowed


def test_judge_with_slots_keeps_a_failover_purged_whatever_slot_holds_wal():
    verdict, relied_on = judge_with_slots(
        0x2000, 1, 0x3000, 2, ("catchup_chain", SlotState(False)), {ARCHIVE: HELD}, GIB, 1.0
    )
    assert verdict.coverage is Coverage.PURGED and relied_on is None


def test_recovery_stopped_at_a_target_on_a_page_boundary_is_past_the_page_header():
    from catchup.engines.postgres.lsn import stopped_at

    assert stopped_at(parse_lsn("0/454A0C8"), parse_lsn("0/454A0C8"))
    assert not stopped_at(parse_lsn("0/454A0D0"), parse_lsn("0/454A0C8"))
    # pg_current_wal_lsn() at a page boundary: the next record follows the page header.
    assert stopped_at(parse_lsn("0/454A018"), parse_lsn("0/454A000"))
    assert stopped_at(parse_lsn("0/5000028"), parse_lsn("0/5000000"))
    assert not stopped_at(parse_lsn("0/454A000"), parse_lsn("0/4549FF0"))
    assert not stopped_at(parse_lsn("0/454A100"), parse_lsn("0/454A000"))
