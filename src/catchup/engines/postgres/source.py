"""What catchup asks of a PostgreSQL source, through the cycle's counting relay.

The catchup role needs LOGIN REPLICATION, pg_checkpoint, pg_read_all_stats and
EXECUTE on pg_logical_emit_message (README), and a `host replication` line in
pg_hba.conf.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import psycopg

from catchup.config import Shard
from catchup.engines.postgres.lsn import SlotState, parse_lsn
from catchup.engines.relay import CountingRelay
from catchup.errors import SourceError


def slot_name(shard: Shard) -> str:
    """One physical slot per shard's backup chain."""
    return "catchup_" + re.sub(r"[^a-z0-9_]", "_", f"{shard.keyspace}_{shard.shard}".lower())


@dataclass(frozen=True)
class Facts:
    version: str
    major: int
    timeline: int
    in_recovery: bool
    wal_level: str


class PostgresSession:
    def __init__(self, shard: Shard, user: str, password: str | None, relay: CountingRelay) -> None:
        self.shard, self.user, self.password, self.relay = shard, user, password, relay
        self.slot = slot_name(shard)
        try:
            self.conn = psycopg.connect(
                host="127.0.0.1",
                port=relay.port,
                user=user,
                password=password or "",
                dbname="postgres",
                autocommit=True,
                connect_timeout=10,
            )
        except psycopg.OperationalError as exc:
            raise SourceError(self._describe(exc)) from None
        # Asked once: every position query depends on it.
        self.standby = bool(self.query("SELECT pg_is_in_recovery()")[0][0])

    def _describe(self, exc: Exception) -> str:
        where = f"shard {self.shard.name}: source {self.shard.endpoint}"
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        if self.relay.last_error:
            return f"{where} is unreachable ({self.relay.last_error}); check the address"
        if "password authentication failed" in text or "no pg_hba.conf entry" in text:
            return f"{where} refused the login ({text}); check credentials and pg_hba.conf"
        if "permission denied" in text:
            return f"{where}: missing privilege ({text}); apply the GRANTs from the README"
        return f"{where}: {text}"

    def query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple]:
        try:
            with self.conn.cursor() as cursor:
                cursor.execute(sql, args)  # type: ignore[arg-type]
                return list(cursor.fetchall()) if cursor.description else []
        except psycopg.Error as exc:
            raise SourceError(self._describe(exc)) from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()

    def facts(self) -> Facts:
        version, number, in_recovery, wal_level = self.query(
            "SELECT version(), current_setting('server_version_num')::int, pg_is_in_recovery(), "
            "current_setting('wal_level')"
        )[0]
        timeline = self.query("SELECT timeline_id FROM pg_control_checkpoint()")[0][0]
        return Facts(version.split(" on ")[0], number // 10000, timeline, in_recovery, wal_level)

    def identity(self) -> str:
        """A promoted standby keeps the cluster's system identifier and starts a new
        timeline; another cluster has another identifier."""
        (system_identifier,) = self.query("SELECT system_identifier FROM pg_control_system()")[0]
        return f"system_identifier {system_identifier} timeline {self.facts().timeline}"

    def checkpoint(self) -> int:
        """CHECKPOINT, then the position T. On a primary a record after T is emitted, so
        a standby replaying to T can stop even on an idle source; a standby source
        cannot write, so its T is its replay position (see catch_up)."""
        self.query("CHECKPOINT")
        lsn = self.current_lsn()
        if not self.standby:
            self.query("SELECT pg_logical_emit_message(false, 'catchup', 'checkpoint')")
        return lsn

    def current_lsn(self) -> int:
        function = "pg_last_wal_replay_lsn" if self.standby else "pg_current_wal_lsn"
        return parse_lsn(str(self.query(f"SELECT {function}()")[0][0]))

    def slot_state(self) -> SlotState:
        rows = self.query(
            "SELECT wal_status, restart_lsn FROM pg_replication_slots WHERE slot_name = %s",
            (self.slot,),
        )
        if not rows:
            return SlotState(False)
        status, restart = rows[0]
        return SlotState(True, status, parse_lsn(str(restart)) if restart else None)

    def create_slot(self) -> None:
        """A fresh slot, reserving WAL from now: created before the base backup starts."""
        if self.slot_state().exists:
            self.query("SELECT pg_drop_replication_slot(%s)", (self.slot,))
        self.query("SELECT pg_create_physical_replication_slot(%s, true)", (self.slot,))

    def advance_slot(self, lsn: str) -> None:
        """Release WAL up to the newest committed backup's position."""
        self.query("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.slot, lsn))

    def missing_privileges(self) -> list[str]:
        """What the README's GRANTs give the catchup role, checked one by one."""
        replication, checkpoint, stats, emit = self.query(
            "SELECT rolreplication, pg_has_role(current_user, 'pg_checkpoint', 'MEMBER'), "
            "pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER'), "
            "has_function_privilege('pg_logical_emit_message(boolean, text, text)', 'EXECUTE') "
            "FROM pg_roles WHERE rolname = current_user"
        )[0]
        wanted = {
            "REPLICATION": replication,
            "pg_checkpoint": checkpoint,
            "pg_read_all_stats": stats,
            "EXECUTE on pg_logical_emit_message": emit,
        }
        return [name for name, granted in wanted.items() if not granted]

    def standby_requirements(self) -> dict[str, str]:
        """Settings a hot standby must match or exceed, or recovery aborts."""
        names = (
            "max_connections",
            "max_worker_processes",
            "max_wal_senders",
            "max_prepared_transactions",
            "max_locks_per_transaction",
        )
        sql = "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)"
        rows = self.query(sql, (list(names),))
        return dict(rows)

    def database_bytes(self) -> int:
        return int(
            self.query(
                "SELECT COALESCE(sum(pg_database_size(oid)), 0) FROM pg_database WHERE datallowconn"
            )[0][0]
        )
