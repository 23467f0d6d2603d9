"""PostgreSQL cycles that catch up from the log archive, against a real source and a
real `catchup archive` process: the source sends (almost) nothing of a delta the
archive holds, and WAL the source removed after archiving needs no new chain."""

from __future__ import annotations

import time

from catchup.cancel import CancelToken
from catchup.demo.postgres import PostgresSandbox
from catchup.demo.run import prove_equal
from catchup.engines.postgres.lsn import parse_lsn, position_slot, segment_name, split_position
from catchup.engines.postgres.source import archive_slot_name
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
