"""The MariaDB binlog archive against real servers: mariadb-binlog streaming a source
into a spool, and point-in-time replay of the archived files on a restored backup.

`Archive` (archive_helpers.py) does in the small what the archiver does: copy each
file's settled bytes into a directory and remember the mark of the end. Restores then
read that directory.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from catchup.cancel import CancelToken
from catchup.engines import LogTarget
from catchup.engines.mariadb.binlog import BinlogReader, archive_order
from catchup.engines.mariadb.gtid import Position
from catchup.engines.mariadb.server import MariaDBServer, ServerFiles
from catchup.engines.mariadb.verify import table_checksums
from catchup.errors import ArchiveGapError, LogStreamError
from tests.integration.archive_helpers import (
    ENGINE,
    Archive,
    big_transaction,
    binlog_groups,
    capture,
    open_stream,
    replay,
    start_fleet,
    step,
)
from tests.integration.conftest import Fleet


def test_replay_to_random_points_by_time_and_by_position(fleet: Fleet, short_tmp: Path) -> None:
    source, manifest = start_fleet(fleet)
    seed = random.randrange(10**6)
    chosen = sorted(random.Random(seed).sample(range(1, 16), 5))
    archive = Archive(short_tmp / "archive")
    points = []
    with ENGINE.stream_log(
        fleet.config, fleet.config.shards[0], short_tmp / "spool", manifest.position
    ) as stream:
        assert stream.start == manifest.position
        for number in range(1, 17):
            step(source, number)
            if number in chosen:
                points.append(capture(source, archive, stream))
        archive.wait_for(stream, source.position())
    assert len(points) == 5, seed
    # The archive's records end at positions that only move forward.
    ends = [mark.position for _name, _length, mark in archive.marks]
    assert len(ends) > 5 and ends[-1] == source.position()
    assert all(ENGINE.compare_positions(b, a) in (0, 1) for a, b in itertools.pairwise(ends))

    for index, point in enumerate(points):
        # A time target is inclusive to the second: the point's own transaction commits in
        # that second and is replayed; the next one commits in a later second and is not.
        when = point.time + timedelta(microseconds=999_999) if index % 2 else point.time
        reached, checksums = replay(fleet, manifest, archive.directory, LogTarget(time=when))
        assert (reached, checksums) == (point.position, point.checksums), (seed, index)
        # A position target is inclusive: the transaction at the position is replayed.
        reached, checksums = replay(
            fleet, manifest, archive.directory, LogTarget(position=point.position)
        )
        assert (reached, checksums) == (point.position, point.checksums), (seed, index)

    # Earlier than the first point's transaction: the replay stops before it.
    reached, checksums = replay(
        fleet, manifest, archive.directory, LogTarget(time=points[0].time - timedelta(seconds=1))
    )
    assert Position.parse(reached)[0].seqno < Position.parse(points[0].position)[0].seqno
    assert checksums != points[0].checksums
    assert len({str(sorted(p.checksums.items())) for p in points}) == 5, "the points differ"


def test_kill_9_mid_file_then_resume_at_the_archive_end_replays_without_gap_or_duplicate(
    fleet: Fleet, short_tmp: Path
) -> None:
    source, manifest = start_fleet(fleet)
    archive = Archive(short_tmp / "archive")
    spool = short_tmp / "spool"
    with open_stream(fleet, spool, manifest.position) as stream:
        for number in range(1, 4):
            step(source, number)
        archive.wait_for(stream, source.position())
        writer = threading.Thread(target=big_transaction, args=(source,))
        writer.start()
        # Kill the tool while the big transaction is arriving: its file then ends in part
        # of a transaction, which must never be reported as settled.
        partial = False
        deadline = time.monotonic() + 30
        while not partial and time.monotonic() < deadline:
            [(name, settled)] = stream.poll()[-1:]
            partial = stream.path(name).stat().st_size > settled
            if not writer.is_alive() and stream.mark(name, settled).position == source.position():
                break  # it arrived whole between two looks: the assertion below says so
        assert stream.process is not None
        stream.process.kill()
        stream.process.wait()
        writer.join()
        with pytest.raises(LogStreamError, match="mariadb-binlog exited"):
            stream.poll()
    assert partial, "the kill did not land inside a transaction"
    killed_at = archive.end.position
    assert killed_at != source.position()

    step(source, 4)
    with open_stream(fleet, spool, killed_at) as stream:
        assert stream.start == killed_at
        step(source, 5)
        archive.wait_for(stream, source.position())
    streams = {name.split("-")[0] for name in os.listdir(archive.directory)}
    assert len(streams) == 2
    reached, checksums = replay(
        fleet, manifest, archive.directory, LogTarget(position=source.position())
    )
    assert (reached, checksums) == (source.position(), source.checksums())


def test_rotation_purge_and_a_resume_from_purged_binlogs(fleet: Fleet, short_tmp: Path) -> None:
    source, manifest = start_fleet(fleet)
    archive = Archive(short_tmp / "archive")
    spool = short_tmp / "spool"
    with open_stream(fleet, spool, manifest.position) as stream:
        step(source, 1)
        after_first = archive.wait_for(stream, source.position()).position
        source.execute("FLUSH BINARY LOGS")
        step(source, 2)
        source.execute("FLUSH BINARY LOGS")
        step(source, 3)
        source.purge_binlogs()  # rotates too: the source keeps only its newest binlog
        step(source, 4)
        archive.wait_for(stream, source.position())
        first_stream = sorted(os.listdir(archive.directory), key=archive_order)
    assert len(first_stream) == 4
    reached, checksums = replay(
        fleet, manifest, archive.directory, LogTarget(position=source.position())
    )
    assert (reached, checksums) == (source.position(), source.checksums())

    # The archiver was away since the backup and the source purged what it missed: the
    # stream starts at the source's oldest binlog instead, a later position.
    with source.connect() as conn, conn.cursor() as cursor:
        cursor.execute("SHOW BINARY LOGS")
        [(oldest, _size)] = cursor.fetchall()
        cursor.execute("SELECT BINLOG_GTID_POS(%s, 4)", (oldest,))
        oldest_state = cursor.fetchone()[0]
    later = Archive(short_tmp / "later")
    with open_stream(fleet, spool, manifest.position) as stream:
        assert stream.start == oldest_state != manifest.position
        step(source, 5)
        later.wait_for(stream, source.position())
        [copied] = os.listdir(later.directory)
    # That stream copies the source's file from its first byte: the same bytes, and the
    # reader finds the transactions where the server lists them.
    copy = (later.directory / copied).read_bytes()
    original = (source.server.files.data_dir / oldest).read_bytes()[: len(copy)]
    in_use = slice(21, 23)  # the format description's flags: the source's file is "in use"
    assert copy[: in_use.start] + copy[in_use.stop :] == (
        original[: in_use.start] + original[in_use.stop :]
    )
    reader = BinlogReader()
    reader.read(later.directory / copied)
    found = [(b.offset, str(b.position[0])) for b in reader.boundaries if b.group]
    assert found == binlog_groups(source, oldest) and len(found) >= 8

    # A backup position the files do not hold, and a gap inside them, are refused by name.
    with pytest.raises(
        ArchiveGapError, match=f"does not hold the backup's position {manifest.position}"
    ):
        replay(fleet, manifest, later.directory, LogTarget(position=source.position()))
    gapped = short_tmp / "gapped"
    gapped.mkdir()
    shutil.copy(archive.directory / first_stream[0], gapped)
    shutil.copy(later.directory / copied, gapped)
    with pytest.raises(ArchiveGapError, match=f"a gap at {after_first}"):
        replay(fleet, manifest, gapped, LogTarget(position=source.position()))
    with pytest.raises(ArchiveGapError, match="past the archive: the archive ends at"):
        # Two seconds on: the archive's last commit may share the current second, which
        # ends its window and is taken.
        later_time = datetime.now(UTC) + timedelta(seconds=2)
        replay(fleet, manifest, archive.directory, LogTarget(time=later_time))
    reached, _ = replay(fleet, manifest, gapped, LogTarget(position=after_first))
    assert reached == after_first


def test_source_restart_ends_the_stream_and_a_resumed_one_continues(
    fleet: Fleet, short_tmp: Path
) -> None:
    source, manifest = start_fleet(fleet)
    archive = Archive(short_tmp / "archive")
    spool = short_tmp / "spool"
    with open_stream(fleet, spool, manifest.position) as stream:
        step(source, 1)
        archive.wait_for(stream, source.position())
        source.stop()
        source.start()
        step(source, 2)
        with pytest.raises(LogStreamError, match=r"mariadb-binlog exited.*ERROR"):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                archive.take(stream)
                time.sleep(0.05)
    with open_stream(fleet, spool, archive.end.position) as stream:
        step(source, 3)
        source.execute("CREATE EVENT shop.pitr_tick ON SCHEDULE EVERY 1 DAY DO SELECT 1")
        archive.wait_for(stream, source.position())

    # Replayed, stopped for the operator, and started by a stock mariadbd with a binlog of
    # its own (as a production server runs): it stands at the target, without recovery.
    config = fleet.config
    restored = short_tmp / "restored"
    with ENGINE.provision_for_checks(config, config.shards[0], "") as instance:
        fleet.repository.restore(manifest, instance.data_dir, config.jobs)
        target = LogTarget(position=source.position())
        reached = instance.replay_log(manifest.position, archive.directory, target, CancelToken())
        instance.stop_for_restore()
        shutil.move(instance.data_dir, restored / "data")
    stock = MariaDBServer(
        ServerFiles(restored),
        server_id=77,
        options=["--skip-slave-start", "--log-bin=binlog"],
        admin_user="stock_admin",
    )
    stock.start()
    try:
        with stock.connect() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT @@gtid_slave_pos, @@gtid_current_pos, @@gtid_binlog_pos")
            assert cursor.fetchone() == (reached, reached, "")
            cursor.execute("SELECT user FROM mysql.global_priv WHERE user = 'catchup_admin'")
            assert cursor.fetchall() == ()
            cursor.execute("SHOW SLAVE STATUS")
            assert cursor.fetchall() == ()
            assert table_checksums(cursor) == source.checksums()
            cursor.execute("SELECT status FROM mysql.event WHERE name = 'pitr_tick'")
            assert cursor.fetchall() == (("ENABLED",),)  # as on the source, not replica-disabled
    finally:
        stock.stop()
    assert reached == source.position()
    assert "crash recovery" not in stock.files.error_log.read_text()


def test_after_a_failover_the_stream_follows_the_new_primary_or_refuses_a_foreign_one(
    fleet: Fleet, short_tmp: Path
) -> None:
    primary, manifest = start_fleet(fleet)
    replica = fleet.add_replica(primary, server_id=2)
    archive = Archive(short_tmp / "archive")
    spool = short_tmp / "spool"
    with open_stream(fleet, spool, manifest.position) as stream:
        step(primary, 1)
        archive.wait_for(stream, primary.position())

    # The replica takes the endpoint's place; it logs what it replicates, so the archive
    # continues on it exactly where it ended.
    fleet.write_config(sources=[replica])
    step(primary, 2)
    replica.wait_replicated()
    with open_stream(fleet, spool, archive.end.position) as stream:
        assert stream.start == archive.end.position
        step(primary, 3)
        replica.wait_replicated()
        archive.wait_for(stream, replica.position())
    reached, checksums = replay(
        fleet, manifest, archive.directory, LogTarget(position=primary.position())
    )
    assert (reached, checksums) == (primary.position(), primary.checksums())

    # A server of another history at the endpoint: refused, never a silently wrong archive.
    stranger = fleet.add_source(server_id=3)
    fleet.write_config(sources=[stranger])
    refused = pytest.raises(LogStreamError, match="not of the archived history")
    with refused, open_stream(fleet, spool, archive.end.position):
        pass


def test_a_cycle_replays_the_archive_then_asks_the_source_only_for_the_rest(
    fleet: Fleet, short_tmp: Path
) -> None:
    source, manifest = start_fleet(fleet)
    archive = Archive(short_tmp / "archive")
    with open_stream(fleet, short_tmp / "spool", manifest.position) as stream:
        for number in range(1, 7):
            step(source, number)
        big_transaction(source)
        archive.wait_for(stream, source.position())
    source.purge_binlogs()  # the source no longer has what the archive holds
    step(source, 7)
    config = fleet.config
    shard = config.shards[0]
    with (
        ENGINE.open_source(config, shard) as live,
        ENGINE.provision(config, shard, live) as replica,
    ):
        assert live.judge(manifest.position).coverage.value == "purged"
        assert live.judge(archive.end.position).coverage.value == "covered"
        fleet.repository.restore(manifest, replica.data_dir, config.jobs)
        replica.start(CancelToken())
        checkpoint = live.checkpoint()
        sent_before = live.bytes_sent
        reached = replica.catch_up(
            checkpoint, CancelToken(), lambda done, total: None, archive.directory
        )
        assert reached == checkpoint == source.position()
        with replica.server.connect() as conn, conn.cursor() as cursor:
            assert table_checksums(cursor) == source.checksums()
        archived = sum(p.stat().st_size for p in archive.directory.iterdir())
        assert live.bytes_sent - sent_before < archived / 10
