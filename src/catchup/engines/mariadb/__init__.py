"""The MariaDB engine: GTID positions, binlog replication, mariadbd instances."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from catchup.cancel import CancelToken
from catchup.config import Config, MariaDBSettings, Shard
from catchup.engines import Finding, Progress, Source, Verdict
from catchup.engines.mariadb import bootstrap, replication
from catchup.engines.mariadb.gtid import Position, judge_coverage
from catchup.engines.mariadb.instance import EphemeralInstance, provision, random_server_id
from catchup.engines.mariadb.server import ADMIN_USER, MariaDBServer
from catchup.engines.mariadb.source import SourceSession, open_source
from catchup.engines.relay import CountingRelay
from catchup.errors import SourceError

# Files of a stopped data dir that must not travel with a backup: replication
# state pointing at the source (with its password) and runtime leftovers.
NOT_ARCHIVED = re.compile(
    r"^(relay-bin\.\d+|relay-bin\.index|master.*\.info|relay-log.*\.info|multi-master\.info"
    r"|.*\.pid|.*\.sock)$"
)
MIB = 1024 * 1024


class MariaDBSource:
    def __init__(self, session: SourceSession, relay: CountingRelay, password: str | None) -> None:
        self.session = session
        self.relay = relay
        self.password = password
        # Read with the checkpoint, so the catch-up asks the source for nothing but the
        # binlog (a frozen source then shows as a stall): server ids a replica must not
        # use, and the events' status at the checkpoint.
        self.taken_server_ids: set[int] = set()
        self.event_statuses: dict[tuple[str, str], str] = {}

    @property
    def bytes_sent(self) -> int:
        return self.relay.bytes_from_source

    def server_version(self) -> str:
        return self.session.facts().version

    def require_ready(self) -> None:
        if not self.session.facts().log_bin:
            raise SourceError(
                f"shard {self.session.shard.name}: source {self.session.shard.endpoint} has "
                "log_bin off, so it keeps no binlog to catch up from; set log_bin=ON (and a "
                "server_id) on the source, restart it, and run again"
            )

    def identity(self) -> str:
        """Every server of a replication topology has its own server_id, so a failover to a
        replica, or a replacement server, changes it."""
        return f"server_id {self.session.facts().server_id}"

    def checkpoint(self) -> str:
        self.session.rotate_binlog()
        position = self.session.checkpoint()
        self.event_statuses = self.session.event_statuses()
        self.taken_server_ids = self.known_server_ids()
        return str(position)

    def judge(self, backup_position: str) -> Verdict:
        return judge_coverage(
            Position.parse(backup_position),
            self.session.checkpoint(),
            self.session.oldest_binlog_state(),
            self.session.binlog_history(),
        )

    def estimated_data_bytes(self) -> int:
        return self.session.data_bytes()

    def known_server_ids(self) -> set[int]:
        """Server ids a replica of this source must not use: its own, every server's in
        its binlog history, and its connected replicas' when the account may see them."""
        history = {gtid.server for gtid in self.session.binlog_history()}
        return {self.session.facts().server_id, *history, *self.session.replica_server_ids()}

    def committed(self, position: str) -> None:
        """Nothing to release: binlog retention is the source's own setting."""

    def check(self) -> list[Finding]:
        facts = self.session.facts()
        missing = self.session.missing_privileges()
        findings = [
            Finding("connect", True, f"MariaDB {facts.version}, server_id {facts.server_id}"),
            Finding(
                "binlog",
                facts.log_bin,
                f"log_bin on, binlog_format {facts.binlog_format}"
                if facts.log_bin
                else "log_bin is off; enable it (log_bin=ON, a server_id) to replicate",
            ),
            Finding(
                "privileges",
                not missing,
                "all required privileges granted"
                if not missing
                else f"missing {', '.join(missing)}; apply the GRANT from the README",
            ),
        ]
        findings.append(
            Finding(
                "gtid strict mode",
                facts.gtid_strict_mode,
                "gtid_strict_mode on: a replica refuses a transaction out of GTID order"
                if facts.gtid_strict_mode
                else "gtid_strict_mode is off: a replica can take a direct write, and after "
                "a failover to it a backup chain silently lacks or gains transactions; set "
                "gtid_strict_mode=ON on the source and its replicas",
            )
        )
        if self.session.shard.role == "replica":
            findings.append(
                Finding(
                    "replica source",
                    facts.log_slave_updates,
                    "log_slave_updates on: replicated transactions reach its binlog"
                    if facts.log_slave_updates
                    else "log_slave_updates is off, so this replica's binlog lacks what it "
                    "replicates; set log_slave_updates=ON or back up from the primary",
                )
            )
        if facts.log_bin:
            try:
                oldest = self.session.oldest_binlog_state()
                findings.append(
                    Finding("binlogs", True, f"oldest binlog starts after {oldest or 'nothing'}")
                )
            except SourceError as exc:
                findings.append(Finding("binlogs", False, str(exc)))
        return findings

    def replication_endpoint(self) -> replication.ReplicationSource:
        return replication.ReplicationSource(
            "127.0.0.1", self.relay.port, self.session.user, self.password or ""
        )


