"""Backup cycles against real mariadbd sources: the happy path and its traps."""

from __future__ import annotations

import json

from catchup.engines.mariadb.server import MariaDBServer, ServerFiles
from tests.conftest import run_cli


def test_three_cycles_with_ddl_and_grant_restore_to_exactly_the_source(fleet, short_tmp):
    source = fleet.add_source()
    fleet.write_config()
    [first] = fleet.backup()
    assert first.ok, first.error
    assert first.kind == "bootstrap" and first.parent is None

    source.apply_workload(0.05)  # inserts, updates, deletes, ALTER TABLE, a procedure call
    source.grant_new_account("reporter")  # a GRANT after the bootstrap
    [second] = fleet.backup()
    assert second.ok, second.error
    assert second.kind == "catchup" and second.parent == first.backup_id
    assert second.bytes_from_source < first.bytes_from_source / 2

    source.apply_workload(0.02)
    [third] = fleet.backup()
    assert third.ok, third.error
    assert third.parent == second.backup_id
    assert third.position == source.position()  # the source is quiet now

    listed = json.loads(run_cli("list", "--json", "-c", str(fleet.config_path)).stdout)
    assert [b["id"] for b in listed] == [first.backup_id, second.backup_id, third.backup_id]
    for backup in listed:
        assert {
            "id",
            "shard",
            "kind",
            "parent",
            "position",
            "bytes_from_source",
            "created_at",
            "data_bytes",
            "stored_bytes",
        } <= backup.keys()
    assert [b["kind"] for b in listed] == ["bootstrap", "catchup", "catchup"]

    # Restore with the CLI and start a stock mariadbd on the result.
    target = short_tmp / "restored"
    result = run_cli(
        "restore",
        "commerce/0",
        "latest",
        "--target-dir",
        str(target / "data"),
        "-c",
        str(fleet.config_path),
    )
    assert result.returncode == 0, result.stderr
    restored = MariaDBServer(ServerFiles(target), server_id=99, options=["--skip-slave-start"])
    restored.start()
    try:
        with restored.connect() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT @@gtid_slave_pos")
            assert cursor.fetchone()[0] == third.position
            cursor.execute("SELECT user FROM mysql.global_priv WHERE user = 'reporter'")
            assert cursor.fetchall(), "the GRANT made after the bootstrap is in the backup"
            cursor.execute("SHOW COLUMNS FROM shop.customers LIKE 'loyalty'")
            assert cursor.fetchall(), "the ALTER TABLE in the delta is in the backup"
            from catchup.engines.mariadb.verify import table_checksums

            assert table_checksums(cursor) == source.checksums()
    finally:
        restored.stop()

    # Retention (the config keeps 2): the oldest goes, the newest two stay.
    dry = json.loads(run_cli("prune", "--dry-run", "--json", "-c", str(fleet.config_path)).stdout)
    assert [e["id"] for e in dry["removed"]] == [first.backup_id]
    assert len(fleet.repository.backups()) == 3
    pruned = run_cli("prune", "-c", str(fleet.config_path))
    assert pruned.returncode == 0 and first.backup_id in pruned.stdout
    assert [m.backup_id for m in fleet.repository.backups()] == [second.backup_id, third.backup_id]


def test_verify_and_show_report_a_good_backup(fleet):
    source = fleet.add_source()
    fleet.write_config()
    assert fleet.backup()[0].ok
    source.apply_workload(0.02)
    [result] = fleet.backup()
    verify = run_cli("verify", "commerce/0", "--json", "-c", str(fleet.config_path))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    report = json.loads(verify.stdout)
    assert report["verified"] is True and report["backup_id"] == result.backup_id
    checks = {f["check"] for f in report["findings"]}
    assert "position" in checks and "CHECK TABLE `shop`.`orders`" in checks
    shown = json.loads(
        run_cli("show", result.backup_id, "--json", "-c", str(fleet.config_path)).stdout
    )
    assert shown["parent"] and shown["source"]["role"] == "primary"
    assert {"restore", "start", "catch up", "stop", "back up"} <= shown["durations"].keys()
    assert shown["compression"]["algorithm"] == "zstd"
    assert not fleet.instance_dirs()


def test_purged_binlogs_bootstrap_again_loudly_or_fail_with_no_rebootstrap(fleet):
    source = fleet.add_source()
    fleet.write_config()
    [first] = fleet.backup()
    source.apply_workload(0.02)
    source.purge_binlogs()

    result = run_cli("backup", "--all", "--json", "-c", str(fleet.config_path))
    assert result.returncode == 0, result.stderr
    [second] = json.loads(result.stdout)
    assert second["kind"] == "bootstrap"
    assert "binlogs start after" in second["rebootstrap_reason"]
    assert "BOOTSTRAPPING AGAIN" in result.stderr
    manifest = fleet.repository.find("commerce", "0", second["backup_id"])
    assert manifest.rebootstrap_reason == second["rebootstrap_reason"]
    assert manifest.position == source.position()

    source.apply_workload(0.02)
    source.purge_binlogs()
    refused = run_cli("backup", "--all", "--no-rebootstrap", "-c", str(fleet.config_path))
    assert refused.returncode == 1
    assert "run without --no-rebootstrap" in refused.stdout + refused.stderr
    assert len(fleet.repository.backups()) == 2
    assert first.backup_id in {m.backup_id for m in fleet.repository.backups()}


def test_a_backup_ahead_of_the_source_is_refused(fleet):
    source = fleet.add_source(server_id=1)
    fleet.write_config()
    fleet.backup()
    source.apply_workload(0.05)
    assert fleet.backup()[0].ok
    # The shard's source is replaced by a server with a shorter history.
    fleet.write_config([fleet.add_source(server_id=1)])
    [result] = fleet.backup()
    assert not result.ok
    assert "refusing to back up" in result.error and "ahead of the source" in result.error
    assert len(fleet.repository.backups()) == 2
    assert not fleet.instance_dirs()


def test_a_backup_from_another_history_is_refused(fleet):
    original = fleet.add_source(server_id=1)
    fleet.write_config()
    assert fleet.backup()[0].ok
    # Another server with more transactions of its own in the same domain.
    other = fleet.add_source(server_id=7)
    other.apply_workload(0.05)
    other.apply_workload(0.05)
    fleet.write_config([other])
    [result] = fleet.backup()
    assert not result.ok
    assert "does not belong to this source" in result.error, result.error
    assert "not in the source's binlog history" in result.error
    assert len(fleet.repository.backups()) == 1
    assert not fleet.instance_dirs()
    assert original.position()  # untouched, and stopped by the fixture


def test_a_replica_as_the_source(fleet):

    primary = fleet.add_source()
    replica = fleet.add_replica(primary, server_id=2)
    fleet.write_config([replica], role="replica")
    config_text = fleet.config_path.read_text()
    assert replica.endpoint in config_text and 'role = "replica"' in config_text
    checked = run_cli("check", "--json", "-c", str(fleet.config_path))
    assert checked.returncode == 0, checked.stdout

    def write_on_the_primary() -> None:  # and catch up from the replica
        primary.apply_workload(0.03)
        replica.wait_replicated()

    second = fleet.backup_then_catch_up(write_on_the_primary)
    assert second.position == primary.position() == replica.position()
    manifest = fleet.repository.find("commerce", "0", second.backup_id)
    assert manifest.source.role == "replica"
