"""Catching an ephemeral MySQL replica up to exactly the checkpoint.

`START REPLICA UNTIL SQL_AFTER_GTIDS = <checkpoint>` with `SOURCE_AUTO_POSITION=1`:
the source sends every transaction the replica's GTID set lacks, and the applier
stops once the checkpoint's are applied. The receiver thread is not bound by UNTIL,
so it is stopped as soon as the applier is. The result is always checked: the
replica's `@@gtid_executed` must equal the checkpoint exactly, as GTID sets.

The connection: MySQL's default `caching_sha2_password` needs TLS or the source's
RSA key for a first login. With TLS on the source, the channel requires it
(`SOURCE_SSL=1`); without, `SOURCE_SSL=0` and `GET_SOURCE_PUBLIC_KEY=1`, since a new
channel otherwise tries TLS and fails with "SSL is required but the server doesn't
support it".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pymysql
import pymysql.cursors

from catchup.cancel import CancelToken
from catchup.engines import StepProgress
from catchup.engines.mariadb.catchup import (
    Dialect,
    _execute,
    _replica_session,
    slave_status,
    wait_until,
)
from catchup.engines.mysql.gtid import GtidSet
from catchup.engines.mysql.server import MySQLServer, select_value
from catchup.engines.mysql.source import MySQLSource
from catchup.errors import CatchUpFailedError

MYSQL = Dialect(
    # Whole seconds: a fractional timeout is not documented for every supported version.
    wait="SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, CEIL(%s))",
    status="SHOW REPLICA STATUS",
    receiver="Replica_IO_Running",
    applier="Replica_SQL_Running",
    received="Retrieved_Gtid_Set",
    # 1236: the source cannot send what the replica lacks (purged, or errant GTIDs);
    # 13114: the same, as MySQL 8.0.23+ reports it for a purged GTID.
    purged_errors=frozenset({1236, 13114}),
)
# The status a replicated CREATE EVENT gets on a replica (named so before 8.0.22).
REPLICA_DISABLED = ("REPLICA_SIDE_DISABLED", "SLAVESIDE_DISABLED")


@dataclass(frozen=True)
class Channel:
    """Where and how the replica connects (through the cycle's relay)."""

    host: str
    port: int
    user: str
    password: str
    tls: bool
    compress: bool


def catch_up(
    server: MySQLServer,
    source: MySQLSource,
    checkpoint: str,
    stall_timeout: float,
    compress: bool,
    cancel: CancelToken,
    progress: StepProgress,
) -> str:
    """Bring a restored or bootstrapped instance to exactly `checkpoint`; returns it."""
    channel = Channel(
        "127.0.0.1",
        source.relay.port,
        source.session.user,
        source.password or "",
        source.tls,
        compress,
    )
    reached = replicate_until(
        server, channel, GtidSet.parse(checkpoint), stall_timeout, cancel, progress
    )
    restore_event_status(server, source.event_statuses)
    return str(reached)


def executed(conn: pymysql.Connection) -> GtidSet:
    with conn.cursor() as cursor:
        return GtidSet.parse(str(select_value(cursor, "SELECT @@GLOBAL.gtid_executed")))


def replicate_until(
    server: MySQLServer,
    channel: Channel,
    checkpoint: GtidSet,
    stall_timeout: float,
    cancel: CancelToken,
    progress: StepProgress | None = None,
) -> GtidSet:
    with _replica_session(server) as conn:
        start = executed(conn)
        if start == checkpoint:
            return start  # nothing happened on the source since the last backup
        errant = start.minus(checkpoint)
        if errant:
            raise CatchUpFailedError(
                f"the backup has transactions the checkpoint lacks (errant GTIDs {errant}); "
                "refusing to carry them: bootstrap again with `catchup backup --bootstrap`"
            )
        # The password goes with START REPLICA, which keeps it in memory only: given to
        # CHANGE REPLICATION SOURCE it is written to mysql.slave_master_info, an InnoDB
        # table, and RESET REPLICA ALL deletes the row but not its bytes in the redo log
        # and the table's pages, which the backup then carries (the tests caught that).
        _execute(
            conn,
            "CHANGE REPLICATION SOURCE TO SOURCE_HOST=%s, SOURCE_PORT=%s, SOURCE_USER=%s, "
            "SOURCE_AUTO_POSITION=1, SOURCE_CONNECT_RETRY=1, SOURCE_SSL=%s, "
            "GET_SOURCE_PUBLIC_KEY=1, SOURCE_COMPRESSION_ALGORITHMS=%s",
            (
                channel.host,
                channel.port,
                channel.user,
                int(channel.tls),
                "zstd" if channel.compress else "uncompressed",
            ),
        )
        _execute(
            conn,
            "START REPLICA UNTIL SQL_AFTER_GTIDS = %s USER = %s PASSWORD = %s",
            (str(checkpoint), channel.user, channel.password),
        )
        try:
            wait_until(
                conn,
                server,
                MYSQL,
                checkpoint,
                start,
                executed,
                GtidSet.count,
                stall_timeout,
                cancel,
                progress,
            )
        finally:
            _execute(conn, "STOP REPLICA")
        reached = executed(conn)
        if reached != checkpoint:
            raise CatchUpFailedError(
                f"replica stopped at {reached or 'nothing'} instead of the checkpoint "
                f"{checkpoint}: the backup's GTID set has diverged from the source; "
                "bootstrap again with `catchup backup --bootstrap`"
            )
        return reached


def restore_event_status(server: MySQLServer, on_source: dict[tuple[str, str], str]) -> None:
    """A replica disables every event it replicates (it would run twice otherwise), so a
    restored backup would run none created or altered after its bootstrap. Give such
    events the status the source has for them (the ephemeral scheduler stays off)."""
    with _replica_session(server) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT event_schema, event_name FROM information_schema.events WHERE status IN %s",
            (REPLICA_DISABLED,),
        )
        for schema, name in cursor.fetchall():
            status = on_source.get((schema, name))
            if status in ("ENABLED", "DISABLED"):
                action = "ENABLE" if status == "ENABLED" else "DISABLE"
                cursor.execute(f"ALTER EVENT `{_quoted(schema)}`.`{_quoted(name)}` {action}")


def _quoted(identifier: str) -> str:
    return identifier.replace("`", "``")


def forget_sources(server: MySQLServer) -> None:
    """RESET REPLICA ALL: no source address or password is left in the data dir."""
    with _replica_session(server) as conn:
        _execute(conn, "STOP REPLICA")
        _execute(conn, "RESET REPLICA ALL")


def replica_status(conn: pymysql.Connection) -> dict[str, Any]:
    return slave_status(conn, MYSQL)