class MariaDBInstance:
    def __init__(
        self, ephemeral: EphemeralInstance, settings: MariaDBSettings, stall_timeout: float
    ) -> None:
        self.ephemeral = ephemeral
        self.settings = settings
        self.stall_timeout = stall_timeout

    @property
    def server(self) -> MariaDBServer:
        return self.ephemeral.server

    @property
    def data_dir(self) -> Path:
        return self.ephemeral.data_dir

    def bootstrap(self, source: Source, cancel: CancelToken, progress: Progress) -> None:
        assert isinstance(source, MariaDBSource)
        self.server.install()
        self.server.start(cancel=cancel)
        bootstrap.drop_local_accounts(self.server)
        estimate = max(1, source.estimated_data_bytes())
        bootstrap.load_dump(
            self.server,
            source.relay.port,
            source.session.user,
            source.password,
            source.session.user_databases(),
            cancel,
            lambda: progress(min(source.bytes_sent, estimate), estimate),
        )

    def start(self, cancel: CancelToken) -> None:
        self.server.start(cancel=cancel)

    def open_for_checks(self, position: str, cancel: CancelToken) -> None:
        """A restored backup already stands at its position (gtid_slave_pos): just start it."""
        self.server.start(cancel=cancel)

    def catch_up(
        self, source: Source, checkpoint: str, cancel: CancelToken, progress: Progress
    ) -> str:
        assert isinstance(source, MariaDBSource)
        if self.server.server_id in source.taken_server_ids:
            self.server.set_server_id(random_server_id(source.taken_server_ids))
        reached = replication.catch_up(
            self.server,
            source.replication_endpoint(),
            Position.parse(checkpoint),
            self.stall_timeout,
            cancel,
            progress,
        )
        replication.restore_event_status(self.server, source.event_statuses)
        return str(reached)

    def stop_for_archive(self) -> None:
        replication.forget_source(self.server)
        archive_size = self.settings.archive_redo_log_mb * MIB
        with self.server.connect() as conn, conn.cursor() as cursor:
            # With a clean, fast shutdown the next restore starts without crash recovery.
            cursor.execute("SET GLOBAL innodb_fast_shutdown = 1")
            cursor.execute("SELECT @@innodb_log_file_size")
            resize = cursor.fetchone()[0] != archive_size
        if resize:
            # A small redo log makes a smaller archive. InnoDB resizes it at startup in
            # about 0.2 s; online (SET GLOBAL innodb_log_file_size) it waits 1-2 s for
            # a checkpoint, which was most of a zero-delta cycle.
            self.server.stop()
            self.server.options.append(f"--innodb-log-file-size={archive_size}")  # last wins
            self.server.start()
        with self.server.connect() as conn, conn.cursor() as cursor:
            cursor.execute("DROP USER IF EXISTS %s@'localhost'", (ADMIN_USER,))
        self.server.stop()

    def server_version(self) -> str:
        with self.server.connect() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT @@version")
            return cursor.fetchone()[0]

    def is_archived(self, relative_path: str) -> bool:
        return "/" in relative_path or not NOT_ARCHIVED.match(relative_path)

    def position(self) -> str:
        with self.server.connect() as conn:
            return str(replication.slave_position(conn))

    def verify(self, expected_position: str) -> list[Finding]:
        reached = self.position()
        findings = [
            Finding(
                "position",
                Position.parse(reached) == Position.parse(expected_position),
                f"@@gtid_slave_pos {reached or '(empty)'}; "
                f"manifest {expected_position or '(empty)'}",
            )
        ]
        with self.server.connect() as conn, conn.cursor() as cursor:
            for table in _all_tables(cursor):
                cursor.execute(f"CHECK TABLE {table}")
                results = cursor.fetchall()
                ok = not any(r[2] == "error" or r[3] == "Corrupt" for r in results)
                findings.append(
                    Finding(f"CHECK TABLE {table}", ok, "; ".join(r[3] for r in results))
                )
        return findings

    def table_checksums(self) -> dict[str, int | None]:
        with self.server.connect() as conn, conn.cursor() as cursor:
            return table_checksums(cursor)


def _all_tables(cursor: object) -> list[str]:
    cursor.execute(  # type: ignore[attr-defined]
        "SELECT CONCAT('`', table_schema, '`.`', table_name, '`') FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' AND table_schema NOT IN "
        "('information_schema', 'performance_schema') ORDER BY 1"
    )
    return [row[0] for row in cursor.fetchall()]  # type: ignore[attr-defined]


def table_checksums(cursor: object, include_system: bool = False) -> dict[str, int | None]:
    """CHECKSUM TABLE of every user table (and the system ones if asked)."""
    checksums: dict[str, int | None] = {}
    for table in _all_tables(cursor):
        if not include_system and table.startswith(("`mysql`.", "`sys`.")):
            continue
        cursor.execute(f"CHECKSUM TABLE {table}")  # type: ignore[attr-defined]
        checksums[table] = cursor.fetchone()[1]  # type: ignore[attr-defined]
    return checksums


class MariaDBEngine:
    name = "mariadb"

    @contextlib.contextmanager
    def open_source(self, config: Config, shard: Shard) -> Iterator[MariaDBSource]:
        user, password = config.login(shard)
        with (
            # mariadbd runs as catchup's own uid, like the dump and client tools.
            CountingRelay(shard.host, shard.port, shard.socket, {os.geteuid()}) as relay,
            open_source(shard, user, password, relay) as session,
        ):
            yield MariaDBSource(session, relay, password)

    def prepare_restored(self, data_dir: Path, position: str) -> str:
        """Nothing to add: gtid_slave_pos is in the data dir's mysql.gtid_slave_pos table."""
        return (
            f"Start it with: mariadbd --datadir={data_dir} (chown -R mysql: it first when the "
            "server runs as mysql). To attach it as a replica: CHANGE MASTER TO …, "
            f"MASTER_USE_GTID=slave_pos (gtid_slave_pos is {position})."
        )

    @contextlib.contextmanager
    def provision(
        self, config: Config, shard: Shard, server_version: str = ""
    ) -> Iterator[MariaDBInstance]:
        label = f"{shard.keyspace}.{shard.shard}"
        with provision(config.work_dir, label, config.mariadb) as ephemeral:
            yield MariaDBInstance(ephemeral, config.mariadb, config.stall_timeout_seconds)
