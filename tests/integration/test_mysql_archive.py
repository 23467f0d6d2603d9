"""The MySQL binlog reader (mysql/binlog.py) against a real server's binary logs, with
and without binlog_transaction_compression: every whole transaction is a boundary,
and the last one stands at the server's @@gtid_executed with its commit time. The
archive and replay end to end are test_archive_contract.py's (mysql)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from catchup.demo.mysql import MySQLSandbox
from catchup.engines.mariadb.binlog import HEADER, HEADER_SIZE
from catchup.engines.mysql.binlog import TRANSACTION_PAYLOAD_EVENT, MySQLBinlogReader, MySQLBoundary
from catchup.engines.mysql.gtid import GtidSet


@pytest.mark.parametrize("compression", ["OFF", "ON"])
def test_the_reader_finds_every_transaction_of_a_real_binlog(
    short_tmp: Path, compression: str
) -> None:
    source = MySQLSandbox(
        short_tmp / "source", 11, options=[f"--binlog-transaction-compression={compression}"]
    )
    before = datetime.now(UTC) - timedelta(seconds=1)
    source.start()
    try:
        source.load_demo_data(1)
        source.execute("FLUSH BINARY LOGS")
        for _ in range(3):
            source.apply_workload(0.01)
        source.execute("CREATE TABLE shop.copied SELECT * FROM shop.products")  # one trx
        with source.connect() as conn, conn.cursor() as cursor:
            for statement in ("START", "INSERT", "END", "PREPARE", "COMMIT"):
                cursor.execute(
                    "INSERT INTO shop.copied SELECT * FROM shop.products LIMIT 1"
                    if statement == "INSERT"
                    else f"XA {statement} 'x'"
                )
        executed = GtidSet.parse(source.position())
        with source.connect() as conn, conn.cursor() as cursor:
            cursor.execute("SHOW BINARY LOGS")
            names = [str(row[0]) for row in cursor.fetchall()]
    finally:
        source.stop()
    data_dir = source.server.files.data_dir
    boundaries: list[MySQLBoundary] = []
    time = None
    for name in names:
        reader = MySQLBinlogReader(time=time)
        reader.read(data_dir / name)
        assert reader.settled == (data_dir / name).stat().st_size, name
        boundaries += reader.boundaries
        time = reader.time
    payloads = sum(event_kinds(data_dir / name).count(TRANSACTION_PAYLOAD_EVENT) for name in names)
    assert bool(payloads) == (compression == "ON"), payloads
    last = boundaries[-1]
    assert last.position == executed
    assert last.time is not None and before < last.time < datetime.now(UTC)
    assert last.time.microsecond or boundaries[-2].time.microsecond  # type: ignore[union-attr]
    trx = [b for b in boundaries if b.group]
    # One boundary per GTID: every transaction's end was found, none twice.
    counts = [b.position.count() for b in trx]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    assert counts[-1] - trx[0].position.count() == len(trx) - 1


def event_kinds(path: Path) -> list[int]:
    data = path.read_bytes()
    kinds, at = [], 4
    while at + HEADER_SIZE <= len(data):
        _, kind, _, size, _, _ = HEADER.unpack_from(data, at)
        kinds.append(kind)
        at += size
    return kinds
