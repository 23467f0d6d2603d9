"""What catchup asks of a MariaDB source: its position, its binlog coverage,
its databases. Read-only, and only statements the documented GRANT allows.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pymysql

from catchup.config import Config, Shard
from catchup.engines import Finding, Verdict
from catchup.engines.mariadb.gtid import Gtid, Position, judge_coverage, parse_state
from catchup.engines.relay import CountingRelay
from catchup.engines.source import RelayedSource
from catchup.errors import SourceError

SYSTEM_DATABASES = ("mysql", "information_schema", "performance_schema", "sys")

# Privileges the catchup account needs on the source, and why.
REQUIRED_PRIVILEGES = {
    "SELECT": "read tables, routines and accounts for the bootstrap dump",
    "SHOW VIEW": "dump view definitions",
    "TRIGGER": "dump triggers",
    "EVENT": "dump events",
    "LOCK TABLES": "mariadb-dump's consistent snapshot setup",
    "BINLOG MONITOR": "read the GTID position and the binlog list",
    "REPLICATION SLAVE": "stream the binlog delta",
    "RELOAD": "start a new binlog file at each checkpoint (FLUSH BINARY LOGS)",
}
# The one statement that grants them: the README shows it (a unit test holds the two
# equal), the demo's sandboxes run it, and `catchup check` names what of it is missing.
SOURCE_GRANT = f"GRANT {', '.join(REQUIRED_PRIVILEGES)} ON *.* TO 'catchup'@'%'"


@dataclass(frozen=True)
class SourceFacts:
    version: str
    server_id: int
    log_bin: bool
    binlog_format: str
    log_slave_updates: bool
    gtid_strict_mode: bool


class MariaDBSession:
    """A connection to the shard's source, through the cycle's counting relay."""

    def __init__(self, shard: Shard, user: str, password: str | None, relay: CountingRelay) -> None:
        self.shard = shard
        self.user = user
        self.password = password
        self.relay = relay
        self.conn = self._connect()

    def _connect(self) -> pymysql.Connection:
        try:
            return pymysql.connect(
                host="127.0.0.1",
                port=self.relay.port,
                user=self.user,
                password=self.password or "",
                autocommit=True,
                connect_timeout=10,
                read_timeout=600,
                charset="utf8mb4",
            )
        except pymysql.err.MySQLError as exc:
            # The relay knows why the source could not be reached; the client only saw a
            # dropped connection.
            error = pymysql.err.OperationalError(2003, self.relay.last_error)
            reason = error if self.relay.last_error else exc
            raise SourceError(describe_source_error(self.shard, reason)) from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

    def query(self, sql: str, args: tuple[object, ...] | None = None) -> list[tuple[Any, ...]]:
        try:
            with self.conn.cursor() as cursor:
                cursor.execute(sql, args)
                return list(cursor.fetchall())
        except pymysql.err.MySQLError as exc:
            raise SourceError(describe_source_error(self.shard, exc)) from None

    def facts(self) -> SourceFacts:
        version, server_id, log_bin, binlog_format, log_slave_updates, strict = self.query(
            "SELECT @@version, @@server_id, @@log_bin, @@binlog_format, @@log_slave_updates, "
            "@@gtid_strict_mode"
        )[0]
        return SourceFacts(
            version,
            int(server_id),
            bool(log_bin),
            binlog_format,
            bool(log_slave_updates),
            bool(strict),
        )

    def checkpoint(self) -> Position:
        """The source's current GTID position: where this cycle's backup will stand."""
        return Position.parse(self.query("SELECT @@gtid_binlog_pos")[0][0])

    def rotate_binlog(self) -> None:
        """Start a new binlog file. A source finds a replica's GTID position by reading
        the binlog file that holds it from its first byte; rotating right before the
        checkpoint makes the next cycle read only its own delta, not a whole file of
        up to max_binlog_size (measured in docs/benchmarks.md)."""
        self.query("FLUSH BINARY LOGS")

    def binlog_history(self) -> list[Gtid]:
        """The last GTID of each server in each domain over the source's whole binlog history."""
        return parse_state(self.query("SELECT @@gtid_binlog_state")[0][0])

    def oldest_binlog_state(self) -> Position:
        """The GTID state just before the oldest binlog the source still has."""
        logs = self.query("SHOW BINARY LOGS")
        if not logs:
            raise SourceError(f"shard {self.shard.name}: source has no binary logs; enable log_bin")
        return Position.parse(self.query("SELECT BINLOG_GTID_POS(%s, 4)", (logs[0][0],))[0][0])

    def replica_server_ids(self) -> set[int]:
        """Server ids of the replicas connected now, if the account may ask: SHOW SLAVE
        HOSTS needs REPLICATION MASTER ADMIN, which the README's GRANT leaves out (the
        process list shows dump threads, but not their server ids)."""
        try:
            with self.conn.cursor() as cursor:
                cursor.execute("SHOW SLAVE HOSTS")
                return {int(row[0]) for row in cursor.fetchall()}
        except pymysql.err.MySQLError as exc:
            if exc.args and exc.args[0] in (1227, 1142):
                return set()
            raise SourceError(describe_source_error(self.shard, exc)) from None

    def event_statuses(self) -> dict[tuple[str, str], str]:
        """The status of every event, by (schema, name); the EVENT grant shows them all."""
        rows = self.query("SELECT event_schema, event_name, status FROM information_schema.events")
        return {(schema, name): status for schema, name, status in rows}

    def user_databases(self) -> list[str]:
        return [name for (name,) in self.query("SHOW DATABASES") if name not in SYSTEM_DATABASES]

    def data_bytes(self) -> int:
        """An estimate of the user data size, for progress display and planning."""
        placeholders = ",".join(["%s"] * len(SYSTEM_DATABASES))
        (size,) = self.query(
            "SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables "
            f"WHERE table_schema NOT IN ({placeholders})",
            SYSTEM_DATABASES,
        )[0]
        return int(size)

    def missing_privileges(self) -> list[str]:
        grants = " ".join(row[0].upper() for row in self.query("SHOW GRANTS"))
        if "ALL PRIVILEGES ON *.*" in grants:
            return []
        global_grants = [g for g in grants.split("GRANT ") if " ON *.* " in g]
        have = " ".join(global_grants)
        return [p for p in REQUIRED_PRIVILEGES if p not in have]


