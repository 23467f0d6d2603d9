import pytest

from catchup.engines import Coverage
from catchup.engines.mariadb.gtid import Gtid, Position, judge_coverage, parse_state

P = Position.parse


def test_parse_and_format_round_trip():
    position = P("1-10-7, 0-1-42")
    assert position[0] == Gtid(0, 1, 42)
    assert str(position) == "0-1-42,1-10-7"
    assert position.transactions() == 49
    assert P("") == {} and P(None) == {}


@pytest.mark.parametrize("text", ["0-1", "a-b-c", "0-1-2-3", "0--1"])
def test_parse_rejects_garbage(text):
    with pytest.raises(ValueError, match="not a MariaDB GTID"):
        P(text)


@pytest.mark.parametrize(
    ("backup", "current", "oldest", "expected"),
    [
        ("0-1-10", "0-1-50", "", Coverage.COVERED),
        ("0-1-10", "0-1-50", "0-1-10", Coverage.COVERED),  # log starts right after the backup
        ("0-1-10", "0-1-50", "0-1-11", Coverage.PURGED),
        ("0-1-10", "0-1-50,1-2-5", "1-2-3", Coverage.PURGED),  # a new domain's start was purged
        ("0-1-10", "0-1-50,1-2-5", "", Coverage.COVERED),  # a new domain, fully logged
        ("0-1-60", "0-1-50", "", Coverage.AHEAD),
        ("0-1-50", "0-2-50", "", Coverage.FOREIGN),
        ("3-1-5", "0-1-50", "", Coverage.FOREIGN),
        ("0-1-50", "0-1-50", "0-1-50", Coverage.COVERED),  # zero delta
    ],
)
def test_judge_coverage(backup, current, oldest, expected):
    verdict = judge_coverage(P(backup), P(current), P(oldest))
    assert verdict.coverage is expected, verdict.reason
    assert verdict.reason


@pytest.mark.parametrize(
    ("backup", "history", "expected"),
    [
        ("0-1-19", "0-1-40", Coverage.COVERED),
        ("0-1-19", "0-1-19,0-2-60", Coverage.COVERED),  # a failover after the backup
        ("0-1-19", "0-7-60", Coverage.FOREIGN),  # server 1 never wrote this history
        ("0-1-19", "0-1-10,0-7-60", Coverage.FOREIGN),  # server 1 stopped before 19 here
    ],
)
def test_history_reveals_foreign_positions(backup, history, expected):
    current = P(history.split(",")[-1])
    verdict = judge_coverage(P(backup), current, P(""), parse_state(history))
    assert verdict.coverage is expected, verdict.reason
