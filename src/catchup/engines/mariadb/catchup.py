"""Catching an ephemeral replica up to exactly the checkpoint.

`START SLAVE UNTIL master_gtid_pos=<checkpoint>` stops both threads at the
checkpoint, so nothing past it is fetched. UNTIL also "succeeds" at once on a
diverged position, so the result is always checked: `@@gtid_slave_pos` must
equal the checkpoint exactly.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pymysql
import pymysql.cursors

from catchup.cancel import CancelToken
from catchup.engines import StepProgress
from catchup.engines.mariadb.gtid import Position
from catchup.engines.mariadb.server import MariaDBServer, select_value
from catchup.engines.mariadb.source import MariaDBSource
from catchup.errors import CatchUpFailedError, CatchUpStalledError, InstanceError

POLL_SECONDS = 0.5
LOST_GRACE_SECONDS = 2
P = TypeVar("P")  # a position: MariaDB's GTID position, MySQL's GTID set
# IO errors the replica retries by itself (network trouble): they count as a
# stall, not as a failure, until the stall timeout says otherwise.
TRANSIENT_IO_ERRORS = {2003, 2005, 2006, 2013, 1158, 1159, 1160, 1161}


@dataclass(frozen=True)
class ReplicationSource:
    host: str
    port: int
    user: str
    password: str


def catch_up(
    server: MariaDBServer,
    source: MariaDBSource,
    checkpoint: str,
    stall_timeout: float,
    cancel: CancelToken,
    progress: StepProgress,
) -> str:
    """Bring a restored or bootstrapped instance to exactly `checkpoint`, replicating
    through the cycle's relay; returns the position reached (the checkpoint)."""
    endpoint = ReplicationSource(
        "127.0.0.1", source.relay.port, source.session.user, source.password or ""
    )
    reached = replicate_until(
        server, endpoint, Position.parse(checkpoint), stall_timeout, cancel, progress
    )
    restore_event_status(server, source.event_statuses)
    return str(reached)


@dataclass
class _Watch:
    """What changed since the last poll, for stall detection."""

    marker: tuple[str, str, int] = ("", "", 0)
    since: float = 0.0


def replicate_until(
    server: MariaDBServer,
    source: ReplicationSource,
    checkpoint: Position,
    stall_timeout: float,
    cancel: CancelToken,
    progress: StepProgress | None = None,
) -> Position:
    """Replicate from the restored position to `checkpoint`; return the reached position."""
    with _replica_session(server) as conn:
        start = slave_position(conn)
        if start == checkpoint:
            return start  # nothing happened on the source since the last backup
        _execute(
            conn,
            "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, "
            "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
            (source.host, source.port, source.user, source.password),
        )
        _execute(conn, "START SLAVE UNTIL master_gtid_pos = %s", (str(checkpoint),))
        wait_until(
            conn,
            server,
            MARIADB,
            checkpoint,
            start,
            slave_position,
            Position.transactions,
            stall_timeout,
            cancel,
            progress,
        )
        _wait_sql_thread_stopped(conn, server, cancel)
        reached = slave_position(conn)
        _execute(conn, "STOP SLAVE")
        if reached != checkpoint:
            raise CatchUpFailedError(
                f"replica stopped at {reached or 'nothing'} instead of the checkpoint "
                f"{checkpoint}: the backup's position has diverged from the source; "
                "bootstrap again with `catchup backup --bootstrap`"
            )
        return reached


def restore_event_status(server: MariaDBServer, on_source: dict[tuple[str, str], str]) -> None:
    """A replica marks every event it replicates SLAVESIDE_DISABLED, so a restored backup
    would run none created or altered after its bootstrap. Give such events the status the
    source has for them (the ephemeral server's own scheduler stays off)."""
    with _replica_session(server) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT db, name FROM mysql.event WHERE status = 'SLAVESIDE_DISABLED'")
        for db, name in cursor.fetchall():
            status = on_source.get((db, name))
            if status in ("ENABLED", "DISABLED"):
                cursor.execute(
                    "UPDATE mysql.event SET status = %s WHERE db = %s AND name = %s",
                    (status, db, name),
                )


def forget_source(server: MariaDBServer) -> None:
    """RESET SLAVE ALL: no source address or password is left in the data dir."""
    with _replica_session(server) as conn:
        _execute(conn, "STOP SLAVE")
        _execute(conn, "RESET SLAVE ALL")


def slave_position(conn: pymysql.Connection) -> Position:
    with conn.cursor() as cursor:
        return Position.parse(str(select_value(cursor, "SELECT @@gtid_slave_pos")))


class _replica_session:
    """A connection to the ephemeral server that reports the server's death clearly."""

    def __init__(self, server: MariaDBServer) -> None:
        self.server = server

    def __enter__(self) -> pymysql.Connection:
        try:
            self.conn = self.server.connect()
        except pymysql.err.MySQLError as exc:
            raise _instance_lost(self.server, exc) from None
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
        if isinstance(exc, pymysql.err.OperationalError) and not self.server.running:
            raise _instance_lost(self.server, exc) from None


