"""The MySQL binlog reader (mysql/binlog.py) and replay planning (mysql/replay.py), on
files built here event by event in the v4 layout, starting from a format description
and tagged-GTID events a MySQL 9.7.4 server wrote. The reader is checked against a
real stream in tests/integration/test_archive_contract.py (mysql)."""

from __future__ import annotations

import struct
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from catchup.engines import LogTarget
from catchup.engines.mariadb.binlog import HEADER, HEADER_SIZE, MAGIC
from catchup.engines.mysql import binlog
from catchup.engines.mysql.binlog import (
    BinlogFormatError,
    MySQLBinlogReader,
    previous_gtids,
    scan,
    varint,
)
from catchup.engines.mysql.gtid import GtidSet, MySQLGtid
from catchup.engines.mysql.replay import plan_replay, plan_toward
from catchup.errors import ArchiveGapError

U = "c98ce890-ef07-11f1-af7a-02fc00000001"
V = "3209b174-ef09-11f1-b843-02fc00000001"
# Events (header, body, CRC32) exactly as MySQL 9.7.4 wrote them.
FORMAT_DESCRIPTION = bytes.fromhex(
    "704c116b0f070000007b0000007f00000001000400392e372e342d3200000000000000000000000000000000"
    "0000000000000000000000000000000000000000000000000000000000000013000d00080000000004000400"
    "00006300041a08000000000000020000000a0a0a2a2a001234000a28000001cf918b54"
)
TAGGED_PREVIOUS = bytes.fromhex(  # c98ce890-…:1-24:mytag:1-2
    "704c116b230700000076000000f500000080000102000000000001c98ce890ef0711f1af7a02fc0000000100"
    "010000000000000001000000000000001900000000000000c98ce890ef0711f1af7a02fc000000010a6d7974"
    "6167010000000000000001000000000000000300000000000000" + "7c8789a3"
)
TAGGED_GTID = bytes.fromhex(  # c98ce890-…:mytag:3
    "f54c116b2a070000005200000058020000000002760000000225033102a1034102bd030e22c503bd02f404f1"
    "0300000002040c060a6d7974616708040a080c7fa7ef8bbcb861061051041283120bd8c936b8"
)
T0 = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
WRITE_ROWS, TABLE_MAP, ROTATE = 30, 19, 4


