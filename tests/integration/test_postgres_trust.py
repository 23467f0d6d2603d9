"""Other local users cannot reach an ephemeral PostgreSQL instance, and its processes do
not inherit catchup's secrets."""

# ruff: noqa: F811 - the `pg` fixture is imported from test_postgres
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from catchup.cancel import CancelToken
from catchup.engines.postgres import PostgresEngine
from catchup.engines.postgres.server import PostgresServer
from tests.integration.test_postgres import pg, pg_shard, write_config  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

SECRET = "catchup-test-secret-31337"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def as_nobody(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NOBODY, *command], capture_output=True, text=True, check=False)


def psql_as_nobody(server: PostgresServer, user: str) -> subprocess.CompletedProcess[str]:
    return as_nobody(
        str(server.binaries / "psql"),
        "-h",
        str(server.files.sockets),
        "-p",
        str(server.port),
        "-U",
        user,
        "-d",
        "postgres",
        "-Atc",
        "SELECT 'IN'",
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another uid")
def test_another_uid_cannot_reach_a_running_instance_nor_read_catchups_secrets(
    fleet, pg, monkeypatch
):
    source = pg(size_mb=15)
    write_config(fleet, pg_shard(source))
    config = fleet.config
    [shard] = config.shards
    monkeypatch.setenv("CATCHUP_SECRET_FOR_TEST", SECRET)
    engine = PostgresEngine()
    with engine.open_source(config, shard) as source_view:  # noqa: SIM117 - long block
        with engine.provision(config, shard, source_view) as instance:
            instance.bootstrap(CancelToken(), lambda done, total: None)
            server = instance.server
            # A hot standby of the base backup, with nowhere to stream from: it opens for
            # reads once the backup's own WAL is replayed.
            server.write_config(
                {**source_view.session.standby_requirements(), "primary_conninfo": "''"}
            )
            (instance.data_dir / "standby.signal").touch()
            server.start()
            server.wait_ready()
            user = config.credentials_for(shard).user
            with server.connect(user) as conn:
                assert conn.execute("SELECT 1").fetchone()[0] == 1  # catchup itself gets in

            root = instance.files.root
            assert root.stat().st_mode & 0o777 == 0o700
            assert (root.parent.stat().st_mode & 0o077) in (0, 0o011)  # traverse, never list
            for directory in (root, root.parent, instance.data_dir, server.files.sockets):
                listed = as_nobody("ls", str(directory))
                assert listed.returncode != 0, (directory, listed.stdout)
            for role in (user, "postgres"):
                refused = psql_as_nobody(server, role)
                assert refused.returncode != 0 and "IN" not in refused.stdout, refused.stdout

            # Even with the socket opened to everyone, peer authentication keeps them out.
            for path in (root, server.files.sockets):
                path.chmod(0o755)
            socket_file = next(server.files.sockets.glob(".s.PGSQL.*[0-9]"))
            socket_file.chmod(0o777)
            for role in (user, "postgres"):
                refused = psql_as_nobody(server, role)
                assert refused.returncode != 0 and "IN" not in refused.stdout, refused.stdout
                assert "authentication failed" in refused.stderr, refused.stderr

            environ = Path(f"/proc/{server.pid}/environ").read_bytes()
            assert b"PATH=" in environ  # a real environment was read
            assert SECRET.encode() not in environ
