"""The PostgreSQL log archive against real servers: pg_receivewal into a spool, its
files archived the way the archiver does (new settled bytes at their offsets), and
point-in-time replay of a restored backup through them."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from catchup.cancel import CancelToken
from catchup.demo.postgres import PostgresSandbox
from catchup.engines import LogMark, LogTarget
from catchup.engines.postgres import PostgresEngine
from catchup.engines.postgres.archive import WalStream, archive_slot_name
from catchup.engines.postgres.instance import PostgresInstance
from catchup.engines.postgres.lsn import format_lsn, parse_lsn, segment_name, split_position
from catchup.engines.postgres.restore import superuser
from catchup.engines.postgres.server import select_value
from catchup.errors import ArchiveGapError, LogStreamError
from tests.integration.test_postgres import pg, pg_shard, write_config

__all__ = ["pg"]  # the fixture
ENGINE = PostgresEngine()


@dataclass
class Archive:
    """What the archiver would hold: each file's archived bytes, in `log_dir`."""

    log_dir: Path
    archived: dict[str, int]
    last: LogMark | None = None

    def take(self, stream: WalStream) -> LogMark | None:
        """Archive what is new in the spool: bytes past the archived length, at their
        offsets (a resumed stream rewriting a file from its start adds nothing)."""
        for name, length in stream.poll():
            have = self.archived.get(name, 0)
            if length <= have:
                continue
            with open(stream.path(name), "rb") as source:
                source.seek(have)
                data = source.read(length - have)
            with open(self.log_dir / name, "r+b" if have else "wb") as target:
                target.seek(have)
                target.write(data)
            self.archived[name] = length
            self.last = stream.mark(name, length)
        return self.last

    def wait_for(self, stream: WalStream, lsn: str, timeout: float = 30) -> LogMark:
        """Archive until the marks reach `lsn` (the source's insert position: see
        `flushed`)."""
        deadline = time.monotonic() + timeout
        while True:
            mark = self.take(stream)
            if (
                mark
                and mark.position
                and parse_lsn(mark.position.partition("@")[0]) >= (parse_lsn(lsn))
            ):
                return mark
            assert time.monotonic() < deadline, f"archive stuck at {mark}, wanted {lsn}"
            time.sleep(0.1)


@dataclass
class Point:
    lsn: str
    time: datetime
    checksums: dict[str, int | None]


def flushed(source, sql: str = "SELECT txid_current()") -> str:
    """Run `sql` in a transaction that commits durably, and return the insert position
    after it. The sandbox commits asynchronously, and the WAL writer does not flush
    records after the last commit (pruning while reading, say) for many seconds: this
    flushes them, so that the archive reaches the position."""
    with source.server.connect() as conn:
        conn.execute("SET synchronous_commit = on")
        with conn.transaction():
            conn.execute(sql)
            conn.execute("SELECT txid_current()")  # a commit record, even for a no-op
        return str(select_value(conn, "SELECT pg_current_wal_insert_lsn()"))


def capture(source) -> Point:
    """The source between two transactions: its insert position, a time after the last
    commit, and every table's checksum (one writer, so nothing moves meanwhile)."""
    with source.server.connect() as conn:
        lsn, now = conn.execute("SELECT pg_current_wal_insert_lsn(), clock_timestamp()").fetchone()
    return Point(str(lsn), now, source.checksums())


def workload(source, transactions: int, seed: int, capture_at: set[int]) -> list[Point]:
    """Inserts, updates and deletes in two tables, a new table and a segment switch on
    the way; `capture_at` are the transaction numbers after which to capture."""
    rng = random.Random(seed)
    points = []
    with source.server.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, note text)")
        for number in range(transactions):
            with conn.transaction():
                key = rng.randrange(1000)
                conn.execute(
                    "INSERT INTO items VALUES (%s, %s) ON CONFLICT (id) DO UPDATE "
                    "SET note = excluded.note",
                    (key, f"n{number}"),
                )
                conn.execute(
                    "UPDATE pgbench_accounts SET abalance = abalance + %s WHERE aid = %s",
                    (rng.randrange(100), rng.randrange(1, 100_000)),
                )
                if number % 7 == 3:
                    conn.execute("DELETE FROM items WHERE id < %s", (rng.randrange(50),))
            if number == transactions // 2:
                conn.execute(f"CREATE TABLE extra_{seed} AS SELECT generate_series(1, 500) n")
                conn.execute("SELECT pg_switch_wal()")
            if number in capture_at:
                points.append(capture(source))
    return points


