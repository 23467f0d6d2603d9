"""MariaDB sandbox sources for the demo, the tests and the benchmarks: real
mariadbd primaries (or replicas) with binlog and GTID on private ports, loaded
with the "shop" dataset (shop.py).

The catchup account gets exactly the engine's SOURCE_GRANT, the one the README
documents, so every demo and test run proves that GRANT is sufficient.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pymysql

from catchup.demo import shop
from catchup.engines.mariadb.server import (
    MariaDBServer,
    ServerFiles,
    kill_server_in,
    select_value,
)
from catchup.engines.mariadb.source import SOURCE_GRANT
from catchup.engines.mariadb.verify import table_checksums
from catchup.engines.relay import free_port
from catchup.files import write_private

SOURCE_OPTIONS = [
    "--log-bin=binlog",
    "--binlog-format=MIXED",
    "--log-slave-updates=ON",
    "--gtid-strict-mode=1",
    "--innodb-buffer-pool-size=128M",
    "--innodb-log-file-size=64M",
    # A sandbox, not production: trade durability for speed.
    "--innodb-flush-log-at-trx-commit=2",
    "--sync-binlog=0",
]


class MariaDBSandbox:
    """One sandbox primary with its `catchup` account and the demo schema."""

    engine = "mariadb"
    grant = SOURCE_GRANT  # the engine's documented GRANT for the catchup account

    def __init__(
        self,
        root: Path,
        server_id: int,
        binaries: Path | None = None,
        replica_of: MariaDBSandbox | None = None,
    ) -> None:
        self.root = root
        self.replica_of = replica_of
        self.port = free_port()
        self.server = MariaDBServer(
            ServerFiles(root),
            server_id,
            SOURCE_OPTIONS,
            binaries=binaries,
            port=self.port,
            die_with_parent=False,  # `demo --keep` leaves the fleet running
            # Not catchup's admin name: the bootstrap carries the source's accounts.
            admin_user="sandbox_admin",
        )
        # A replica gets its accounts, the catchup one included, from its primary.
        self.password_file = (replica_of or self).root / "catchup.password"
        self.workloads = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        fresh = not self.server.files.data_dir.exists()
        if fresh:
            self.server.install()
        self.server.start()
        if fresh and self.replica_of:
            self._replicate_from(self.replica_of)
        elif fresh:
            password = secrets.token_urlsafe(18)
            write_private(self.password_file, password + "\n")
            self.execute("CREATE USER 'catchup'@'%%' IDENTIFIED BY %s", (password,))
            self.execute(self.grant)

    def _replicate_from(self, primary: MariaDBSandbox) -> None:
        self.execute(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%s, MASTER_USER='catchup', "
            "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos",
            (primary.port, primary.password_file.read_text().strip()),
        )
        self.execute("START SLAVE")

    def wait_replicated(self, timeout: float = 60) -> None:
        """Block until this replica has applied everything its primary has logged."""
        assert self.replica_of is not None
        target = self.replica_of.position()
        with self.connect() as conn, conn.cursor() as cursor:
            if select_value(cursor, "SELECT MASTER_GTID_WAIT(%s, %s)", (target, timeout)) != 0:
                raise RuntimeError(f"replica did not reach {target} in {timeout}s")

    def stop(self) -> None:
        self.server.stop()

    @staticmethod
    def kill_leftover(root: Path) -> None:
        kill_server_in(root)

    def kill(self) -> None:
        self.server.kill()

    def connect(self) -> pymysql.Connection:
        return self.server.connect()

    def execute(self, sql: str, args: tuple[object, ...] | None = None) -> None:
        with self.connect() as conn, conn.cursor() as cursor:
            cursor.execute(sql, args)

    def load_demo_data(self, size_mb: float) -> None:
        with self.connect() as conn, conn.cursor() as cursor:
            shop.load(cursor, size_mb)

    def apply_workload(self, fraction: float = 0.03) -> None:
        """Change about `fraction` of the rows in many small transactions, plus DDL,
        a procedure call and an account change."""
        self.workloads += 1
        with self.connect() as conn, conn.cursor() as cursor:
            shop.apply_workload(cursor, fraction, self.workloads)

    def grant_new_account(self, name: str) -> None:
        """A GRANT after the bootstrap: catch-up must carry it (accounts are in the backup)."""
        self.execute(f"CREATE USER '{name}'@'%' IDENTIFIED BY 'not-a-secret'")
        self.execute(f"GRANT SELECT ON {shop.DATABASE}.* TO '{name}'@'%'")

    def position(self) -> str:
        with self.connect() as conn, conn.cursor() as cursor:
            return str(select_value(cursor, "SELECT @@gtid_binlog_pos"))

    def quiesced_at(self, position: str) -> bool:
        """The source has logged nothing since `position`."""
        return self.position() == position

    def checksums(self) -> dict[str, int | None]:
        with self.connect() as conn, conn.cursor() as cursor:
            return table_checksums(cursor)

    def purge_binlogs(self) -> None:
        """Rotate and purge every binlog but the newest: the delta since any backup is gone."""
        with self.connect() as conn, conn.cursor() as cursor:
            cursor.execute("FLUSH BINARY LOGS")
            cursor.execute("SHOW BINARY LOGS")
            newest = cursor.fetchall()[-1][0]
            # A binlog stays "in use" until InnoDB's binlog checkpoint passes it,
            # and PURGE skips such files silently: retry until they are gone.
            deadline = time.monotonic() + 30
            while True:
                cursor.execute("PURGE BINARY LOGS TO %s", (newest,))
                cursor.execute("SHOW BINARY LOGS")
                if cursor.fetchall()[0][0] == newest:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"binlogs before {newest} could not be purged")
                time.sleep(0.1)
