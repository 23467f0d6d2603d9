"""Who can reach what a MariaDB cycle runs, and whether the source is the one the chain
was built from: the relay serves only catchup, the ephemeral server gets no secret and a
private socket, replica server ids do not collide with the source's, passwords survive
option files, events keep their status, and a changed source is warned about or refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from catchup.cycle import LogReporter
from catchup.engines.mariadb import instance as instance_module
from catchup.engines.mariadb.instance import provision
from catchup.engines.mariadb.server import MariaDBServer, ServerFiles
from tests.conftest import run_cli
from tests.integration.test_faults import HookReporter

pytestmark = pytest.mark.integration

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


class Recorder(LogReporter):
    def __init__(self) -> None:
        self.steps: list[str] = []
        self.warnings: list[str] = []

    def step(self, shard: str, step: str) -> None:
        super().step(shard, step)
        self.steps.append(step)

    def warn(self, shard: str, message: str) -> None:
        super().warn(shard, message)
        self.warnings.append(message)


def ephemeral_query(instance_root, sql: str) -> str:
    """Ask a running ephemeral server, as catchup does, through its own option file."""
    [root] = instance_root.iterdir()
    result = subprocess.run(
        ["mariadb", f"--defaults-extra-file={root / 'admin.cnf'}", "-N", "-e", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
@pytest.mark.parametrize("depth", [1, 12], ids=["socket-in-instance", "socket-under-tmp"])
def test_the_ephemeral_server_has_no_secret_and_a_private_socket(
    short_tmp, monkeypatch, depth
) -> None:
    monkeypatch.setenv("CATCHUP_TEST_SECRET", "hunter2-in-the-environment")
    work_dir = short_tmp.joinpath(*["deep-directory-name"] * depth)
    from catchup.config import MariaDBSettings

    with provision(work_dir, "ks.0", MariaDBSettings(buffer_pool_mb=16, redo_log_mb=16)) as eph:
        eph.server.install()
        eph.server.start()
        environ = Path(f"/proc/{eph.server.pid}/environ").read_bytes()
        assert b"CATCHUP_TEST_SECRET" not in environ and b"hunter2" not in environ
        assert b"PATH=" in environ

        socket_dir = eph.files.socket.parent
        if depth == 1:
            assert eph.files.socket.is_relative_to(eph.files.root)
        assert socket_dir.stat().st_mode & 0o777 == 0o700
        assert socket_dir.stat().st_uid == os.geteuid()
        probe = (
            "import socket, sys\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    sys.exit(7)\n"
        )
        other_user = subprocess.run(
            [*NOBODY, sys.executable, "-I", "-c", probe, str(eph.files.socket)], check=False
        )
        assert other_user.returncode == 7, "another uid reached the ephemeral server's socket"
        socket_dir_outside = not socket_dir.is_relative_to(eph.files.root)
    assert not (socket_dir_outside and socket_dir.exists()), "the /tmp socket dir is left"


def test_replica_server_ids_avoid_the_sources_history_and_its_replicas(fleet, monkeypatch) -> None:
    primary = fleet.add_source(server_id=1)
    replica = fleet.add_replica(primary, server_id=77)
    fleet.write_config([primary])
    assert fleet.backup()[0].ok

    class Draws:
        def __init__(self, values: list[int]) -> None:
            self.values = values

        def randint(self, low: int, high: int) -> int:
            return self.values.pop(0)

    seen: list[str] = []
    instances = fleet.root / "work" / "instances"
    at_stop = HookReporter(
        "stop", lambda: seen.append(ephemeral_query(instances, "SELECT @@server_id"))
    )
    # Without REPLICATION MASTER ADMIN the source's own id and its binlog history are known.
    primary.apply_workload(0.02)
    monkeypatch.setattr(instance_module, "RANDOM", Draws([1, 3_000_000_001]))
    [second] = fleet.backup(reporter=at_stop)
    assert second.ok and second.kind == "catchup", second.error
    assert seen == ["3000000001"]

    # With it (an optional grant), the connected replicas' ids are known too.
    primary.execute("GRANT REPLICATION MASTER ADMIN ON *.* TO 'catchup'@'%'")
    primary.apply_workload(0.02)
    at_stop.fired = False
    monkeypatch.setattr(instance_module, "RANDOM", Draws([77, 3_000_000_002]))
    [third] = fleet.backup(reporter=at_stop)
    assert third.ok, third.error
    assert seen[-1] == "3000000002"
    replica.wait_replicated()  # its dump thread was never taken over
    with replica.connect() as conn, conn.cursor() as cursor:
        cursor.execute("SHOW SLAVE STATUS")
        status = dict(zip([d[0] for d in cursor.description], cursor.fetchone(), strict=True))
    assert status["Slave_IO_Running"] == "Yes" and status["Last_IO_Errno"] == 0


def test_a_password_with_option_file_metacharacters(fleet) -> None:
    source = fleet.add_source()
    password = " #not a comment\\ \"quoted\" 'single' ; x "
    source.execute("ALTER USER 'catchup'@'%%' IDENTIFIED BY %s", (password,))
    source.password_file.write_text(password + "\n")
    fleet.write_config()
    [first] = fleet.backup()  # mariadb-dump reads the password from an option file
    assert first.ok and first.kind == "bootstrap", first.error
    source.apply_workload(0.02)
    [second] = fleet.backup()
    assert second.ok and second.kind == "catchup", second.error
    assert second.position == source.position()


def test_events_come_back_as_the_source_has_them(fleet, short_tmp) -> None:
    source = fleet.add_source()
    create = "CREATE EVENT shop.{} ON SCHEDULE EVERY 1 HOUR {} DO DELETE FROM shop.event_log"
    source.execute(create.format("before_bootstrap", "ENABLE"))
    fleet.write_config()
    assert fleet.backup()[0].ok
    source.execute("ALTER EVENT shop.before_bootstrap ON SCHEDULE EVERY 2 HOUR")
    source.execute(create.format("after_bootstrap", "ENABLE"))
    source.execute(create.format("disabled", "DISABLE"))
    [result] = fleet.backup()
    assert result.ok and result.kind == "catchup", result.error

    target = short_tmp / "restored"
    restored = run_cli(
        "restore", "commerce/0", "--target-dir", str(target / "data"), "-c", str(fleet.config_path)
    )
    assert restored.returncode == 0, restored.stderr
    server = MariaDBServer(ServerFiles(target), server_id=99, options=["--skip-slave-start"])
    server.start()
    try:
        with server.connect() as conn, conn.cursor() as cursor:
            cursor.execute(
                "SELECT event_name, status FROM information_schema.events ORDER BY event_name"
            )
            statuses = dict(cursor.fetchall())
    finally:
        server.stop()
    assert statuses == {
        "after_bootstrap": "ENABLED",
        "before_bootstrap": "ENABLED",
        "disabled": "DISABLED",
    }


def test_a_changed_source_is_refused_or_warned_about(fleet) -> None:
    a = fleet.add_source(server_id=1)
    b = fleet.add_replica(a, server_id=2)
    fleet.write_config([a])
    [first] = fleet.backup()
    assert first.ok, first.error
    assert fleet.repository.find("commerce", "0", first.backup_id).source.identity == (
        "server_id 1"
    )

    # A fails over to B: same GTID history, another server.
    a.apply_workload(0.02)
    b.wait_replicated()
    b.execute("STOP SLAVE")
    b.execute("RESET SLAVE ALL")
    b.apply_workload(0.02)
    fleet.write_config([b])
    text = fleet.config_path.read_text()
    fleet.config_path.write_text('on_source_change = "refuse"\n' + text)
    refused = Recorder()
    [result] = fleet.backup(reporter=refused)
    assert not result.ok and "the source is another server" in result.error, result.error
    assert "server_id 1" in result.error and "server_id 2" in result.error
    assert "catchup backup --bootstrap commerce/0" in result.error
    assert "provision" not in refused.steps
    assert len(fleet.repository.backups()) == 1

    fleet.config_path.write_text(text)  # the default: warn
    warned = Recorder()
    [second] = fleet.backup(reporter=warned)
    assert second.ok and second.kind == "catchup", second.error
    assert any(w.startswith("SOURCE CHANGED") for w in warned.warnings), warned.warnings
    assert fleet.repository.find("commerce", "0", second.backup_id).source.identity == (
        "server_id 2"
    )
    b.apply_workload(0.02)
    quiet = Recorder()
    assert fleet.backup(reporter=quiet)[0].ok
    assert not quiet.warnings  # the same server as at the newest backup


def test_check_warns_about_a_source_without_gtid_strict_mode(fleet) -> None:
    import json

    source = fleet.add_source()
    fleet.write_config()
    source.execute("SET GLOBAL gtid_strict_mode = 0")
    checked = run_cli("check", "--json", "-c", str(fleet.config_path))
    findings = json.loads(checked.stdout)["commerce/0"]
    [strict] = [f for f in findings if f["check"] == "gtid strict mode"]
    assert not strict["ok"] and "gtid_strict_mode=ON" in strict["detail"]
    assert checked.returncode == 1
    source.execute("SET GLOBAL gtid_strict_mode = 1")
    assert run_cli("check", "-c", str(fleet.config_path)).returncode == 0