def describe_source_error(shard: Shard, exc: Exception) -> str:
    code = exc.args[0] if exc.args else None
    message = exc.args[1] if len(exc.args) > 1 else str(exc)
    where = f"shard {shard.name}: source {shard.endpoint}"
    if code in (2002, 2003, 2006, 2013):
        return f"{where} is unreachable ({message}); check the address and that the server runs"
    if code == 1045:
        return f"{where} refused the login ({message}); check credentials in the config"
    if code in (1142, 1227, 1044):
        return f"{where}: missing privilege ({message}); apply the GRANT from the README"
    return f"{where}: {message} (error {code})"


class MariaDBSource(RelayedSource[MariaDBSession]):
    """The shard's MariaDB source for one cycle: a session and the relay it goes through."""

    def __init__(self, session: MariaDBSession, relay: CountingRelay, password: str | None) -> None:
        super().__init__(session, relay)
        self.password = password
        # Read with the checkpoint, so the catch-up asks the source for nothing but the
        # binlog (a frozen source then shows as a stall): server ids a replica must not
        # use, and the events' status at the checkpoint.
        self.taken_server_ids: set[int] = set()
        self.event_statuses: dict[tuple[str, str], str] = {}

    def require_ready(self) -> None:
        if not self.session.facts().log_bin:
            raise self.not_ready(
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

    def release(self, position: str) -> None:
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


@contextlib.contextmanager
def open_source(config: Config, shard: Shard) -> Iterator[MariaDBSource]:
    user, password = config.login(shard)
    # mariadbd runs as catchup's own uid, like the dump and client tools.
    with CountingRelay(shard.host, shard.port, shard.socket, {os.geteuid()}) as relay:
        session = MariaDBSession(shard, user, password, relay)
        try:
            yield MariaDBSource(session, relay, password)
        finally:
            session.close()
