"""What the MariaDB archive tests (test_mariadb_archive.py) share: a small archiver
(`Archive`), a mixed workload, capturing the source's state at a point, and a
point-in-time replay on a restored backup."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from catchup.cancel import CancelToken
from catchup.demo.mariadb import MariaDBSandbox
from catchup.engines import LogMark, LogTarget
from catchup.engines.mariadb import MariaDBEngine
from catchup.engines.mariadb.archive import MariaDBLogStream
from catchup.repository import Manifest
from tests.integration.conftest import Fleet

ENGINE = MariaDBEngine()


@dataclass
class Archive:
    """Settled bytes of every file a stream wrote, by name, and the mark of the end."""

    directory: Path
    end: LogMark = field(default_factory=lambda: LogMark("", None))
    marks: list[tuple[str, int, LogMark]] = field(default_factory=list)

    def take(self, stream: MariaDBLogStream) -> LogMark:
        self.directory.mkdir(exist_ok=True)
        for name, length in stream.poll():
            copy = self.directory / name
            have = copy.stat().st_size if copy.exists() else 0
            if length > have:
                with open(stream.path(name), "rb") as source, open(copy, "ab") as target:
                    source.seek(have)
                    target.write(source.read(length - have))
                self.end = stream.mark(name, length)
                self.marks.append((name, length, self.end))
        return self.end

    def wait_for(self, stream: MariaDBLogStream, position: str, timeout: float = 20) -> LogMark:
        deadline = time.monotonic() + timeout
        while self.take(stream).position != position:
            assert time.monotonic() < deadline, f"archive at {self.end}, source at {position}"
            time.sleep(0.05)
        return self.end


@dataclass(frozen=True)
class Point:
    position: str
    time: datetime  # the commit time of the transaction at `position`, as the binlog has it
    checksums: dict[str, int | None]


def start_fleet(fleet: Fleet) -> tuple[MariaDBSandbox, Manifest]:
    source = fleet.add_source(size_mb=1)
    fleet.write_config()
    [backup] = fleet.backup()
    assert backup.ok, backup.error
    manifest = fleet.repository.latest("commerce", "0")
    assert manifest is not None
    return source, manifest


def step(source: MariaDBSandbox, number: int) -> None:
    """One round of a mixed workload: single- and multi-statement transactions, deletes,
    DDL (a standalone event group), a procedure call."""
    with source.connect() as conn, conn.cursor() as cursor:
        cursor.execute("USE shop")
        cursor.execute(
            "INSERT INTO orders (customer_id, status, total, note, created_at) "
            "VALUES (1 + %s %% 50, 'new', %s, 'pitr', NOW())",
            (number, number),
        )
        cursor.execute("BEGIN")
        cursor.execute("UPDATE orders SET total = total + 1 WHERE id %% 13 = %s", (number % 13,))
        cursor.execute("DELETE FROM event_log ORDER BY happened_at LIMIT 3")
        cursor.execute("COMMIT")
        if number % 3 == 0:
            cursor.execute(f"CREATE TABLE pitr_{number} (id INT PRIMARY KEY, v TEXT)")
            cursor.execute(f"INSERT INTO pitr_{number} VALUES (1, REPEAT('x', 2000))")
        if number % 4 == 0:
            cursor.execute(f"ALTER TABLE products COMMENT = 'round {number}'")
        if number % 5 == 0:
            cursor.execute("CALL cancel_stale_orders(%s)", (number,))
        # The last transaction of a step changes data, so a replay that misses it differs.
        cursor.execute("UPDATE customers SET order_count = order_count + 1 WHERE id = 1")


def capture(source: MariaDBSandbox, archive: Archive, stream: MariaDBLogStream) -> Point:
    position = source.position()
    mark = archive.wait_for(stream, position)
    assert mark.time is not None
    point = Point(position, mark.time, source.checksums())
    # Whatever comes next commits in a later second than the point's transaction.
    with source.connect() as conn, conn.cursor() as cursor:
        while True:
            cursor.execute("SELECT UNIX_TIMESTAMP(NOW())")
            if int(cursor.fetchone()[0]) > point.time.timestamp():
                return point
            time.sleep(0.05)


def replay(
    fleet: Fleet, manifest: Manifest, log_dir: Path, target: LogTarget
) -> tuple[str, dict[str, int | None]]:
    """Restore the backup into an instance, replay to `target`, check it, and checksum it."""
    config = fleet.config
    shard = config.shards[0]
    with ENGINE.provision_for_checks(config, shard, manifest.server_version) as instance:
        fleet.repository.restore(manifest, instance.data_dir, config.jobs)
        reached = instance.replay_log(manifest.position, log_dir, target, CancelToken())
        failed = [f for f in instance.verify(reached) if not f.ok]
        assert not failed, failed
        return reached, instance.table_checksums()


def open_stream(
    fleet: Fleet, spool: Path, resume: str | None
) -> AbstractContextManager[MariaDBLogStream]:
    return ENGINE.stream_log(fleet.config, fleet.config.shards[0], spool, resume)


def assert_no_password_in_sight(stream: MariaDBLogStream, source: MariaDBSandbox) -> None:
    """mariadb-binlog reads the password from a 0600 file in a 0700 directory: it is in
    neither its command line nor its environment."""
    password = source.password_file.read_text().strip().encode()
    assert stream.process is not None
    proc = Path(f"/proc/{stream.process.pid}")
    deadline = time.monotonic() + 10
    while b"mariadb-binlog" not in (proc / "cmdline").read_bytes():  # setpriv execs it
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert password not in (proc / "cmdline").read_bytes()
    assert password not in (proc / "environ").read_bytes()
    [defaults] = [a for a in (proc / "cmdline").read_bytes().split(b"\0") if b"defaults" in a]
    secret = Path(defaults.decode().partition("=")[2])
    assert password in secret.read_bytes()
    assert secret.stat().st_mode & 0o777 == 0o600
    assert secret.parent.stat().st_mode & 0o777 == 0o700


def big_transaction(source: MariaDBSandbox) -> None:
    """A transaction of a few MB of row events: it takes a while to reach the spool."""
    with source.connect() as conn, conn.cursor() as cursor:
        cursor.execute("USE shop")
        cursor.execute("CREATE TABLE IF NOT EXISTS shop.bulk (id INT PRIMARY KEY, b BLOB)")
        cursor.execute(
            "INSERT INTO shop.bulk SELECT seq, RANDOM_BYTES(1024) FROM seq_1_to_20000 "
            "ON DUPLICATE KEY UPDATE b = RANDOM_BYTES(1024)"
        )


def binlog_groups(source: MariaDBSandbox, name: str) -> list[tuple[int, str]]:
    """(end offset, GTID) of every transaction of a source binlog, as the server lists it."""
    with source.connect() as conn, conn.cursor() as cursor:
        cursor.execute(f"SHOW BINLOG EVENTS IN '{name}'")
        events = cursor.fetchall()
    groups, gtid, standalone = [], "", False
    for _log, _pos, kind, _server, end, info in events:
        if kind == "Gtid":
            gtid, standalone = info.split()[-1], not info.startswith("BEGIN")
        elif gtid and (kind == "Xid" or standalone or (kind == "Query" and info == "COMMIT")):
            if standalone and kind in ("Intvar", "User var", "Rand", "Annotate_rows"):
                continue
            groups.append((end, gtid))
            gtid = ""
    return groups
