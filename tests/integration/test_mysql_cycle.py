"""Backup cycles against real mysqld sources (tools/install-mysql's MySQL; the version is
in pytest's header): both bootstrap methods, a chain of three with DDL and a GRANT, a
restored data dir started by a stock mysqld and attached as a replica of the source, the
password in no argv, log or stored object; a replica as the source and errant GTIDs
refused; a source that compresses its binary log and has no TLS; a frozen source."""

from __future__ import annotations

import json
import os
import signal

from catchup.cancel import CancelToken
from catchup.demo.mysql import MySQLSandbox
from catchup.demo.run import prove_equal
from catchup.engines.mysql.gtid import GtidSet
from catchup.engines.mysql.server import MySQLServer, ServerFiles
from catchup.engines.mysql.verify import table_checksums
from tests.conftest import run_cli
from tests.integration.conftest import Fleet
from tests.integration.processes import command_lines, processes_under, stored_plaintext
from tests.integration.test_faults import HookReporter

ARCHIVE_REDO_BYTES = 8 * 1024 * 1024  # mysql.archive_redo_log_mb's default


def add_mysql(fleet: Fleet, name: str, server_id: int, **kwargs: object) -> MySQLSandbox:
    source = MySQLSandbox(fleet.root / "sandbox" / name, server_id, **kwargs)  # type: ignore[arg-type]
    fleet.sources.append(source)  # type: ignore[arg-type]  # the fixture kills every one
    source.start()
    return source


def assert_no_password(fleet: Fleet, password: bytes, seen_in_argv: list[int], logs: str) -> None:
    """The source's password reached no process's argv, no log line and no stored object
    (a password given to CHANGE REPLICATION SOURCE would linger in the redo log)."""
    assert not seen_in_argv
    assert password not in logs.encode()
    for path in (fleet.root / "repository").rglob("*"):
        if path.is_file():
            assert password not in stored_plaintext(path), f"the password is in {path}"


def bootstrap_method(fleet: Fleet, method: str) -> None:
    with fleet.config_path.open("a") as config:  # a table after the shards' array
        config.write(f'\n[mysql]\nbootstrap = "{method}"\n')