def _instance_lost(server: MariaDBServer, exc: Exception) -> InstanceError:
    # A killed server drops its connections a moment before it can be reaped: give it
    # that moment, so that its death is reported as such and not as a lost connection.
    if server.process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(LOST_GRACE_SECONDS)
    if not server.running:
        return InstanceError(
            f"the ephemeral {server.name} died (exit code {server.exit_code}) during catch-up: "
            f"{server.log_tail()}"
        )
    return InstanceError(f"cannot talk to the ephemeral {server.name}: {exc}")


def _execute(conn: pymysql.Connection, sql: str, args: tuple[object, ...] | None = None) -> None:
    with conn.cursor() as cursor:
        cursor.execute(sql, args)


@dataclass(frozen=True)
class Dialect:
    """How one server of the protocol family names its replica's threads and waits: the
    catch-up loop below is one mechanism for MariaDB and MySQL."""

    wait: str  # returns 0 once the replica has applied a position (a timeout follows it)
    status: str  # the replica status statement
    receiver: str  # status columns: the receiver (IO) thread, the applier (SQL) thread,
    applier: str  # and what the receiver has fetched so far
    received: str
    purged_errors: frozenset[int]  # IO errors of a source that cannot serve the position


MARIADB = Dialect(
    wait="SELECT MASTER_GTID_WAIT(%s, %s)",
    status="SHOW SLAVE STATUS",
    receiver="Slave_IO_Running",
    applier="Slave_SQL_Running",
    received="Gtid_IO_Pos",
    purged_errors=frozenset({1236}),
)


def slave_status(conn: pymysql.Connection, dialect: Dialect = MARIADB) -> dict[str, Any]:
    with conn.cursor(pymysql.cursors.DictCursor) as cursor:
        cursor.execute(dialect.status)
        return cursor.fetchone() or {}


def wait_until(
    conn: pymysql.Connection,
    server: MariaDBServer,
    dialect: Dialect,
    checkpoint: P,
    start: P,
    applied: Callable[[pymysql.Connection], P],
    measure: Callable[[P], int],
    stall_timeout: float,
    cancel: CancelToken,
    progress: StepProgress | None,
) -> None:
    """Poll the replica until it has applied `checkpoint` (read by `applied`; `measure`
    counts transactions for progress), failing on a replication error, a stop short of
    it, a stall or the server's death."""
    total = max(1, measure(checkpoint) - measure(start))
    watch = _Watch(since=time.monotonic())
    while True:
        cancel.check()
        with conn.cursor() as cursor:
            waited = select_value(cursor, dialect.wait, (str(checkpoint), POLL_SECONDS))
            if waited == 0:
                return
        status = slave_status(conn, dialect)
        raise_on_error(status, dialect)
        reached = applied(conn)
        if status.get(dialect.applier) == "No":
            if reached == checkpoint:
                return  # reached between the wait and the status check
            raise CatchUpFailedError(
                f"replication stopped at {reached or 'nothing'} before the checkpoint "
                f"{checkpoint} without an error: the source's history does not contain the "
                "backup's position; bootstrap again with `catchup backup --bootstrap`"
            )
        if progress:
            progress(min(total, measure(reached) - measure(start)), total)
        _check_stall(watch, status, str(reached), stall_timeout, dialect)
        if not server.running:
            raise _instance_lost(server, RuntimeError("server exited"))


def raise_on_error(status: dict[str, Any], dialect: Dialect = MARIADB) -> None:
    sql_errno = int(status.get("Last_SQL_Errno") or 0)
    if sql_errno:
        raise CatchUpFailedError(
            f"replication SQL error {sql_errno}: {status.get('Last_SQL_Error')}; the backup no "
            "longer matches the source, bootstrap again with `catchup backup --bootstrap`"
        )
    io_errno = int(status.get("Last_IO_Errno") or 0)
    if io_errno and io_errno not in TRANSIENT_IO_ERRORS:
        hint = (
            "the source no longer has the binlogs after the backup's position (purged since "
            "the precheck), or the position is foreign to it; run the backup again: its "
            "precheck then bootstraps a new chain if the binlogs are gone, and refuses a "
            "foreign position by name"
            if io_errno in dialect.purged_errors
            else "check the catchup account's REPLICATION SLAVE grant, its TLS and "
            "authentication settings, and the source's logs"
        )
        raise CatchUpFailedError(
            f"replication IO error {io_errno}: {status.get('Last_IO_Error')}; {hint}"
        )


def _check_stall(
    watch: _Watch, status: dict[str, Any], applied: str, limit: float, dialect: Dialect
) -> None:
    marker = (
        str(status.get(dialect.received, "")),
        applied,
        int(status.get("Relay_Log_Space") or 0),
    )
    now = time.monotonic()
    if marker != watch.marker:
        watch.marker, watch.since = marker, now
        return
    if now - watch.since > limit:
        detail = status.get("Last_IO_Error") or f"IO thread {status.get(dialect.receiver)}"
        raise CatchUpStalledError(
            f"catch-up stalled: no progress for {limit:.0f}s at {applied} ({detail}); "
            "check that the source is reachable, or raise stall_timeout_seconds"
        )


def _wait_sql_thread_stopped(
    conn: pymysql.Connection, server: MariaDBServer, cancel: CancelToken, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while slave_status(conn).get("Slave_SQL_Running") == "Yes":
        cancel.check()
        if time.monotonic() > deadline:
            raise CatchUpFailedError(
                f"the replica reached the checkpoint but its SQL thread did not stop in {timeout}s"
            )
        time.sleep(0.05)
