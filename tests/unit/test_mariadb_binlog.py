"""The MariaDB binlog reader (binlog.py), replay planning (replay.py) and GTID position
comparison, on files built here event by event in the documented v4 layout. The same
reader is checked against a real server's own event list in
tests/integration/test_mariadb_archive.py."""

from __future__ import annotations

import re
import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from catchup.engines import LogTarget
from catchup.engines.mariadb import binlog
from catchup.engines.mariadb.binlog import BinlogFormatError, BinlogReader, archive_order
from catchup.engines.mariadb.gtid import Position, compare_positions, parse_position
from catchup.engines.mariadb.replay import plan_replay, stage_relay_logs
from catchup.errors import ArchiveGapError

T0 = 1_796_284_000  # a binlog timestamp (whole seconds)
WRITE_ROWS = 30
BINLOG_CHECKPOINT = 161


class Writer:
    """Builds a binlog file event by event, with CRC32 trailers unless told otherwise."""

    def __init__(self, checksum: bool = True) -> None:
        self.checksum = checksum
        self.data = bytearray(binlog.MAGIC)
        post_headers = bytes(40)
        fixed = struct.pack("<H", 4) + b"10.11.19-MariaDB".ljust(50, b"\0") + struct.pack("<I", T0)
        algorithm = bytes([binlog.CHECKSUM_CRC32 if checksum else 0])
        body = fixed + bytes([19]) + post_headers + algorithm
        self.event(binlog.FORMAT_DESCRIPTION_EVENT, body, trailer=True)

    def event(self, kind: int, body: bytes, at: int = T0, server: int = 1, trailer: bool = False):
        size = binlog.HEADER_SIZE + len(body) + (4 if self.checksum or trailer else 0)
        header = binlog.HEADER.pack(at, kind, server, size, len(self.data) + size, 0)
        self.data += header + body
        if self.checksum or trailer:
            self.data += struct.pack("<I", zlib.crc32(header + body))
        return len(self.data)

    def gtid_list(self, *gtids: tuple[int, int, int]) -> int:
        body = struct.pack("<I", len(gtids))
        body += b"".join(struct.pack("<IIQ", d, s, n) for d, s, n in gtids)
        return self.event(binlog.GTID_LIST_EVENT, body, at=0)

    def gtid(self, seqno: int, at: int, standalone: bool = False, domain: int = 0, server=1):
        flags = binlog.FL_STANDALONE if standalone else 0
        body = struct.pack("<QIB", seqno, domain, flags) + bytes(6)
        return self.event(binlog.GTID_EVENT, body, at=at, server=server)

    def query(self, text: str, at: int = T0) -> int:
        status = b"\x00\x00\x00\x00\x00"
        post = struct.pack("<IIBHH", 7, 0, 4, 0, len(status))
        return self.event(binlog.QUERY_EVENT, post + status + b"shop\0" + text.encode(), at=at)

    def transaction(self, seqno: int, at: int, domain: int = 0) -> int:
        self.gtid(seqno, at, domain=domain)
        self.query("BEGIN", at)
        self.event(WRITE_ROWS, bytes(50), at=at - 3)  # a row event of an earlier statement
        return self.event(binlog.XID_EVENT, struct.pack("<Q", seqno), at=at)

    def save(self, path: Path) -> Path:
        path.write_bytes(bytes(self.data))
        return path


def sample(checksum: bool = True) -> tuple[Writer, dict[str, int]]:
    w = Writer(checksum)
    ends = {"list": w.gtid_list((0, 2, 3), (0, 1, 5))}  # the newest of a domain comes last
    w.event(BINLOG_CHECKPOINT, b"\x0abinlog.000001")
    ends["trx"] = w.transaction(6, T0 + 1)
    w.gtid(7, T0 + 2, standalone=True)
    ends["ddl"] = w.query("CREATE TABLE t (id INT)", T0 + 2)
    w.gtid(8, T0 + 3)
    w.query("BEGIN", T0 + 3)
    w.query("INSERT INTO m VALUES (1)", T0 + 3)
    ends["myisam"] = w.query("COMMIT", T0 + 3)
    w.gtid(9, T0 + 4)
    w.query("XA START 'x'", T0 + 4)
    ends["xa"] = w.event(binlog.XA_PREPARE_LOG_EVENT, bytes(12), at=T0 + 4)
    w.gtid(10, T0 + 5, standalone=True)
    w.event(binlog.INTVAR_EVENT, bytes(9), at=T0 + 5)  # context of the one statement
    ends["standalone"] = w.query("INSERT INTO m VALUES (NULL)", T0 + 5)
    ends["rotate"] = w.event(binlog.ROTATE_EVENT, struct.pack("<Q", 4) + b"binlog.000002")
    return w, ends


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


