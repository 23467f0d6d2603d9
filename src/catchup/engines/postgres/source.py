"""What catchup asks of a PostgreSQL source, through the cycle's counting relay.

The catchup role needs LOGIN REPLICATION, pg_checkpoint, pg_read_all_stats and
EXECUTE on pg_logical_emit_message (SOURCE_ROLE and SOURCE_GRANTS), and a
`host replication` line in pg_hba.conf.

Positions are `LSN@timeline:slot`: each chain has its own slot, named in every
position of the chain, so a re-bootstrap that fails leaves the previous chain's
slot, and thus its newest backup, intact. A committed backup releases the slots
of older chains. Positions without `:slot` (older backups) use the legacy name.
The archiver's slot (`catchup_archive_…`) is no chain's: it holds the WAL from
about the archive's end, so a chain whose own slot is gone can still be caught
up from the archive; the cycle doing so copies it into a new chain slot.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from catchup.config import Config, PostgresSettings, Shard
from catchup.engines import Finding, Verdict
from catchup.engines.postgres.lsn import (
    SlotState,
    format_lsn,
    judge_with_slots,
    make_position,
    parse_lsn,
    position_slot,
    split_position,
)
from catchup.engines.postgres.server import client_uids
from catchup.engines.relay import CountingRelay
from catchup.engines.source import RelayedSource
from catchup.errors import SourceError

SLOT_NAME_LIMIT = 63  # NAMEDATALEN - 1

# The role catchup logs in as, and what it must be granted: the README shows these
# statements (a unit test holds them equal) and the demo's sandboxes run them.
SOURCE_ROLE = "CREATE ROLE catchup LOGIN REPLICATION PASSWORD {}"
SOURCE_GRANTS = (
    "GRANT pg_checkpoint, pg_read_all_stats TO catchup",
    "GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO catchup",
)


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


def archive_slot_name(shard: Shard) -> str:
    """The archiver's slot: the shard's chain-slot prefix, reordered so no chain-slot
    pattern (prefix + 8 hex digits) matches it and a cycle never drops it."""
    return "catchup_archive_" + shard_slot_prefix(shard).removeprefix("catchup_").rstrip("_")


def is_chain_slot_of(shard: Shard, name: str) -> bool:
    return re.fullmatch(re.escape(shard_slot_prefix(shard)) + "[0-9a-f]{8}", name) is not None


def conninfo_value(value: str) -> str:
    """A libpq conninfo value: single-quoted, with `\\` and `'` backslash-escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pgpass_line(password: str) -> str:
    """A passfile line giving `password` for any host, port, database and user."""
    return "*:*:*:*:" + password.replace("\\", "\\\\").replace(":", "\\:") + "\n"


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
        # Another slot of the shard (the archiver's) that holds the WAL the chain's own
        # slot no longer does, as the last judge found: see PostgresSource.take_over.
        self.borrowed: str | None = None
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

    def query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            with self.conn.cursor() as cursor:
                cursor.execute(sql, args)
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
        if self.created_slot:  # one taken over for a catch-up: this cycle bootstraps
            self.drop_slot(self.created_slot)
        name = new_chain_slot_name(self.shard)
        self.query("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
        self.slot = self.created_slot = name
        return name

    def shard_slots(self) -> list[str]:
        """Every slot on the source that belongs to this shard, the legacy name included."""
        rows = self.query("SELECT slot_name FROM pg_replication_slots WHERE slot_type = 'physical'")
        legacy = legacy_slot_name(self.shard)
        return [name for (name,) in rows if name == legacy or is_chain_slot_of(self.shard, name)]

    def copy_slot(self, source_slot: str) -> str:
        """A new chain's slot holding the WAL `source_slot` holds now (its restart_lsn),
        which then stays put until a committed backup advances it."""
        name = new_chain_slot_name(self.shard)
        self.query("SELECT pg_copy_physical_replication_slot(%s, %s)", (source_slot, name))
        self.slot = self.created_slot = name
        return name

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


class PostgresSource(RelayedSource[PostgresSession]):
    """The shard's PostgreSQL source for one cycle: a session and the relay it goes through."""

    def __init__(self, session: PostgresSession, relay: CountingRelay, settings: PostgresSettings):
        super().__init__(session, relay)
        self.settings = settings
        self.released = False  # release() was called: a backup of this cycle is listed

    def require_ready(self) -> None:
        if self.session.facts().wal_level == "minimal":
            raise self.not_ready(
                "wal_level = minimal, which cannot be replicated; set it to replica and restart"
            )

    def identity(self) -> str:
        return self.session.identity()

    def checkpoint(self) -> str:
        timeline = self.session.facts().timeline
        return make_position(self.session.checkpoint(), timeline, self.session.slot)

    def judge(self, backup_position: str) -> Verdict:
        """Whether the source holds its WAL from `backup_position` on: by the chain's
        slot (named in the position; a position without one, such as the log archive's
        end, keeps the slot of the position judged before), else by any other slot of the
        shard that still reserves the segment holding the position (the archiver's
        slot, whose WAL a cycle then takes over: see take_over)."""
        lsn, timeline = split_position(backup_position)
        self.session.slot = position_slot(backup_position) or self.session.slot
        others = {
            name: self.session.slot_state(name)
            for name in [*self.session.shard_slots(), archive_slot_name(self.session.shard)]
            if name != self.session.slot
        }
        verdict, self.session.borrowed = judge_with_slots(
            lsn,
            timeline,
            self.session.current_lsn(),
            self.session.facts().timeline,
            (self.session.slot, self.session.slot_state()),
            {name: state for name, state in others.items() if state.exists},
            self.session.database_bytes(),
            self.settings.rebootstrap_wal_ratio,
        )
        return verdict

    def take_over(self) -> None:
        """The cycle catches up on WAL that only another slot of the shard holds (its
        chain's slot was dropped or invalidated): a new chain slot copied from that one
        holds it from now on, and this cycle's backup names it, so the next cycle no
        longer depends on the other slot. Dropped again if the cycle fails; a committed
        backup drops the old chain's slot (release)."""
        if self.session.borrowed is not None and self.session.created_slot is None:
            self.session.copy_slot(self.session.borrowed)

    def estimated_data_bytes(self) -> int:
        return self.session.database_bytes()

    def release(self, position: str) -> None:
        """The new backup is committed: the source may now recycle WAL before it, and
        the slots of older chains (a re-bootstrap, a failed one's leftovers) may go."""
        self.released = True
        slot = position_slot(position) or legacy_slot_name(self.session.shard)
        self.session.advance_slot(format_lsn(split_position(position)[0]), slot)
        for other in self.session.shard_slots():
            if other != slot:
                self.session.drop_slot(other)

    def abandon_new_slot(self) -> None:
        """A cycle that created a chain's slot failed before committing: drop the slot,
        or it would hold the source's WAL for ever."""
        if self.session.created_slot and not self.released:
            with contextlib.suppress(SourceError):
                self.session.drop_slot(self.session.created_slot)

    def check(self) -> list[Finding]:
        facts = self.session.facts()
        missing = self.session.missing_privileges()
        findings = [
            Finding("connect", True, f"{facts.version}, timeline {facts.timeline}"),
            Finding(
                "privileges",
                not missing,
                "all required privileges granted"
                if not missing
                else f"missing {', '.join(missing)}; apply the GRANTs from the README",
            ),
            Finding(
                "wal_level",
                facts.wal_level in ("replica", "logical"),
                f"wal_level = {facts.wal_level}"
                + ("" if facts.wal_level != "minimal" else "; set it to replica"),
            ),
        ]
        # Whether the newest backup's own slot still exists is judged with the backup
        # (the "newest backup" line, which names it); here, every slot this shard holds.
        for name in self.session.shard_slots():
            slot = self.session.slot_state(name)
            findings.append(
                Finding(
                    "slot",
                    slot.wal_status not in ("lost", "unreserved"),
                    f"{name}: {slot.wal_status}, restart_lsn "
                    f"{format_lsn(slot.restart_lsn) if slot.restart_lsn else '-'}",
                )
            )
        return findings


@contextlib.contextmanager
def open_source(config: Config, shard: Shard) -> Iterator[PostgresSource]:
    user, password = config.login(shard)
    with CountingRelay(shard.host, shard.port, shard.socket, client_uids()) as relay:
        session = PostgresSession(shard, user, password, relay)
        source = PostgresSource(session, relay, config.postgres)
        try:
            yield source
        except BaseException:
            source.abandon_new_slot()
            raise
        finally:
            session.close()