def micros(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


class Writer:
    """Builds a binlog file event by event, with CRC32 trailers unless told otherwise."""

    def __init__(self, checksum: bool = True) -> None:
        self.checksum = checksum
        fd = bytearray(FORMAT_DESCRIPTION)
        if not checksum:  # the algorithm byte, before the event's own CRC
            fd[-5] = 0
        self.data = bytearray(MAGIC) + fd

    def event(self, kind: int, body: bytes, at: datetime = T0) -> int:
        size = HEADER_SIZE + len(body) + (4 if self.checksum else 0)
        header = HEADER.pack(int(at.timestamp()), kind, 1, size, len(self.data) + size, 0)
        self.data += header + body
        if self.checksum:
            self.data += struct.pack("<I", zlib.crc32(header + body))
        return len(self.data)

    def raw(self, event: bytes) -> int:
        self.data += event
        return len(self.data)

    def previous(self, *sids: tuple[str, list[tuple[int, int]]]) -> int:
        body = struct.pack("<Q", len(sids))
        for uuid, spans in sids:
            body += UUID(uuid).bytes + struct.pack("<Q", len(spans))
            body += b"".join(struct.pack("<QQ", a, b + 1) for a, b in spans)
        return self.event(binlog.PREVIOUS_GTIDS_LOG_EVENT, body)

    def gtid(
        self, number: int, when: datetime | None, uuid: str = U, original: datetime | None = None
    ) -> int:
        sid = UUID(uuid).bytes if uuid else bytes(16)
        body = bytes([0]) + sid + struct.pack("<qBqq", number, 2, 0, 0)
        if when is not None:
            stamp = micros(when)
            if original is not None:
                body += (stamp | 1 << 55).to_bytes(7, "little")
                body += micros(original).to_bytes(7, "little")
            else:
                body += stamp.to_bytes(7, "little")
            body += bytes([200]) + struct.pack("<I", 90704)
        kind = binlog.GTID_LOG_EVENT if uuid else binlog.ANONYMOUS_GTID_LOG_EVENT
        return self.event(kind, body, at=(when or T0).replace(microsecond=0))

    def query(self, text: str) -> int:
        status = b"\x00\x00\x00\x00\x00"
        post = struct.pack("<IIBHH", 7, 0, 4, 0, len(status))
        return self.event(binlog.QUERY_EVENT, post + status + b"shop\0" + text.encode())

    def transaction(self, number: int, when: datetime, uuid: str = U) -> int:
        self.gtid(number, when, uuid)
        self.query("BEGIN")
        self.event(TABLE_MAP, bytes(30))
        self.event(WRITE_ROWS, bytes(50))
        return self.event(binlog.XID_EVENT, struct.pack("<Q", number))

    def save(self, path: Path) -> Path:
        path.write_bytes(bytes(self.data))
        return path


def test_transactions_of_every_kind_end_where_mysql_ends_them(tmp_path: Path) -> None:
    w = Writer()
    ends = {"previous": w.previous((U, [(1, 4)]))}  # one sid: its count's low byte is 1
    ends["dml"] = w.transaction(5, T0 + timedelta(microseconds=5))
    w.gtid(6, T0 + timedelta(seconds=1))
    ends["ddl"] = w.query("CREATE TABLE t (id INT)")
    w.gtid(7, T0 + timedelta(seconds=2))
    w.query("CREATE TABLE c START TRANSACTION")  # CREATE TABLE ... SELECT (8.0.21+)
    w.event(WRITE_ROWS, bytes(40))
    ends["ctas"] = w.event(binlog.XID_EVENT, bytes(8))
    w.gtid(8, T0 + timedelta(seconds=3))
    ends["compressed"] = w.event(binlog.TRANSACTION_PAYLOAD_EVENT, bytes(60))
    w.gtid(9, T0 + timedelta(seconds=4))
    w.query("XA START X'01'")
    w.event(WRITE_ROWS, bytes(40))
    w.query("XA END X'01'")
    ends["xa prepare"] = w.event(binlog.XA_PREPARE_LOG_EVENT, bytes(20))
    w.gtid(10, T0 + timedelta(seconds=5))
    ends["xa commit"] = w.query("XA COMMIT X'01'")
    w.gtid(11, T0 + timedelta(seconds=6))
    w.query("BEGIN")
    ends["rollback"] = w.query("ROLLBACK")
    ends["rotate"] = w.event(ROTATE, struct.pack("<Q", 4) + b"binlog.000002")
    reader = scan(w.save(tmp_path / "f"))
    got = [(b.offset, str(b.position), b.time, b.group) for b in reader.boundaries]
    assert got == [
        (ends["previous"], f"{U}:1-4", None, False),
        (ends["dml"], f"{U}:1-5", T0 + timedelta(microseconds=5), True),
        (ends["ddl"], f"{U}:1-6", T0 + timedelta(seconds=1), True),
        (ends["ctas"], f"{U}:1-7", T0 + timedelta(seconds=2), True),
        (ends["compressed"], f"{U}:1-8", T0 + timedelta(seconds=3), True),
        (ends["xa prepare"], f"{U}:1-9", T0 + timedelta(seconds=4), True),
        (ends["xa commit"], f"{U}:1-10", T0 + timedelta(seconds=5), True),
        (ends["rollback"], f"{U}:1-11", T0 + timedelta(seconds=6), True),
        (ends["rotate"], f"{U}:1-11", T0 + timedelta(seconds=6), False),
    ]
    assert reader.settled == len(w.data)


def test_a_file_without_checksums_and_older_gtid_events_read_alike(tmp_path: Path) -> None:
    w = Writer(checksum=False)
    w.previous((U, [(1, 2)]), (V, [(1, 1), (3, 3)]))
    w.gtid(3, None)  # 5.7: no commit timestamp; the header's second is the time
    w.query("BEGIN")
    end = w.event(binlog.XID_EVENT, bytes(8), at=T0 + timedelta(seconds=9))
    [head, trx] = scan(w.save(tmp_path / "f")).boundaries
    assert head.position == GtidSet.parse(f"{U}:1-2,{V}:1:3")
    assert (trx.offset, trx.time) == (end, T0 + timedelta(seconds=9))
    assert trx.position == GtidSet.parse(f"{U}:1-3,{V}:1:3")


def test_commit_time_is_the_immediate_timestamp_to_the_microsecond(tmp_path: Path) -> None:
    w = Writer()
    w.previous()
    here = T0 + timedelta(seconds=30, microseconds=123_456)
    w.gtid(1, here, original=T0)  # replicated: the original commit time follows, flagged
    w.query("BEGIN")
    w.event(binlog.XID_EVENT, bytes(8))
    [_, trx] = scan(w.save(tmp_path / "f")).boundaries
    assert trx.time == here


def test_anonymous_transactions_move_no_position(tmp_path: Path) -> None:
    w = Writer()
    w.previous((U, [(1, 3)]))
    w.gtid(0, T0, uuid="")
    w.query("BEGIN")
    w.event(binlog.XID_EVENT, bytes(8))
    [_, trx] = scan(w.save(tmp_path / "f")).boundaries
    assert (str(trx.position), trx.group) == (f"{U}:1-3", True)


def test_tagged_gtids_as_mysql_9_writes_them(tmp_path: Path) -> None:
    assert previous_gtids(TAGGED_PREVIOUS[HEADER_SIZE:-4]) == GtidSet.parse(f"{U}:1-24:mytag:1-2")
    w = Writer()
    w.raw(TAGGED_PREVIOUS)
    w.raw(TAGGED_GTID)
    w.query("BEGIN")
    end = w.event(binlog.XID_EVENT, bytes(8))
    [head, trx] = scan(w.save(tmp_path / "f")).boundaries
    assert str(head.position) == f"{U}:1-24:mytag:1-2"
    assert (trx.offset, str(trx.position)) == (end, f"{U}:1-24:mytag:1-3")
    assert trx.time == datetime(2026, 12, 3, 11, 5, 25, 428135, tzinfo=UTC)  # its header: 11:05:25
    assert MySQLGtid(U, "mytag", 3) in trx.position


def test_varints_of_mysql_serialization() -> None:
    assert varint(b"\x02", 0) == (1, 1)
    assert varint(b"\x4d\x03", 0) == (211, 2)  # one trailing 1 bit: two bytes
    assert varint(b"\x83\x12\x0b", 0) == (90704, 3)
    assert varint(b"\xff" + (2**64 - 1).to_bytes(8, "little"), 0) == (2**64 - 1, 9)
    with pytest.raises(ValueError):
        varint(b"\x03", 0)


def test_a_growing_file_settles_only_whole_transactions(tmp_path: Path) -> None:
    w = Writer()
    head = w.previous((U, [(1, 4)]))
    w.gtid(5, T0)
    mid = w.query("BEGIN")
    first = w.event(binlog.XID_EVENT, bytes(8))
    second = w.transaction(6, T0 + timedelta(seconds=1))
    path = tmp_path / "f"
    reader = MySQLBinlogReader()
    for cut, settled in [(2, 0), (head - 3, 0), (head, head), (mid + 5, head), (first, first)]:
        path.write_bytes(bytes(w.data[:cut]))
        reader.read(path)
        assert reader.settled == settled, cut
    path.write_bytes(bytes(w.data))
    reader.read(path)
    assert reader.settled == second
    assert str(reader.at(second - 1).position) == f"{U}:1-5"  # type: ignore[union-attr]
    assert str(reader.at(second).position) == f"{U}:1-6"  # type: ignore[union-attr]


def test_a_floor_fills_in_what_an_exclude_gtids_stream_left_out(tmp_path: Path) -> None:
    w = Writer()
    w.previous((U, [(1, 4)]))
    w.transaction(9, T0)  # 5-8 were excluded: the archive has them from an earlier stream
    reader = scan(w.save(tmp_path / "f"), floor=GtidSet.parse(f"{U}:1-8"))
    assert str(reader.boundaries[-1].position) == f"{U}:1-9"


def test_damage_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"\xfeBIN" + bytes(40))
    with pytest.raises(BinlogFormatError, match="magic"):
        scan(path)
    w = Writer()
    w.event(binlog.PREVIOUS_GTIDS_LOG_EVENT, struct.pack("<Q", 3))  # claims 3 sids, has none
    with pytest.raises(BinlogFormatError, match="event 35 at 127"):
        scan(w.save(path))


