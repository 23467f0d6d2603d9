import pytest

from catchup.engines import Coverage
from catchup.engines.postgres.lsn import (
    SlotState,
    format_lsn,
    judge_coverage,
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
        (0x2000, 1, 0x3000, 1, SlotState(True, "reserved", 0x2500), GIB, Coverage.PURGED),
        (0x2000, 1, 0x2000 + 2 * GIB, 1, HELD, GIB, Coverage.COSTLY),
    ],
)
def test_judge_coverage(backup, tl, current, current_tl, slot, db, expected):
    verdict = judge_coverage(backup, tl, current, current_tl, slot, db, 1.0)
    assert verdict.coverage is expected, verdict.reason


def test_recovery_stopped_at_a_target_on_a_page_boundary_is_past_the_page_header():
    from catchup.engines.postgres.lsn import stopped_at

    assert stopped_at(parse_lsn("0/454A0C8"), parse_lsn("0/454A0C8"))
    assert not stopped_at(parse_lsn("0/454A0D0"), parse_lsn("0/454A0C8"))
    # pg_current_wal_lsn() at a page boundary: the next record follows the page header.
    assert stopped_at(parse_lsn("0/454A018"), parse_lsn("0/454A000"))
    assert stopped_at(parse_lsn("0/5000028"), parse_lsn("0/5000000"))
    assert not stopped_at(parse_lsn("0/454A000"), parse_lsn("0/4549FF0"))
    assert not stopped_at(parse_lsn("0/454A100"), parse_lsn("0/454A000"))