@contextmanager
def restored(fleet) -> Iterator[PostgresInstance]:
    """The shard's newest backup restored into an ephemeral instance, as verify does."""
    config = fleet.config
    [shard] = config.shards
    repository = fleet.repository
    manifest = repository.latest(shard.keyspace, shard.shard)
    assert manifest is not None
    with ENGINE.provision_for_checks(config, shard, manifest.server_version) as instance:
        repository.restore(manifest, instance.data_dir, config.jobs)
        yield instance


def replay(fleet, archive: Archive, target: LogTarget) -> tuple[str, dict[str, int | None]]:
    with restored(fleet) as instance:
        position = fleet.repository.latest("pg", "0").position
        reached = instance.replay_log(position, archive.log_dir, target, CancelToken())
        assert all(f.ok for f in instance.verify(reached)), instance.verify(reached)
        return reached, instance.table_checksums()


def rows(instance: PostgresInstance, sql: str) -> list[tuple[object, ...]]:
    with instance.server.connect(superuser(instance.server, instance.user)) as conn:
        return list(conn.execute(sql).fetchall())


@pytest.fixture
def shard(fleet, pg):
    """A source with a backup taken while its archive stream already ran."""
    source = pg(size_mb=15)
    write_config(fleet, pg_shard(source))
    return source


def test_pitr_to_random_points_by_time_and_by_position(fleet, shard, short_tmp):
    source = shard
    config = fleet.config
    [entry] = config.shards
    archive = Archive(short_tmp / "log", {})
    archive.log_dir.mkdir()
    with ENGINE.stream_log(config, entry, short_tmp / "spool", None) as stream:
        [backup] = fleet.backup()
        assert backup.ok, backup.error
        backup_position = fleet.repository.latest("pg", "0").position
        assert ENGINE.compare_positions(stream.start, backup_position) == -1
        rng = random.Random(14)
        points = workload(source, 120, 1, set(rng.sample(range(120), 6)))
        final = capture(source)
        archive.wait_for(stream, flushed(source))
    assert len(archive.archived) >= 3  # segments on both sides of the switch

    # The source recycles the WAL since the backup (its chain slot dropped, two
    # checkpoints): replay reads the archive alone.
    with source.server.connect() as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name <> %s",
            (archive_slot_name(entry),),
        )
        for _ in range(2):
            conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
    backup_segment = segment_name(1, split_position(backup_position)[0])
    assert not (source.server.files.data_dir / "pg_wal" / backup_segment).exists()

    for point in [*points, final]:
        # A time target stops before the next commit: records of the transaction that
        # commits next are replayed (and rolled back): reached may lie past the point.
        _, checksums = replay(fleet, archive, LogTarget(time=point.time))
        assert checksums == point.checksums, ("time", point)
        reached, checksums = replay(fleet, archive, LogTarget(position=point.lsn))
        assert checksums == point.checksums, ("position", point)
        assert parse_lsn(reached.partition("@")[0]) <= parse_lsn(point.lsn)

    # Beyond what the files hold: refused, naming where they end.
    beyond = format_lsn(parse_lsn(final.lsn) + (64 << 20))
    with pytest.raises(ArchiveGapError, match="archived WAL ends at"):
        replay(fleet, archive, LogTarget(position=beyond))