def test_three_cycles_restore_to_a_stock_mysqld_that_then_replicates(fleet, short_tmp, caplog):
    """By dump, which copies the accounts itself (the engine contract suite's cycles,
    and the other tests here, clone: `auto` picks it on this sandbox)."""
    source = add_mysql(fleet, "src", 1)
    source.load_demo_data(2)
    # Grants on a table, a column and a procedure: copied after the dump created them.
    source.execute("CREATE USER 'auditor'@'%' IDENTIFIED BY 'not-a-secret'")
    source.execute("GRANT SELECT ON shop.orders TO 'auditor'@'%'")
    source.execute("GRANT SELECT (email) ON shop.customers TO 'auditor'@'%'")
    source.execute("GRANT EXECUTE ON PROCEDURE shop.cancel_stale_orders TO 'auditor'@'%'")
    fleet.write_config([source])  # type: ignore[list-item]
    bootstrap_method(fleet, "dump")
    password = source.password_file.read_text().strip().encode()
    seen_in_argv: list[int] = []

    def scan_processes() -> None:
        seen_in_argv.extend(pid for pid, line in command_lines() if password in line)

    [first] = fleet.backup(reporter=HookReporter("bootstrap", scan_processes))
    assert first.ok and first.kind == "bootstrap", first.error

    source.apply_workload(0.05)  # inserts, updates, deletes, ALTER TABLE, a procedure call
    source.grant_new_account("reporter")  # a GRANT after the bootstrap
    source.execute(
        "CREATE EVENT shop.nightly ON SCHEDULE EVERY 1 DAY DO DELETE FROM shop.event_log "
        "WHERE happened_at < '2000-01-01'"
    )
    [second] = fleet.backup(reporter=HookReporter("catch up", scan_processes))
    assert second.ok and second.kind == "catchup", second.error
    assert second.bytes_from_source < first.bytes_from_source / 2
    assert_no_password(fleet, password, seen_in_argv, caplog.text)

    source.apply_workload(0.02)
    [third] = fleet.backup()
    assert third.ok and third.parent == second.backup_id, third.error
    assert GtidSet.parse(third.position) == GtidSet.parse(source.position())

    target = short_tmp / "restored"
    restored_dir = target / "data"
    result = run_cli(
        "restore", "commerce/0", "latest", "--target-dir", str(restored_dir),
        "-c", str(fleet.config_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    names = {p.name for p in restored_dir.iterdir()}
    assert not names & {"auto.cnf", "mysqld-auto.cnf"}, "the source's identity stays behind"
    assert not [n for n in names if n.endswith(".pem")], "no TLS or RSA key in the backup"
    redo = sum(p.stat().st_size for p in (restored_dir / "#innodb_redo").iterdir())
    assert redo <= ARCHIVE_REDO_BYTES * 1.1, f"the redo log was not shrunk: {redo} bytes"

    # A stock mysqld (catchup's server class adds only a login for the test) with a
    # binary log, as a replica would run.
    restored = MySQLServer(
        ServerFiles(target), server_id=99, options=["--log-bin=binlog", "--skip-replica-start"]
    )
    restored.start()
    try:
        log = restored.files.error_log.read_text()
        assert "crash recovery" not in log.lower(), "a clean shutdown needs no recovery"
        with restored.connect() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT @@GLOBAL.gtid_executed, @@server_uuid")
            executed, uuid = cursor.fetchone()
            assert GtidSet.parse(executed) == GtidSet.parse(third.position)
            assert uuid not in source.position(), "a fresh server_uuid, not the source's"
            cursor.execute("SELECT user FROM mysql.user WHERE user = 'reporter'")
            assert cursor.fetchall(), "the GRANT made after the bootstrap is in the backup"
            cursor.execute("SHOW GRANTS FOR 'auditor'@'%'")
            grants = " ".join(row[0] for row in cursor.fetchall())
            for granted in ("`shop`.`orders`", "SELECT (`email`)", "`cancel_stale_orders`"):
                assert granted in grants, grants
            cursor.execute(
                "SELECT status FROM information_schema.events WHERE event_name = 'nightly'"
            )
            assert cursor.fetchall() == (("ENABLED",),), (
                "the replicated event runs as on the source"
            )
            assert table_checksums(cursor) == source.checksums()

            # Attached to the source, it replicates what came after the backup.
            cursor.execute(
                "CHANGE REPLICATION SOURCE TO SOURCE_HOST='127.0.0.1', SOURCE_PORT=%s, "
                "SOURCE_USER='catchup', SOURCE_PASSWORD=%s, SOURCE_AUTO_POSITION=1, "
                "SOURCE_SSL=0, GET_SOURCE_PUBLIC_KEY=1",
                (source.port, source.password_file.read_text().strip()),
            )
            cursor.execute("START REPLICA")
            source.apply_workload(0.02)
            cursor.execute("SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, 60)", (source.position(),))
            assert cursor.fetchone()[0] == 0, "the restored server caught up with its source"
            assert table_checksums(cursor) == source.checksums()
            cursor.execute("STOP REPLICA")
    finally:
        restored.stop()

    listed = json.loads(run_cli("list", "--json", "-c", str(fleet.config_path)).stdout)
    assert [b["kind"] for b in listed] == ["bootstrap", "catchup", "catchup"]


def test_a_replica_as_the_source_and_errant_gtids_are_refused(fleet):
    primary = add_mysql(fleet, "primary", 1)
    primary.load_demo_data(1)
    replica = MySQLSandbox(fleet.root / "sandbox" / "replica", 2, replica_of=primary)
    fleet.sources.append(replica)  # type: ignore[arg-type]
    replica.start()
    replica.wait_replicated()

    fleet.write_config([replica], role="replica")  # type: ignore[list-item]
    [first] = fleet.backup()
    assert first.ok, first.error
    primary.apply_workload(0.05)
    replica.wait_replicated()
    [second] = fleet.backup()
    assert second.ok and second.kind == "catchup", second.error
    config = fleet.config
    proof = prove_equal(config, fleet.repository, config.shards[0], replica, CancelToken())
    assert proof is not None and proof.ok

    # A write made on the replica itself: a GTID of its own that the primary never had.
    replica.execute("CREATE TABLE shop.errant (id INT PRIMARY KEY)")
    [third] = fleet.backup()
    assert third.ok, third.error
    # The shard's endpoint now reaches the primary (a failover): the backups carry a
    # transaction it never executed, which catching up would silently keep.
    fleet.write_config([primary], role="primary")  # type: ignore[list-item]
    [refused] = fleet.backup()
    assert not refused.ok and "errant GTIDs" in refused.error, refused.error
    assert "refusing to back up" in refused.error
    assert len(fleet.repository.backups()) == 3
    assert not fleet.instance_dirs()


def test_a_source_compressing_its_binary_log_without_tls(fleet):
    source = add_mysql(
        fleet, "src", 1, options=["--binlog-transaction-compression=ON", "--tls-version="]
    )
    source.load_demo_data(1)
    fleet.write_config([source])  # type: ignore[list-item]
    bootstrap_method(fleet, "clone")  # fails, naming why, where a clone is impossible
    second = fleet.backup_then_catch_up(lambda: source.apply_workload(0.05))
    assert second.ok, second.error
    config = fleet.config
    proof = prove_equal(config, fleet.repository, config.shards[0], source, CancelToken())
    assert proof is not None and proof.ok, proof
    check = run_cli("check", "-c", str(fleet.config_path))
    assert "gtid_mode ON" in check.stdout, check.stdout


def test_a_frozen_source_fails_the_catch_up_after_the_stall_timeout(fleet):
    source = add_mysql(fleet, "src", 1)
    source.load_demo_data(1)
    fleet.write_config([source])  # type: ignore[list-item]
    text = fleet.config_path.read_text()
    fleet.config_path.write_text(
        text.replace("stall_timeout_seconds = 20", "stall_timeout_seconds = 3")
    )
    [first] = fleet.backup()
    assert first.ok, first.error
    source.apply_workload(0.02)
    position = source.position()
    pid = source.server.pid
    assert pid is not None
    try:
        [result] = fleet.backup(
            reporter=HookReporter("catch up", lambda: os.kill(pid, signal.SIGSTOP))
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    assert not result.ok and "catch-up stalled: no progress for 3s" in result.error, result.error
    assert [m.backup_id for m in fleet.repository.backups()] == [first.backup_id]
    assert not fleet.instance_dirs() and not processes_under(fleet.root / "work", b"mysqld")
    assert source.position() == position
    assert fleet.backup()[0].ok