def archive(tmp_path: Path) -> list[Path]:
    """Two streams' files: the second resumed at 1-6 with 5-6 excluded from its file."""
    a = Writer()
    a.previous((U, [(1, 2)]))
    for number in range(3, 7):
        a.transaction(number, T0 + timedelta(seconds=number, microseconds=number))
    b = Writer()
    b.previous((U, [(1, 4)]))
    for number in range(7, 10):
        b.transaction(number, T0 + timedelta(seconds=number, microseconds=number))
    return [
        a.save(tmp_path / "20261203T100000.000000Z-binlog.000002"),
        b.save(tmp_path / "20261203T100100.000000Z-binlog.000002"),
    ]


def test_plans_cross_a_resumed_streams_files_to_exact_targets(tmp_path: Path) -> None:
    files = archive(tmp_path)
    backup = GtidSet.parse(f"{U}:1-3")
    plan = plan_replay(backup, files, LogTarget(position=f"{U}:1-8"))
    assert str(plan.end) == f"{U}:1-8"
    assert [(p.path.name, p.start) for p in plan.pieces] == [
        (files[0].name, plan.pieces[0].start),
        (files[1].name, None),
    ]
    assert plan.pieces[1].stop < files[1].stat().st_size
    # Inclusive to the microsecond: 8's own commit time takes it, a microsecond less not.
    eight = T0 + timedelta(seconds=8, microseconds=8)
    assert str(plan_replay(backup, files, LogTarget(time=eight)).end) == f"{U}:1-8"
    earlier = eight - timedelta(microseconds=1)
    assert str(plan_replay(backup, files, LogTarget(time=earlier)).end) == f"{U}:1-7"
    # A backup inside the second stream's excluded stretch starts in its file.
    plan = plan_replay(GtidSet.parse(f"{U}:1-6"), files[1:], LogTarget(position=f"{U}:1-9"))
    assert str(plan.end) == f"{U}:1-9"


