"""What catchup asks of a MySQL source: its GTID set, what its binary logs still
hold, its databases, whether it can be cloned. Read-only, and only statements the
documented GRANT allows. The session itself (a PyMySQL connection through the
cycle's relay, and its error messages) is MariaDB's: one protocol family.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from catchup.config import Config, Shard
from catchup.engines import Finding, Verdict
from catchup.engines.mariadb.source import SYSTEM_DATABASES, MariaDBSession
from catchup.engines.mysql.gtid import GtidSet, judge_coverage
from catchup.engines.relay import CountingRelay
from catchup.engines.source import RelayedSource

# Privileges the catchup account needs on the source, and why.
REQUIRED_PRIVILEGES = {
    "SELECT": "read tables, routines and accounts for the bootstrap dump",
    "SHOW VIEW": "dump view definitions",
    "TRIGGER": "dump triggers",
    "EVENT": "dump events",
    "RELOAD": "a new binary log at each checkpoint (FLUSH BINARY LOGS); the dump's GTID set",
    "REPLICATION CLIENT": "read the binary log list",
    "REPLICATION SLAVE": "stream the binary log delta",
    "BACKUP_ADMIN": "CLONE INSTANCE as the donor (the clone bootstrap)",
}
# The one statement that grants them: the README and docs show it, the sandboxes run it,
# and `catchup check` names what of it is missing.
SOURCE_GRANT = f"GRANT {', '.join(REQUIRED_PRIVILEGES)} ON *.* TO 'catchup'@'%'"


@dataclass(frozen=True)
class MySQLSourceFacts:
    version: str
    server_id: int
    server_uuid: str
    log_bin: bool
    gtid_mode: str
    log_replica_updates: bool
    binlog_format: str
    clone_plugin: bool
    tls: bool


class MySQLSession(MariaDBSession):
    """A connection to the shard's MySQL source, through the cycle's counting relay."""

    def facts(self) -> MySQLSourceFacts:  # type: ignore[override]
        version, server_id, uuid, log_bin, gtid_mode, fmt = self.query(
            "SELECT @@version, @@server_id, @@server_uuid, @@log_bin, @@gtid_mode, @@binlog_format"
        )[0]
        # log_replica_updates before 8.0.26 was log_slave_updates, and 8.4 dropped that name.
        updates = dict(
            self.query(
                "SHOW GLOBAL VARIABLES WHERE Variable_name IN "
                "('log_replica_updates', 'log_slave_updates')"
            )
        )
        replica_updates = updates.get("log_replica_updates", updates.get("log_slave_updates"))
        clone = self.query(
            "SELECT COUNT(*) FROM information_schema.plugins "
            "WHERE plugin_name = 'clone' AND plugin_status = 'ACTIVE'"
        )[0][0]
        # A certificate loaded and a TLS version enabled: replication can use TLS (MySQL
        # 8.0.16+ says so; an older server counts as without).
        tls_status = dict(
            self.query(
                "SHOW GLOBAL STATUS WHERE Variable_name IN ('Current_tls_cert', "
                "'Current_tls_version')"
            )
        )
        return MySQLSourceFacts(
            version=str(version),
            server_id=int(server_id),
            server_uuid=str(uuid),
            log_bin=bool(log_bin),
            gtid_mode=str(gtid_mode),
            log_replica_updates=replica_updates == "ON",
            binlog_format=str(fmt),
            clone_plugin=bool(clone),
            tls=bool(tls_status.get("Current_tls_cert"))
            and bool(tls_status.get("Current_tls_version")),
        )

    def executed(self) -> GtidSet:
        return GtidSet.parse(self.query("SELECT @@GLOBAL.gtid_executed")[0][0])

    def purged(self) -> GtidSet:
        return GtidSet.parse(self.query("SELECT @@GLOBAL.gtid_purged")[0][0])

    def grants(self) -> str:
        return " ".join(row[0].upper() for row in self.query("SHOW GRANTS"))

    def missing_privileges(self) -> list[str]:
        grants = self.grants()
        global_grants = " ".join(g for g in grants.split("GRANT ") if " ON *.* " in g)
        if "ALL PRIVILEGES ON *.*" in grants:
            return [p for p in REQUIRED_PRIVILEGES if "_" in p and p not in global_grants]
        return [p for p in REQUIRED_PRIVILEGES if p not in global_grants]


class MySQLSource(RelayedSource[MySQLSession]):
    """The shard's MySQL source for one cycle: a session and the relay it goes through."""

    def __init__(self, session: MySQLSession, relay: CountingRelay, password: str | None) -> None:
        super().__init__(session, relay)
        self.password = password
        # Read with the checkpoint, so the catch-up asks the source for nothing but the log
        # (a frozen source then shows as a stall): the events' status, and whether the
        # replication channel can use TLS.
        self.event_statuses: dict[tuple[str, str], str] = {}
        self.tls = False

    def require_ready(self) -> None:
        facts = self.session.facts()
        if not facts.log_bin:
            raise self.not_ready(
                "log_bin off, so it keeps no binary log to catch up from; enable log_bin "
                "(a server_id too), restart it, and run again"
            )
        if facts.gtid_mode != "ON":
            raise self.not_ready(
                f"gtid_mode={facts.gtid_mode}; catchup replicates by GTID: set "
                "enforce_gtid_consistency=ON and gtid_mode=ON on the source (step by step, as "
                "MySQL's manual describes for a running server)"
            )

    def identity(self) -> str:
        """Every MySQL server has its own server_uuid, so a failover to a replica, or a
        replacement server, changes it."""
        return f"server_uuid {self.session.facts().server_uuid}"

    def checkpoint(self) -> str:
        # A new binary log: the source finds a replica's first missing GTID by reading the
        # file that holds it from its start, so the next cycle reads only its own delta.
        self.session.query("FLUSH BINARY LOGS")
        position = self.session.executed()
        self.tls = self.session.facts().tls
        self.event_statuses = {
            (schema, name): status
            for schema, name, status in self.session.query(
                "SELECT event_schema, event_name, status FROM information_schema.events"
            )
        }
        return str(position)

    def judge(self, backup_position: str) -> Verdict:
        return judge_coverage(
            GtidSet.parse(backup_position), self.session.executed(), self.session.purged()
        )

    def estimated_data_bytes(self) -> int:
        return self.session.data_bytes()

    def clone_refusal(self, own_version: str) -> str | None:
        """Why CLONE INSTANCE cannot copy this source into a server of `own_version`, or None."""
        facts = self.session.facts()
        if not facts.clone_plugin:
            return (
                "the source has no active clone plugin "
                "(INSTALL PLUGIN clone SONAME 'mysql_clone.so' adds it)"
            )
        if "BACKUP_ADMIN" in self.session.missing_privileges():
            return "the catchup account lacks BACKUP_ADMIN"
        if self.session.query(
            "SELECT COUNT(*) FROM performance_schema.replication_connection_configuration"
        )[0][0]:
            # A replica's channel settings, its stored password included, live in InnoDB
            # tables that a clone may copy; deleted afterwards, the bytes would stay in
            # the backup's pages.
            return "the source is itself a replica, and a clone may copy its stored password"
        if facts.version.split("-")[0] != own_version:
            return f"the source runs MySQL {facts.version} and the ephemeral server {own_version}"
        return None

    def release(self, position: str) -> None:
        """Nothing to release: binary log retention is the source's own setting."""

    def check(self) -> list[Finding]:
        facts = self.session.facts()
        missing = self.session.missing_privileges()
        findings = [
            Finding("connect", True, f"MySQL {facts.version}, server_uuid {facts.server_uuid}"),
            Finding(
                "binlog",
                facts.log_bin,
                f"log_bin on, binlog_format {facts.binlog_format}"
                if facts.log_bin
                else "log_bin is off; enable it (and a server_id) to replicate",
            ),
            Finding(
                "gtid mode",
                facts.gtid_mode == "ON",
                "gtid_mode ON"
                if facts.gtid_mode == "ON"
                else f"gtid_mode is {facts.gtid_mode}; set it ON (with enforce_gtid_consistency)",
            ),
            Finding(
                "privileges",
                not missing,
                "all required privileges granted"
                if not missing
                else f"missing {', '.join(missing)}; apply the GRANT from the README",
            ),
            Finding(
                "bootstrap",
                True,
                "CLONE INSTANCE possible (clone plugin active)"
                if facts.clone_plugin
                else "no clone plugin: the first backup is a logical dump (mysqldump)",
            ),
        ]
        if self.session.shard.role == "replica":
            findings.append(
                Finding(
                    "replica source",
                    facts.log_replica_updates,
                    "log_replica_updates on: replicated transactions reach its binary log"
                    if facts.log_replica_updates
                    else "log_replica_updates is off, so this replica's binary log lacks what "
                    "it replicates; set log_replica_updates=ON or back up from the primary",
                )
            )
        if facts.log_bin:
            purged = self.session.purged()
            findings.append(
                Finding("binlogs", True, f"purged from the binary logs: {purged or 'nothing'}")
            )
        return findings


__all__ = ["SOURCE_GRANT", "SYSTEM_DATABASES", "MySQLSession", "MySQLSource", "open_source"]


@contextlib.contextmanager
def open_source(config: Config, shard: Shard) -> Iterator[MySQLSource]:
    user, password = config.login(shard)
    # mysqld runs as catchup's own uid, like the dump and client tools.
    with CountingRelay(shard.host, shard.port, shard.socket, {os.geteuid()}) as relay:
        session = MySQLSession(shard, user, password, relay)
        try:
            yield MySQLSource(session, relay, password)
        finally:
            session.close()