@pytest.mark.parametrize("checksum", [True, False])
def test_transactions_end_where_their_group_ends(tmp_path: Path, checksum: bool) -> None:
    w, ends = sample(checksum)
    reader = BinlogReader()
    reader.read(w.save(tmp_path / "f"))
    groups = [(b.offset, str(b.position), b.time) for b in reader.boundaries if b.group]
    assert groups == [
        (ends["trx"], "0-1-6", at(1)),
        (ends["ddl"], "0-1-7", at(2)),
        (ends["myisam"], "0-1-8", at(3)),
        (ends["xa"], "0-1-9", at(4)),
        (ends["standalone"], "0-1-10", at(5)),
    ]
    assert reader.boundaries[0].offset == ends["list"] and str(reader.boundaries[0].position) == (
        "0-1-5"
    )
    assert reader.settled == ends["rotate"] == len(w.data)


def test_bytes_arriving_in_pieces_settle_only_at_whole_transactions(tmp_path: Path) -> None:
    w, ends = sample()
    whole = BinlogReader()
    whole.read(w.save(tmp_path / "whole"))
    path = tmp_path / "growing"
    reader = BinlogReader()
    seen = set()
    for cut in range(0, len(w.data) + 1, 7):
        path.write_bytes(bytes(w.data[:cut]))
        reader.read(path)
        assert reader.settled <= cut
        assert reader.settled in {0, *(b.offset for b in whole.boundaries)}
        seen.add(reader.settled)
    reader.read(w.save(path))
    assert reader.boundaries == whole.boundaries
    assert ends["trx"] in seen and ends["trx"] + 1 not in seen


def test_a_stream_started_at_a_gtid_never_reports_less_than_its_start(tmp_path: Path) -> None:
    w = Writer()
    w.gtid_list()  # the file's own list: its state at the file's start
    w.gtid_list((0, 1, 6))  # the stream's start, sent as a second list
    end = w.transaction(7, T0)
    reader = BinlogReader(floor=Position.parse("0-1-6"))
    reader.read(w.save(tmp_path / "f"))
    assert [str(b.position) for b in reader.boundaries] == ["0-1-6", "0-1-6", "0-1-7"]
    assert reader.settled == end


def test_marks_forget_what_is_behind_them(tmp_path: Path) -> None:
    w, ends = sample()
    reader = BinlogReader()
    reader.read(w.save(tmp_path / "f"))
    assert str(reader.at(ends["ddl"] + 5).position) == "0-1-7"  # the last whole one
    assert reader.boundaries[0].offset == ends["ddl"]
    assert reader.at(ends["trx"]) is None  # forgotten: the caller reads the file again


def test_a_file_that_is_not_a_binlog_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"not a binlog at all")
    with pytest.raises(BinlogFormatError, match="magic"):
        BinlogReader().read(path)


def test_archived_names_sort_by_stream_then_binlog_number() -> None:
    names = [
        "20261203T080000.000001Z-binlog.1000000",
        "20261203T070000.000000Z-binlog.000002",
        "20261203T080000.000001Z-binlog.999999",
    ]
    assert sorted(names, key=archive_order) == [names[1], names[2], names[0]]
    with pytest.raises(ValueError, match="not an archived"):
        archive_order("binlog.000001")


def files(tmp_path: Path, *writers: Writer) -> list[Path]:
    return [w.save(tmp_path / f"20261203T070000.00000{i}Z-b.{i:06}") for i, w in enumerate(writers)]