def test_targets_outside_the_archive_are_refused_naming_it(tmp_path: Path) -> None:
    files = archive(tmp_path)
    backup = GtidSet.parse(f"{U}:1-3")
    with pytest.raises(ArchiveGapError, match="past the archive: the archive ends at"):
        plan_replay(backup, files, LogTarget(position=f"{U}:1-12"))
    with pytest.raises(ArchiveGapError, match="past the archive"):
        plan_replay(backup, files, LogTarget(time=T0 + timedelta(hours=1)))
    with pytest.raises(ArchiveGapError, match="not in the archived history"):
        plan_replay(backup, files, LogTarget(position=f"{U}:1-3:5"))
    with pytest.raises(ArchiveGapError, match="does not hold the backup's position"):
        plan_replay(GtidSet.parse(f"{U}:1"), files, LogTarget(position=f"{U}:1-5"))
    with pytest.raises(ArchiveGapError, match=r"a gap at .*:1-6: the next file .* starts after"):
        gap = Writer()
        gap.previous((U, [(1, 7)]))
        gap.transaction(8, T0 + timedelta(seconds=20))
        plan_replay(backup, [files[0], gap.save(tmp_path / "x")], LogTarget(position=f"{U}:1-8"))


def test_a_cycle_takes_what_the_archive_holds_toward_its_checkpoint(tmp_path: Path) -> None:
    files = archive(tmp_path)
    backup = GtidSet.parse(f"{U}:1-3")
    assert str(plan_toward(backup, files, GtidSet.parse(f"{U}:1-20")).end) == f"{U}:1-9"
    assert str(plan_toward(backup, files, GtidSet.parse(f"{U}:1-5")).end) == f"{U}:1-5"
    assert plan_toward(GtidSet.parse(f"{U}:1"), files, GtidSet.parse(f"{U}:1-9")).end is None
