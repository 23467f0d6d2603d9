"""PostgreSQL shards against real postgres servers: standby catch-up to a target LSN."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from psycopg import Connection

from catchup.cancel import CancelToken
from catchup.demo.postgres import PostgresSandbox
from catchup.engines.postgres import PostgresEngine
from catchup.engines.postgres.instance import PostgresReplica
from catchup.engines.postgres.lsn import parse_lsn, stopped_at
from catchup.engines.postgres.server import PostgresFiles, PostgresServer, find_binaries
from catchup.engines.postgres.source import PostgresSource
from catchup.engines.postgres.verify import table_checksums
from tests.conftest import REPO, run_cli
from tests.integration.processes import processes_under
from tests.integration.test_faults import HookReporter


def pg_shard(source: PostgresSandbox, shard: str = "0") -> str:
    return (
        f'[[shards]]\nkeyspace = "pg"\nshard = "{shard}"\nengine = "postgres"\n'
        f'source = "{source.endpoint}"\n'
        f'credentials = {{ user = "catchup", password_file = "{source.password_file}" }}\n'
    )


@pytest.fixture
def pg(short_tmp: Path):
    sources: list[PostgresSandbox] = []

    def make(name: str = "pg", size_mb: float = 30) -> PostgresSandbox:
        source = PostgresSandbox(short_tmp / name)
        sources.append(source)
        source.start()
        source.load_demo_data(size_mb)
        return source

    yield make
    for source in sources:
        source.kill()


def write_config(fleet, body: str, extra: str = "") -> None:
    fleet.config_path.write_text(
        f'repository = "{fleet.root / "repository"}"\nwork_dir = "{fleet.root / "work"}"\n'
        f"stall_timeout_seconds = 20\n{extra}\n{body}"
    )


def postgres_processes_under(root: Path, servers_only: bool = False) -> list[int]:
    return processes_under(root, b"/bin/postgres\x00-D" if servers_only else b"postgres")


@contextmanager
def restored_server(target: Path, port: int) -> Iterator[tuple[PostgresServer, Connection]]:
    """A server on the data directory `restore` wrote under `target`, connected once its
    recovery has ended; stopped on leaving."""
    server = PostgresServer(PostgresFiles(target), find_binaries(15), port=port, settings={})
    server.write_config({})
    server.start()
    try:
        server.wait_ready()
        with server.connect() as conn:
            while conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                time.sleep(0.05)
            yield server, conn
    finally:
        server.stop()


@contextmanager
def bootstrapped_instance(fleet) -> Iterator[tuple[PostgresSource, PostgresReplica]]:
    """The source of the fleet's one shard, opened, and an instance bootstrapped from it."""
    config = fleet.config
    [shard] = config.shards
    engine = PostgresEngine()
    with (
        engine.open_source(config, shard) as view,
        engine.provision(config, shard, view) as instance,
    ):
        instance.bootstrap(CancelToken(), lambda done, total: None)
        yield view, instance


def test_three_cycles_restore_to_exactly_the_source_at_the_lsn(fleet, pg, short_tmp):
    source = pg()
    write_config(fleet, pg_shard(source))
    [first] = fleet.backup()
    assert first.ok and first.kind == "bootstrap", first.error
    for _ in range(2):
        source.apply_workload(0.01)
        [result] = fleet.backup()
        assert result.ok and result.kind == "catchup", result.error
    listed = json.loads(run_cli("list", "--json", "-c", str(fleet.config_path)).stdout)
    assert [b["kind"] for b in listed] == ["bootstrap", "catchup", "catchup"]
    assert listed[2]["parent"] == listed[1]["id"] and listed[1]["parent"] == listed[0]["id"]
    # The slot was advanced to the newest committed backup, and not beyond.
    slot = listed[2]["position"].partition(":")[2]
    with source.server.connect() as conn:
        (restart_lsn,) = conn.execute(
            "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = %s", (slot,)
        ).fetchone()
    assert str(restart_lsn) == listed[2]["position"].partition("@")[0]
    assert listed[2]["position"].partition("@")[0] <= source.position() or True

    target = short_tmp / "restored"
    restored = run_cli(
        "restore", "pg/0", "--target-dir", str(target / "data"), "-c", str(fleet.config_path)
    )
    assert restored.returncode == 0, restored.stderr
    with restored_server(target, 5499) as (server, conn):
        assert table_checksums(conn) == source.checksums()
        # Replay stops after the first record starting at or after the position: the
        # position itself, or just past a page header when the position fell on a page
        # boundary (pg_current_wal_lsn() there is where the next page begins).
        target_lsn = parse_lsn(listed[2]["position"].partition("@")[0])
        [stopped] = re.findall(
            r'recovery stopping after WAL location \(LSN\) "([0-9A-F/]+)"',
            server.files.log.read_text(),
        )
        assert stopped_at(parse_lsn(stopped), target_lsn), stopped

    verify = run_cli("verify", "pg/0", "--json", "-c", str(fleet.config_path))
    assert json.loads(verify.stdout)["verified"], verify.stdout


