"""MySQL sandbox sources for the demo, the tests and the benchmarks: real mysqld
primaries (or replicas) with binary logs and GTIDs on private ports, loaded with
the "shop" dataset. The sandbox is MariaDB's (mariadb.py) with MySQL's server,
options and replication statements.

The catchup account gets exactly the engine's SOURCE_GRANT, the one the README
documents, so every demo and test run proves that GRANT is sufficient. The clone
plugin is loaded, so a bootstrap can use CLONE INSTANCE.
"""

from __future__ import annotations

from pathlib import Path

from catchup.demo.mariadb import MariaDBSandbox
from catchup.engines.mysql.gtid import GtidSet
from catchup.engines.mysql.server import MySQLServer, ServerFiles, select_value
from catchup.engines.mysql.source import SOURCE_GRANT

SOURCE_OPTIONS = [
    "--log-bin=binlog",
    "--log-replica-updates=ON",
    "--innodb-buffer-pool-size=128M",
    "--innodb-redo-log-capacity=67108864",
    "--plugin-load-add=mysql_clone.so",  # CLONE INSTANCE donor
    # A sandbox, not production: trade durability for speed.
    "--innodb-flush-log-at-trx-commit=2",
    "--sync-binlog=0",
]


class MySQLSandbox(MariaDBSandbox):
    """One sandbox primary (or replica) with its `catchup` account and the demo schema.
    `options` adds server options (e.g. --binlog-transaction-compression=ON)."""

    engine = "mysql"
    grant = SOURCE_GRANT

    def __init__(
        self,
        root: Path,
        server_id: int,
        binaries: Path | None = None,
        replica_of: MySQLSandbox | None = None,
        options: list[str] | None = None,
    ) -> None:
        super().__init__(root, server_id, binaries, replica_of)
        self.server = MySQLServer(
            ServerFiles(root),
            server_id,
            [*SOURCE_OPTIONS, *(options or [])],
            binaries=binaries,
            port=self.port,
            die_with_parent=False,  # `demo --keep` leaves the fleet running
            admin_user="sandbox_admin",
        )

    def _replicate_from(self, primary: MariaDBSandbox) -> None:
        self.execute(
            "CHANGE REPLICATION SOURCE TO SOURCE_HOST='127.0.0.1', SOURCE_PORT=%s, "
            "SOURCE_USER='catchup', SOURCE_PASSWORD=%s, SOURCE_AUTO_POSITION=1, "
            "SOURCE_SSL=0, GET_SOURCE_PUBLIC_KEY=1",
            (primary.port, primary.password_file.read_text().strip()),
        )
        self.execute("START REPLICA")

    def wait_replicated(self, timeout: float = 60) -> None:
        """Block until this replica has applied everything its primary has executed."""
        assert self.replica_of is not None
        target = self.replica_of.position()
        with self.connect() as conn, conn.cursor() as cursor:
            waited = select_value(
                cursor, "SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s)", (target, timeout)
            )
            if waited != 0:
                raise RuntimeError(f"replica did not reach {target} in {timeout}s")

    def position(self) -> str:
        with self.connect() as conn, conn.cursor() as cursor:
            return str(GtidSet.parse(str(select_value(cursor, "SELECT @@GLOBAL.gtid_executed"))))
