"""A source that is, or was, a standby: its postgresql.auto.conf (primary_conninfo with a
password, libraries the catchup host lacks) must neither steer the ephemeral standby nor
end up in a backup; a stalled standby's error quotes its log."""

# ruff: noqa: F811 - the `pg` fixture is imported from test_postgres
from __future__ import annotations

import time
from pathlib import Path

import pytest
from psycopg import sql

from catchup.demo.postgres import PostgresSandbox
from catchup.engines.postgres.lsn import parse_lsn
from tests.conftest import run_cli
from tests.integration.test_postgres import pg, pg_shard, write_config  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

UPSTREAM_SECRET = "Upstream-Secret-4711"
ROWS = 10_000


def standby_of(primary: PostgresSandbox, root: Path) -> PostgresSandbox:
    """A streaming standby made with `pg_basebackup -R`, whose primary_conninfo also carries
    a password (the primary's `peer` login ignores it) and whose ALTER SYSTEM settings name
    a library the catchup host lacks."""
    standby = PostgresSandbox(root, replica_of=primary)
    standby.start()
    auto = standby.server.files.data_dir / "postgresql.auto.conf"
    assert "primary_conninfo" in auto.read_text()  # written by pg_basebackup -R
    with standby.server.connect() as conn:
        value = conn.execute("SHOW primary_conninfo").fetchone()[0]
        conninfo = sql.Literal(f"{value} password={UPSTREAM_SECRET}")
        conn.execute(sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(conninfo))
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'catchup_absent_library'")
        conn.execute("ALTER SYSTEM SET work_mem = '7MB'")  # tuning: kept
    standby.wait_replicated()
    return standby


def position_lsn(position: str) -> int:
    return parse_lsn(position.partition("@")[0])


def assert_streamed_through_catchup(first, second, delta: int) -> None:
    """Everything the catch-up replayed came over catchup's own counted connection: at least
    the WAL that writing the delta made (`delta` bytes), and not much more."""
    assert delta > 1_000_000, delta  # 10,000 rows and their index: more than 1 MB of WAL
    assert position_lsn(second.position) - position_lsn(first.position) >= delta
    assert 0.95 * delta <= second.bytes_from_source <= 4 * delta + 1_000_000, (
        second.bytes_from_source,
        delta,
        first.position,
        second.position,
    )


def assert_no_upstream_secrets(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert UPSTREAM_SECRET.encode() not in data, path
            assert b"catchup_absent_library" not in data, path


def insert_rows(sandbox: PostgresSandbox, first: int) -> int:
    """Write the delta; returns how many bytes of WAL it made."""
    with sandbox.server.connect() as conn:
        before = str(conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0])
        conn.execute(
            "INSERT INTO delta SELECT g, md5(g::text) FROM generate_series(%s::int, %s::int) g",
            (first, first + ROWS - 1),
        )
        after = str(conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0])
    return parse_lsn(after) - parse_lsn(before)


def test_a_standby_built_with_pg_basebackup_R_streams_through_catchup(fleet, pg, short_tmp):
    primary = pg(size_mb=15)
    primary.execute("CREATE TABLE delta (id int PRIMARY KEY, v text)")
    standby = standby_of(primary, short_tmp / "standby")
    try:
        shard = pg_shard(standby).replace(
            'engine = "postgres"', 'engine = "postgres"\nrole = "replica"'
        )
        write_config(fleet, shard)
        [first] = fleet.backup()
        assert first.ok, first.error
        delta = insert_rows(primary, 1)
        standby.wait_replicated()
        [second] = fleet.backup()
        assert second.ok and second.kind == "catchup", second.error
        assert_streamed_through_catchup(first, second, delta)

        target = short_tmp / "restored"
        restored = run_cli(
            "restore", "pg/0", "--target-dir", str(target / "data"), "-c", str(fleet.config_path)
        )
        assert restored.returncode == 0, restored.stderr
        assert_no_upstream_secrets(target)
        auto = (target / "data" / "postgresql.auto.conf").read_text()
        assert "work_mem = '7MB'" in auto and "dropped: primary_conninfo" in auto, auto
    finally:
        standby.kill()


def test_a_promoted_standby_after_a_failover_streams_through_catchup(fleet, pg, short_tmp):
    old_primary = pg(size_mb=15)
    old_primary.execute("CREATE TABLE delta (id int PRIMARY KEY, v text)")
    new_primary = standby_of(old_primary, short_tmp / "promoted")
    try:
        new_primary.execute("SELECT pg_promote()")
        old_primary.kill()  # its address in the promoted one's primary_conninfo is dead now
        new_primary.replica_of = None  # a primary now: positions come from pg_current_wal_lsn
        deadline = time.monotonic() + 30
        while True:
            with new_primary.server.connect() as conn:
                if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    break
            assert time.monotonic() < deadline, "the standby did not promote"
            time.sleep(0.05)
        write_config(fleet, pg_shard(new_primary))
        [first] = fleet.backup()
        assert first.ok, first.error
        delta = insert_rows(new_primary, 1)
        [second] = fleet.backup()
        assert second.ok and second.kind == "catchup", second.error
        assert_streamed_through_catchup(first, second, delta)
        restored = run_cli(
            "restore",
            "pg/0",
            "--target-dir",
            str(short_tmp / "r" / "data"),
            "-c",
            str(fleet.config_path),
        )
        assert restored.returncode == 0, restored.stderr
        assert_no_upstream_secrets(short_tmp / "r")
    finally:
        new_primary.kill()


def test_a_stalled_standby_quotes_its_log(fleet, pg, short_tmp):
    source = pg(size_mb=15)
    write_config(fleet, pg_shard(source))
    [first] = fleet.backup()
    assert first.ok, first.error
    source.apply_workload(0.01)
    fleet.config_path.write_text(
        fleet.config_path.read_text().replace(
            "stall_timeout_seconds = 20", "stall_timeout_seconds = 3"
        )
    )
    source.execute("ALTER ROLE catchup NOREPLICATION")  # its SQL still works, streaming not
    [stalled] = fleet.backup()
    assert not stalled.ok and stalled.stalled, stalled.error
    assert "standby's log:" in stalled.error, stalled.error
    assert "could not connect to the primary server" in stalled.error, stalled.error
    assert "replication" in stalled.error.partition("standby's log:")[2], stalled.error
