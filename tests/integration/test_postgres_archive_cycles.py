"""PostgreSQL cycles that catch up from the log archive, against a real source and a
real `catchup archive` process: the source sends (almost) nothing of a delta the
archive holds, and WAL the source removed after archiving needs no new chain."""

from __future__ import annotations

import os
import time

from catchup.cancel import CancelToken
from catchup.demo.postgres import PostgresSandbox
from catchup.demo.run import prove_equal
from catchup.engines.postgres import PostgresEngine
from catchup.engines.postgres.lsn import (
    WAL_SEGMENT,
    parse_lsn,
    position_slot,
    segment_name,
    split_position,
)
from catchup.engines.postgres.source import archive_slot_name
from catchup.engines.postgres.walfiles import parse_name
from catchup.repository.archive import pieces_for_replay
from tests.integration.conftest import Fleet
from tests.integration.engines import ENGINES
from tests.integration.test_archive_contract import archived_source, archiver, wait_archived

POSTGRES = ENGINES["postgres"]


def lsn_of(source: PostgresSandbox) -> int:
    return parse_lsn(source.position())


def assert_equal_to_source(fleet: Fleet, source: PostgresSandbox) -> None:
    shard = fleet.config.shards[0]
    proof = prove_equal(fleet.config, fleet.repository, shard, source, CancelToken())
    assert proof is not None and proof.checksums_equal and proof.report.ok, proof


def slots(source: PostgresSandbox) -> set[str]:
    with source.server.connect() as conn:
        return {name for (name,) in conn.execute("SELECT slot_name FROM pg_replication_slots")}


def recycle_wal_before(source: PostgresSandbox, archive_slot: str, segment: str) -> None:
    """Switch segments and checkpoint until the source removed `segment`: each time once
    the archiver's slot (which pg_receivewal moves on as it flushes) left it behind."""
    deadline = time.monotonic() + 30
    while (source.server.files.data_dir / "pg_wal" / segment).exists():
        assert time.monotonic() < deadline, f"the source keeps {segment}"
        with source.server.connect() as conn:
            switched = conn.execute("SELECT pg_switch_wal()").fetchone()[0]
            while True:
                [restart] = conn.execute(
                    "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = %s",
                    (archive_slot,),
                ).fetchone()
                if restart is not None and parse_lsn(str(restart)) > parse_lsn(str(switched)):
                    break
                assert time.monotonic() < deadline, "the archiver's slot does not move"
                time.sleep(0.1)
            conn.execute("CHECKPOINT")


def test_a_cycle_whose_delta_the_archive_holds_costs_the_source_almost_nothing(fleet, capsys):
    source = archived_source(fleet, POSTGRES)
    assert isinstance(source, PostgresSandbox)
    [first] = fleet.backup()  # a catch-up: its position is archived from here on
    with archiver(fleet):
        before = lsn_of(source)
        source.apply_workload(0.2)
        delta = lsn_of(source) - before
        wait_archived(fleet, source)
        [second] = fleet.backup()
    assert second.ok and second.kind == "catchup", (second.kind, second.error)
    assert second.parent == first.backup_id
    assert "restore log" in second.durations
    assert_equal_to_source(fleet, source)

    # The same workload, the archiver stopped: the source streams the whole delta.
    before = lsn_of(source)
    source.apply_workload(0.2)
    delta_without = lsn_of(source) - before
    [third] = fleet.backup()
    assert third.ok and third.kind == "catchup", (third.kind, third.error)
    assert_equal_to_source(fleet, source)
    with capsys.disabled():
        print(
            f"\nsource bytes: from the archive {second.bytes_from_source} of {delta} WAL "
            f"bytes ({100 * second.bytes_from_source / delta:.2f} %); without "
            f"{third.bytes_from_source} of {delta_without}"
        )
    assert third.bytes_from_source > delta_without
    assert second.bytes_from_source < delta / 100  # the goal: under 1 % of the delta


