"""What catchup asks of a PostgreSQL source, through the cycle's counting relay.

The catchup role needs LOGIN REPLICATION, pg_checkpoint, pg_read_all_stats and
EXECUTE on pg_logical_emit_message (README), and a `host replication` line in
pg_hba.conf.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
from dataclasses import dataclass

import psycopg

from catchup.config import Shard
from catchup.engines.postgres.lsn import SlotState, parse_lsn
from catchup.engines.relay import CountingRelay
from catchup.errors import SourceError

SLOT_NAME_LIMIT = 63  # NAMEDATALEN - 1


def legacy_slot_name(shard: Shard) -> str:
    """The one slot per shard of catchup before chain slots: not injective (`a_b/c` and
    `a/b_c` share it). Positions without a slot name still use it."""
    return "catchup_" + re.sub(r"[^a-z0-9_]", "_", f"{shard.keyspace}_{shard.shard}".lower())


def shard_slot_prefix(shard: Shard) -> str:
    """What every chain slot of `shard` starts with: a readable part, then a hash of the
    exact keyspace and shard, so that no two shards share a prefix."""
    readable = re.sub(r"[^a-z0-9]+", "_", f"{shard.keyspace}_{shard.shard}".lower()).strip("_")
    digest = hashlib.sha256(f"{shard.keyspace}\0{shard.shard}".encode()).hexdigest()[:10]
    return f"catchup_{readable[:32]}_{digest}_"


def new_chain_slot_name(shard: Shard) -> str:
    """A slot for a new backup chain: the old chain's slot stays until this one commits."""
    name = shard_slot_prefix(shard) + secrets.token_hex(4)
    assert len(name) <= SLOT_NAME_LIMIT, name
    return name


def is_chain_slot_of(shard: Shard, name: str) -> bool:
    return re.fullmatch(re.escape(shard_slot_prefix(shard)) + "[0-9a-f]{8}", name) is not None


def conninfo_value(value: str) -> str:
    """A libpq conninfo value: single-quoted, with `\\` and `'` backslash-escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


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
        # The slot of the chain this cycle extends: the parent backup's (see judge), or
        # the new chain's once a bootstrap created it.
        self.slot = legacy_slot_name(shard)
        self.created_slot: str | None = None
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

    def slot_state(self, slot: str | None = None) -> SlotState:
        rows = self.query(
            "SELECT wal_status, restart_lsn FROM pg_replication_slots WHERE slot_name = %s",
            (slot or self.slot,),
        )
        if not rows:
            return SlotState(False)
        status, restart = rows[0]
        return SlotState(True, status, parse_lsn(str(restart)) if restart else None)

    def create_slot(self) -> str:
        """A fresh slot for a new chain, reserving WAL from now: created before the base
        backup starts. The previous chain's slot is left alone until this chain commits."""
        name = new_chain_slot_name(self.shard)
        self.query("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
        self.slot = self.created_slot = name
        return name

    def shard_slots(self) -> list[str]:
        """Every slot on the source that belongs to this shard, the legacy name included."""
        rows = self.query("SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'physical'")
        legacy = legacy_slot_name(self.shard)
        return [name for (name,) in rows if name == legacy or is_chain_slot_of(self.shard, name)]

    def drop_slot(self, name: str) -> None:
        self.query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s AND NOT active",
            (name,),
        )

    def advance_slot(self, lsn: str, slot: str) -> None:
        """Release WAL up to the newest committed backup's position."""
        self.query("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, lsn))

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

    def tablespaces(self) -> list[tuple[str, str]]:
        """User tablespaces (oid, name): pg_default and pg_global live in the data dir."""
        rows = self.query(
            "SELECT oid::text, spcname FROM pg_tablespace "
            "WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid"
        )
        return [(oid, name) for oid, name in rows]