def two_files(tmp_path: Path, second_starts: int = 8) -> list[Path]:
    first = Writer()
    first.gtid_list((0, 1, 5))
    for seqno in (6, 7, 8):
        first.transaction(seqno, T0 + seqno)
    first.event(binlog.ROTATE_EVENT, struct.pack("<Q", 4) + b"b.000001")
    second = Writer()
    second.gtid_list((0, 1, second_starts))
    for seqno in range(second_starts + 1, second_starts + 5):
        second.transaction(seqno, T0 + 10 + seqno // 2)  # two per second
    return files(tmp_path, first, second)


def test_a_time_target_is_inclusive_to_the_second(tmp_path: Path) -> None:
    paths = two_files(tmp_path)
    start = Position.parse("0-1-6")
    # The second file's 9 commits at second 14, 10 and 11 at 15, 12 at 16.
    plan = plan_replay(start, paths, LogTarget(time=at(15)))
    assert str(plan.end) == "0-1-11" and plan.time == at(15)
    plan = plan_replay(start, paths, LogTarget(time=at(15).replace(microsecond=999_999)))
    assert str(plan.end) == "0-1-11"
    assert plan.pieces[0].start is not None and plan.pieces[-1].path == paths[1]
    assert str(plan_replay(start, paths, LogTarget(time=at(14))).end) == "0-1-9"
    assert str(plan_replay(start, paths, LogTarget(time=at(13))).end) == "0-1-8"
    # The last commit's second is the end of the window; a later time may have had
    # commits the archive does not hold yet: refused.
    assert str(plan_replay(start, paths, LogTarget(time=at(16))).end) == "0-1-12"
    ends = re.escape(f"ends at 0-1-12, last commit {at(16).isoformat()}")
    with pytest.raises(ArchiveGapError, match=ends):
        plan_replay(start, paths, LogTarget(time=at(17)))


def test_a_position_target_is_inclusive_and_exact(tmp_path: Path) -> None:
    paths = two_files(tmp_path)
    plan = plan_replay(Position.parse("0-1-5"), paths, LogTarget(position="0-1-9"))
    assert str(plan.end) == "0-1-9"
    assert plan.pieces[0].start is not None and plan.pieces[-1].stop is not None
    with pytest.raises(ArchiveGapError, match="not in the archived history"):
        plan_replay(Position.parse("0-1-5"), paths, LogTarget(position="0-2-9"))
    with pytest.raises(ArchiveGapError, match="past the archive: the archive ends at 0-1-12"):
        plan_replay(Position.parse("0-1-5"), paths, LogTarget(position="0-1-13"))
    with pytest.raises(ArchiveGapError, match="not after the backup's position"):
        plan_replay(Position.parse("0-1-7"), paths, LogTarget(position="0-1-6"))
    assert plan_replay(Position.parse("0-1-7"), paths, LogTarget(position="0-1-7")).pieces == []


def test_the_planned_bytes_become_relay_logs_cut_at_the_target(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    paths = two_files(tmp_path / "archive")
    plan = plan_replay(Position.parse("0-1-6"), paths, LogTarget(position="0-1-10"))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    stage_relay_logs(data_dir, plan.pieces)
    assert (data_dir / "relay-bin.index").read_text() == "./relay-bin.000001\n./relay-bin.000002\n"
    assert (data_dir / "relay-bin.000001").read_bytes() == paths[0].read_bytes()
    stop = plan.pieces[-1].stop
    assert stop is not None and stop < paths[1].stat().st_size
    assert (data_dir / "relay-bin.000002").read_bytes() == paths[1].read_bytes()[:stop]
    # The cut copy ends where the reader found the end of 0-1-10.
    reader = BinlogReader()
    reader.read(data_dir / "relay-bin.000002")
    assert str(reader.boundaries[-1].position) == "0-1-10" and reader.settled == stop


def test_part_of_a_transaction_at_the_end_of_a_file_is_never_replayed(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    paths = two_files(tmp_path / "archive")
    whole = paths[0].read_bytes()
    partial = Writer()
    header_end = len(partial.data)
    partial.transaction(9, T0 + 9)  # what a killed stream may leave: the start of one
    paths[0].write_bytes(whole + bytes(partial.data[header_end:-20]))
    plan = plan_replay(Position.parse("0-1-6"), paths, LogTarget(position="0-1-10"))
    assert plan.pieces[0].stop == len(whole)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    stage_relay_logs(data_dir, plan.pieces)
    assert (data_dir / "relay-bin.000001").read_bytes() == whole


def test_gaps_overlaps_and_a_missing_start_are_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "gap").mkdir()
    gap = two_files(tmp_path / "gap", 9)
    with pytest.raises(ArchiveGapError, match=r"a gap at 0-1-8: the next file .* starts at 0-1-9"):
        plan_replay(Position.parse("0-1-5"), gap, LogTarget(position="0-1-12"))
    assert str(plan_replay(Position.parse("0-1-5"), gap, LogTarget(position="0-1-8")).end) == (
        "0-1-8"
    )
    (tmp_path / "overlap").mkdir()
    overlap = two_files(tmp_path / "overlap", 7)
    with pytest.raises(ArchiveGapError, match="an overlap at 0-1-8"):
        plan_replay(Position.parse("0-1-5"), overlap, LogTarget(position="0-1-9"))
    with pytest.raises(ArchiveGapError, match="does not hold the backup's position 0-1-2"):
        plan_replay(Position.parse("0-1-2"), gap, LogTarget(position="0-1-8"))


def test_positions_compare_per_domain() -> None:
    def cmp(a: str, b: str) -> int | None:
        return compare_positions(Position.parse(a), Position.parse(b))

    assert cmp("0-1-5", "0-1-5") == 0
    assert cmp("0-1-5", "0-1-6") == -1
    assert cmp("0-2-9", "0-1-6") == 1  # a failover continues the domain's sequence
    assert cmp("0-2-6", "0-1-6") is None  # two different transactions
    assert cmp("0-1-5,1-1-3", "0-1-5") == 1
    assert cmp("0-1-6,1-1-3", "0-1-5,1-1-4") is None
    assert cmp("", "0-1-1") == -1


def test_operator_positions_are_checked() -> None:
    assert str(parse_position(" 1-2-5, 0-1-100")) == "0-1-100,1-2-5"
    for bad in ("", "0-1", "0-1-x", "0-1-5,0-1-6", "lsn 0/1"):
        with pytest.raises(ValueError, match="domain-server-seqno"):
            parse_position(bad)