def test_wal_removed_on_the_source_after_archiving_is_caught_up_from_the_archive(fleet):
    source = archived_source(fleet, POSTGRES)
    assert isinstance(source, PostgresSandbox)
    [first] = fleet.backup()
    shard = fleet.config.shards[0]
    old_slot = position_slot(first.position)
    assert old_slot
    with archiver(fleet):
        source.apply_workload(0.05)
        wait_archived(fleet, source)
        # The chain's slot gone, the WAL after the backup recycled: only the archive
        # (and the archiver's slot, from about its end) holds it.
        source.execute("SELECT pg_drop_replication_slot(%s)", (old_slot,))
        lsn, timeline = split_position(first.position)
        recycle_wal_before(source, archive_slot_name(shard), segment_name(timeline, lsn))
        source.apply_workload(0.01)
        wait_archived(fleet, source)
        [second] = fleet.backup()
        assert second.ok and second.kind == "catchup", (second.kind, second.error)
        assert second.parent == first.backup_id and second.rebootstrap_reason is None
        assert_equal_to_source(fleet, source)
        # The cycle's backup names a new chain slot, copied from the archiver's.
        new_slot = position_slot(second.position)
        assert new_slot and new_slot != old_slot
        assert slots(source) == {new_slot, archive_slot_name(shard)}

        source.apply_workload(0.02)
        wait_archived(fleet, source)
        [third] = fleet.backup()
    assert third.ok and third.kind == "catchup", (third.kind, third.error)
    assert third.parent == second.backup_id
    assert position_slot(third.position) == new_slot
    assert_equal_to_source(fleet, source)
    assert slots(source) == {new_slot, archive_slot_name(shard)}


def test_an_archive_that_ends_right_at_the_checkpoint_needs_no_source(fleet, short_tmp):
    """The record after T that recovery would stop at is not archived yet: the standby
    replays the archive to T without connecting, is stopped there, and the backup's
    position is where it stopped (a record a restore can stop at)."""
    source = archived_source(fleet, POSTGRES)
    assert isinstance(source, PostgresSandbox)
    [first] = fleet.backup()  # a catch-up: its position is archived from here on
    assert first.ok, first.error
    config, repository = fleet.config, fleet.repository
    shard = config.shards[0]
    engine = PostgresEngine()
    parent = repository.latest(shard.keyspace, shard.shard)
    assert parent is not None
    with (
        archiver(fleet),
        engine.open_source(config, shard) as pg_source,
        engine.provision(config, shard, pg_source) as replica,
    ):
        source.apply_workload(0.05)
        repository.restore(parent, replica.data_dir, config.jobs)
        checkpoint = pg_source.checkpoint()
        deadline = time.monotonic() + 30
        while True:
            index = repository.archive_index(shard.keyspace, shard.shard)
            end = index.end
            if end and engine.compare_positions(end.position, checkpoint) == 1:
                break
            assert time.monotonic() < deadline, f"the archive did not pass {checkpoint}"
            time.sleep(0.2)
        log_dir = short_tmp / "log"
        records = pieces_for_replay(index, engine.compare_positions, parent.position)
        repository.restore_log(index, records, log_dir, config.jobs)
        # Cut the archive right at T.
        target, timeline = split_position(checkpoint)
        last = segment_name(timeline, target)
        # Streaming would send T's segment from its start: more than a MiB of it.
        assert target % WAL_SEGMENT > 1 << 20, "the delta is not in T's segment"
        for path in log_dir.iterdir():
            wal = parse_name(path.name)
            if wal is not None and wal.is_segment and wal.name > last:
                path.unlink()
        os.truncate(log_dir / last, target % WAL_SEGMENT)
        before = pg_source.bytes_sent
        position = replica.catch_up(checkpoint, CancelToken(), lambda done, total: None, log_dir)
        sent = pg_source.bytes_sent - before
        assert sent < 64 << 10, sent  # the catch-up's queries, no WAL
        assert parse_lsn(position.partition("@")[0]) < target
        replica.stop_for_archive()
        replica.instance.open_for_checks(position, CancelToken())
        assert replica.instance.table_checksums() == source.checksums()