def test_boundary_a_target_at_a_commit_includes_it(fleet, shard, short_tmp):
    source = shard
    config = fleet.config
    [entry] = config.shards
    archive = Archive(short_tmp / "log", {})
    archive.log_dir.mkdir()
    source.execute("CREATE TABLE marks (id int)")
    with ENGINE.stream_log(config, entry, short_tmp / "spool", None) as stream:
        [backup] = fleet.backup()
        assert backup.ok, backup.error
        at_first = archive.wait_for(stream, flushed(source, "INSERT INTO marks VALUES (1)"))
        archive.wait_for(stream, flushed(source, "INSERT INTO marks VALUES (2)"))
    assert at_first.time is not None
    for target in (LogTarget(time=at_first.time), LogTarget(position=at_first.position)):
        with restored(fleet) as instance:
            position = fleet.repository.latest("pg", "0").position
            instance.replay_log(position, archive.log_dir, target, CancelToken())
            assert rows(instance, "SELECT id FROM marks ORDER BY id") == [(1,)], target
            if target.position:
                stopped_and_started_again(instance)


def stopped_and_started_again(instance: PostgresInstance) -> None:
    """After stop_for_restore the data dir has no recovery settings, and a server
    started on it is a primary with the replayed data at once."""
    instance.stop_for_restore()
    data = instance.data_dir
    assert not (data / "recovery.signal").exists()
    auto = (data / "postgresql.auto.conf").read_text()
    assert "restore_command" not in auto and "recovery_target" not in auto
    assert instance.server.controldata()["Database cluster state"] == "shut down"
    instance.server.start()
    instance.server.wait_ready()
    assert rows(instance, "SELECT pg_is_in_recovery(), count(*) FROM marks") == [(False, 1)]


def test_kill_9_mid_segment_then_resume_and_replay_across(fleet, shard, short_tmp):
    source = shard
    config = fleet.config
    [entry] = config.shards
    archive = Archive(short_tmp / "log", {})
    archive.log_dir.mkdir()
    spool = short_tmp / "spool"
    with ENGINE.stream_log(config, entry, spool, None) as stream:
        [backup] = fleet.backup()
        assert backup.ok, backup.error
        workload(source, 30, 2, set())
        mark = archive.wait_for(stream, flushed(source))
        assert stream.process is not None
        # The password reaches pg_receivewal through a 0600 passfile only.
        password = source.password_file.read_text().strip().encode()
        proc = Path(f"/proc/{stream.process.pid}")
        assert b"pg_receivewal" in (proc / "cmdline").read_bytes()
        for exposed in ("cmdline", "environ"):
            assert password not in (proc / exposed).read_bytes()
        [passfile] = [
            Path(v.decode().partition("=")[2])
            for v in (proc / "environ").read_bytes().split(b"\0")
            if v.startswith(b"PGPASSFILE=")
        ]
        assert passfile.stat().st_mode & 0o777 == 0o600
        assert passfile.parent.stat().st_mode & 0o777 == 0o700
        stream.process.kill()  # kill -9 mid-segment: the .partial stays
        workload(source, 30, 3, set())
        with pytest.raises(LogStreamError, match="pg_receivewal exited"):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                stream.poll()
                time.sleep(0.1)
    assert any(path.name.endswith(".partial") for path in spool.iterdir())
    with ENGINE.stream_log(config, entry, spool, mark.position) as stream:
        assert stream.start == mark.position  # exactly where the archive ended
        middle = capture(source)
        workload(source, 30, 4, set())
        mark = archive.wait_for(stream, flushed(source))
    # The spool lost as well (a new host): the stream leaves a zero segment to refill.
    for path in spool.iterdir():
        path.unlink()
    with ENGINE.stream_log(config, entry, spool, mark.position) as stream:
        assert stream.start == mark.position
        workload(source, 30, 5, set())
        final = capture(source)
        archive.wait_for(stream, flushed(source))
    for point in (middle, final):
        _, checksums = replay(fleet, archive, LogTarget(time=point.time))
        assert checksums == point.checksums