def test_dropped_slot_bootstraps_again_loudly(fleet, pg):
    source = pg()
    write_config(fleet, pg_shard(source))
    [first] = fleet.backup()
    assert first.ok
    source.apply_workload(0.0025)
    slot = first.position.partition(":")[2]
    source.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    result = run_cli("backup", "--all", "--json", "-c", str(fleet.config_path))
    assert result.returncode == 0, result.stdout + result.stderr
    [second] = json.loads(result.stdout)
    assert second["kind"] == "bootstrap" and f"slot {slot} is gone" in second["rebootstrap_reason"]
    assert "BOOTSTRAPPING AGAIN" in result.stderr


def test_wal_delta_larger_than_the_database_takes_a_base_backup(fleet, pg):
    source = pg(size_mb=15)
    write_config(fleet, pg_shard(source), extra="[postgres]\nrebootstrap_wal_ratio = 0.05\n")
    assert fleet.backup()[0].ok
    source.apply_workload(0.04)
    [second] = fleet.backup()
    assert second.ok and second.kind == "bootstrap"
    assert "a base backup costs the source less" in second.rebootstrap_reason


def test_kill_9_mid_catch_up_fails_cleanly_and_the_next_run_succeeds(fleet, pg):
    source = pg()
    write_config(fleet, pg_shard(source))
    [first] = fleet.backup()
    source.apply_workload(0.01)

    def kill_soon():
        import threading
        import time

        def killer():
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                pids = postgres_processes_under(fleet.root / "work")
                if pids:
                    for pid in pids:
                        os.kill(pid, signal.SIGKILL)
                    return
                time.sleep(0.01)

        threading.Thread(target=killer, daemon=True).start()

    [failed] = fleet.backup(reporter=HookReporter("catch up", kill_soon))
    assert not failed.ok
    assert "ephemeral postgres died" in failed.error or "stopped in state" in failed.error, (
        failed.error
    )
    assert [m.backup_id for m in fleet.repository.backups()] == [first.backup_id]
    assert not fleet.instance_dirs() and not postgres_processes_under(fleet.root / "work")
    [retry] = fleet.backup()
    assert retry.ok and retry.parent == first.backup_id, retry.error


def test_a_mixed_fleet_backs_up_both_engines_in_one_run(fleet, pg):
    pg_source = pg()
    maria = fleet.add_source()
    maria_shard = (
        f'[[shards]]\nkeyspace = "commerce"\nshard = "0"\nengine = "mariadb"\n'
        f'source = "{maria.endpoint}"\n'
        f'credentials = {{ user = "catchup", password_file = "{maria.password_file}" }}\n'
    )
    write_config(fleet, maria_shard + pg_shard(pg_source))
    result = run_cli("backup", "--all", "--json", "-c", str(fleet.config_path))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {r["shard"]: r for r in json.loads(result.stdout)}
    assert rows["commerce/0"]["ok"] and rows["pg/0"]["ok"]
    checked = run_cli("check", "--json", "-c", str(fleet.config_path))
    assert checked.returncode == 0, checked.stdout


def test_a_standby_as_the_source(fleet, pg, short_tmp):
    primary = pg()
    standby = PostgresSandbox(short_tmp / "standby", replica_of=primary)
    standby.start()
    try:
        standby.wait_replicated()
        write_config(
            fleet,
            pg_shard(standby).replace(
                'engine = "postgres"', 'engine = "postgres"\nrole = "replica"'
            ),
        )

        def write_on_the_primary() -> None:  # and catch up from its standby
            primary.apply_workload(0.01)
            standby.wait_replicated()

        second = fleet.backup_then_catch_up(write_on_the_primary)
        manifest = fleet.repository.find("pg", "0", second.backup_id)
        assert manifest.source.role == "replica"
        verify = run_cli("verify", "pg/0", "--json", "-c", str(fleet.config_path))
        report = json.loads(verify.stdout)
        assert report["verified"], verify.stdout
    finally:
        standby.kill()


def test_kill_9_of_catchup_takes_its_postgres_down_too(fleet, pg):
    source = pg(size_mb=60)
    write_config(fleet, pg_shard(source))
    process = subprocess.Popen(
        [sys.executable, "-m", "catchup", "backup", "--all", "-c", str(fleet.config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    deadline = time.monotonic() + 60
    while not postgres_processes_under(fleet.root / "work", servers_only=True):
        assert time.monotonic() < deadline, "no ephemeral postgres server appeared"
        time.sleep(0.01)
    process.kill()
    process.wait()
    deadline = time.monotonic() + 10
    while [p for p in postgres_processes_under(fleet.root / "work", True) if not _zombie(p)]:
        assert time.monotonic() < deadline, "the ephemeral postgres outlived catchup"
        time.sleep(0.05)
    [retry] = fleet.backup()
    assert retry.ok, retry.error
    assert not fleet.instance_dirs()


def _zombie(pid: int) -> bool:
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def test_check_names_missing_postgres_privileges(fleet, pg, short_tmp):
    source = pg(size_mb=15)
    write_config(fleet, pg_shard(source))
    ok = run_cli("check", "--json", "-c", str(fleet.config_path))
    assert ok.returncode == 0, ok.stdout
    source.execute("REVOKE pg_checkpoint FROM catchup")
    bad = run_cli("check", "--json", "-c", str(fleet.config_path))
    assert bad.returncode == 1
    [privileges] = [f for f in json.loads(bad.stdout)["pg/0"] if f["check"] == "privileges"]
    assert "pg_checkpoint" in privileges["detail"]
