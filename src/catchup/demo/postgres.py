"""PostgreSQL sandbox sources for the demo, the tests and the benchmarks:
initdb (or a streaming standby), the catchup role with exactly the engine's
SOURCE_ROLE and SOURCE_GRANTS (the README's), pgbench data and pgbench writes."""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path

from psycopg import sql

from catchup.engines.environment import child_environment
from catchup.engines.postgres.lsn import parse_lsn
from catchup.engines.postgres.server import (
    PostgresFiles,
    PostgresServer,
    find_binaries,
    give_to_server_user,
    select_value,
)
from catchup.engines.postgres.source import SOURCE_GRANTS, SOURCE_ROLE
from catchup.engines.postgres.verify import table_checksums
from catchup.engines.relay import free_port
from catchup.engines.workdir import kill_server
from catchup.files import write_private


class PostgresSandbox:
    engine = "postgres"

    def __init__(
        self, root: Path, major: int = 15, replica_of: PostgresSandbox | None = None
    ) -> None:
        self.root = root
        self.replica_of = replica_of
        self.port = free_port()
        self.server = PostgresServer(
            PostgresFiles(root),
            find_binaries(major),
            self.port,
            settings={
                "wal_level": "replica",
                "max_wal_senders": "10",
                "max_replication_slots": "10",
                "fsync": "off",  # a sandbox: speed over durability
                "synchronous_commit": "off",
                "shared_buffers": "64MB",
                "max_wal_size": "256MB",
                # What a catchup source should run with: full-page images after each
                # checkpoint otherwise dominate the WAL delta (the demo's pulled 102 MB
                # without it, 18.8 MB with it: docs/architecture.md).
                "wal_compression": "zstd",
            },
            listen=True,
            die_with_parent=False,
        )
        # A standby gets its roles, the catchup one included, from its primary.
        self.password_file = (replica_of or self).root / "catchup.password"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        fresh = not self.server.files.data_dir.exists()
        if fresh and self.replica_of:
            primary = self.replica_of.server
            # A streaming standby: pg_basebackup -R writes its primary_conninfo.
            self._create_data_dir(
                "pg_basebackup",
                *("-h", str(primary.files.sockets), "-p", str(primary.port), "-U", "postgres"),
                *("-X", "stream", "-R", "--no-sync", "-c", "fast"),
            )
        elif fresh:
            self._create_data_dir(
                "initdb", "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
            )
        self.server.write_config({})
        self.server.start()
        self.server.wait_ready()
        if fresh and not self.replica_of:
            password = secrets.token_urlsafe(18)
            write_private(self.password_file, password + "\n")
            with self.server.connect() as conn:
                conn.execute(sql.SQL(SOURCE_ROLE).format(sql.Literal(password)))
                for grant in SOURCE_GRANTS:
                    conn.execute(grant)

    def _create_data_dir(self, tool: str, *arguments: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        give_to_server_user(self.root)
        subprocess.run(
            [*self.server.tool(tool), *arguments, "-D", str(self.server.files.data_dir)],
            check=True,
            capture_output=True,
            env=child_environment(),
        )

    def wait_replicated(self, timeout: float = 60) -> None:
        assert self.replica_of is not None
        target = parse_lsn(self.replica_of.position())
        deadline = time.monotonic() + timeout
        while parse_lsn(self.position()) < target:
            if time.monotonic() > deadline:
                raise RuntimeError("the sandbox standby did not catch up with its primary")
            time.sleep(0.05)

    def pgbench(self, *args: str) -> None:
        subprocess.run(
            [
                *self.server.tool("pgbench"),
                "-h",
                str(self.server.files.sockets),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                *args,
                "postgres",
            ],
            check=True,
            capture_output=True,
            env=child_environment(),
        )

    def load_demo_data(self, size_mb: float) -> None:
        """pgbench tables: scale 1 is about 15 MB."""
        self.scale = max(1, round(size_mb / 15))
        self.pgbench("-i", "-s", str(self.scale), "-q")

    def apply_workload(self, fraction: float = 0.03) -> None:
        """pgbench's TPC-B-like transactions, about `fraction` of the account rows."""
        transactions = max(100, int(fraction * 100_000 * getattr(self, "scale", 1)))
        self.pgbench("-t", str(transactions // 2), "-c", "2", "-n")

    def quiesced_at(self, position: str) -> bool:
        """Nothing but catchup's own checkpoint record was written after `position`."""
        with self.server.connect() as conn:
            after = select_value(
                conn,
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND state = 'active' AND pid <> pg_backend_pid()",
            )
        current = parse_lsn(self.position())
        return after == 0 and current >= parse_lsn(position.partition("@")[0])

    @staticmethod
    def kill_leftover(root: Path) -> None:
        data = PostgresFiles(root).data_dir
        kill_server(data / "postmaster.pid", str(data))

    def position(self) -> str:
        function = "pg_last_wal_replay_lsn" if self.replica_of else "pg_current_wal_lsn"
        with self.server.connect() as conn:
            return str(select_value(conn, f"SELECT {function}()"))

    def checksums(self) -> dict[str, int | None]:
        with self.server.connect() as conn:
            return table_checksums(conn)

    def execute(self, sql: str, args: tuple[object, ...] = ()) -> None:
        with self.server.connect() as conn:
            conn.execute(sql, args)

    def stop(self) -> None:
        self.server.stop()

    def kill(self) -> None:
        self.server.kill()