def test_source_restart_ends_the_stream_and_resume_continues(fleet, shard, short_tmp):
    source = shard
    config = fleet.config
    [entry] = config.shards
    archive = Archive(short_tmp / "log", {})
    archive.log_dir.mkdir()
    spool = short_tmp / "spool"
    with ENGINE.stream_log(config, entry, spool, None) as stream:
        [backup] = fleet.backup()
        assert backup.ok, backup.error
        workload(source, 20, 6, set())
        archive.wait_for(stream, flushed(source))
        source.stop()
        with pytest.raises(LogStreamError, match="pg_receivewal exited"):
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                archive.take(stream)
                time.sleep(0.1)
    source.server.start()  # as it was: PostgresSandbox.start would hand its files over
    source.server.wait_ready()
    assert archive.last is not None
    resume = archive.last.position
    with ENGINE.stream_log(config, entry, spool, resume) as s:
        assert s.start == resume
        workload(source, 20, 7, set())
        final = capture(source)
        archive.wait_for(s, flushed(source))
    _, checksums = replay(fleet, archive, LogTarget(position=final.lsn))
    assert checksums == final.checksums


def test_a_promotion_of_the_source_is_followed_across_timelines(fleet, pg, short_tmp):
    primary = pg(size_mb=15)
    standby = PostgresSandbox(short_tmp / "standby", replica_of=primary)
    standby.start()
    standby.wait_replicated()
    write_config(
        fleet,
        pg_shard(standby).replace('engine = "postgres"', 'engine = "postgres"\nrole = "replica"'),
    )
    config = fleet.config
    [entry] = config.shards
    archive = Archive(short_tmp / "log", {})
    archive.log_dir.mkdir()
    spool = short_tmp / "spool"
    with ENGINE.stream_log(config, entry, spool, None) as stream:
        [backup] = fleet.backup()
        assert backup.ok, backup.error
        workload(primary, 20, 8, set())
        standby.wait_replicated()
        archive.take(stream)
        standby.execute("SELECT pg_promote()")
        primary.kill()
        standby.replica_of = None
        deadline = time.monotonic() + 30
        while True:
            with standby.server.connect() as conn:
                if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    break
            assert time.monotonic() < deadline, "the standby did not promote"
            time.sleep(0.05)
        workload(standby, 20, 9, set())
        final = capture(standby)
        # pg_receivewal follows the switch: it ends timeline 1 at the switch point and
        # goes on with timeline 2's history file and segments, without a restart.
        archive.wait_for(stream, flushed(standby))
    assert "00000002.history" in archive.archived
    assert any(name.startswith("00000002") and len(name) == 24 for name in archive.archived)
    reached, checksums = replay(fleet, archive, LogTarget(position=final.lsn))
    assert checksums == final.checksums
    assert reached.endswith("@2")


def test_a_lost_slot_makes_the_stream_begin_later_and_say_so(fleet, shard, short_tmp):
    source = shard
    config = fleet.config
    [entry] = config.shards
    archive = Archive(short_tmp / "log", {})
    archive.log_dir.mkdir()
    with ENGINE.stream_log(config, entry, short_tmp / "spool", None) as stream:
        end = archive.wait_for(stream, flushed(source))
    # Stopped archiver, spool lost, slot dropped (or invalidated), WAL recycled.
    for path in (short_tmp / "spool").iterdir():
        path.unlink()
    source.execute("SELECT pg_drop_replication_slot(%s)", (archive_slot_name(entry),))
    with source.server.connect() as conn:
        for _ in range(3):
            conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")
    with ENGINE.stream_log(config, entry, short_tmp / "spool", end.position) as stream:
        assert ENGINE.compare_positions(stream.start, end.position) == 1  # a gap, reported
        assert split_position(stream.start)[0] % (16 << 20) == 0  # a segment's start
        archive.wait_for(stream, flushed(source))
    source.kill()
    with (
        pytest.raises(LogStreamError, match=r"unreachable|refused|connect"),
        ENGINE.stream_log(config, entry, short_tmp / "spool", end.position),
    ):
        pass
