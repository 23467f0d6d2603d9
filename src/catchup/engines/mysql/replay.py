"""Point-in-time restore: replaying archived MySQL binary logs on a restored backup.

As MariaDB's, with the same mechanism (mariadb/replay.py: ReplayPlanner, the staging
and the checks): the files are read once by binlog.py to plan the replay, their
bytes become the instance's relay logs (the last one cut at the target), and the
replication SQL thread applies them with no source.

What differs is the position: a GTID set. A file's state is its PREVIOUS_GTIDS
joined with all the archive held before it, so a resumed stream's file (which lacks
what `--exclude-gtids` left out) continues its predecessor. A gap is a file whose
PREVIOUS_GTIDS holds a transaction the files before it do not; an overlap is
harmless, since the SQL thread skips every GTID already in @@gtid_executed. So the
replay starts at the last point of the archive within the backup's set, and
`START REPLICA SQL_THREAD UNTIL SQL_AFTER_GTIDS` stops it at the target's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymysql.cursors import Cursor

from catchup.cancel import CancelToken
from catchup.engines import LogTarget
from catchup.engines.mariadb.replay import (
    POLL_SECONDS,
    RELAY_LOG,
    Piece,
    ReplayPlan,
    ReplayPlanner,
    apply_archived,
    apply_to_target,
    archived_files,
    shut_down_clean,
)
from catchup.engines.mysql.binlog import MySQLBinlogReader, MySQLBoundary
from catchup.engines.mysql.catchup import REPLICA_DISABLED, executed, replica_status
from catchup.engines.mysql.gtid import GtidSet, compare_positions
from catchup.engines.mysql.restore import start_instructions
from catchup.engines.mysql.server import MySQLServer, select_value
from catchup.errors import ArchiveGapError, InstanceError

# SHOW REPLICA STATUS's Replica_SQL_Running_State once the staged files are applied.
RELAY_LOG_DONE = "Replica has read all relay log"


MySQLReplayPlan = ReplayPlan[GtidSet]


class _Planner(ReplayPlanner[GtidSet]):
    """Walks the boundaries of every file in order (binlog.py) and builds a MySQLReplayPlan."""

    def __init__(self, start: GtidSet, target: LogTarget) -> None:
        super().__init__(start, target, as_utc(target.time) if target.time else None)
        self.carried = GtidSet()  # what the files read so far hold

    def parse(self, text: str) -> GtidSet:
        return GtidSet.parse(text)

    def compare(self, a: GtidSet, b: GtidSet) -> int | None:
        return compare_positions(a, b)

    def at_target(self, end: GtidSet, until: GtidSet) -> bool:
        return end == until

    def read(self, path: Path) -> None:
        self.reading = path
        self.in_header = True
        self.piece: Piece | None = None
        reader = MySQLBinlogReader(self.carried, self.covered[1] if self.covered else None)
        reader.sink = self.boundary
        reader.read(path)
        if reader.state is not None:
            self.carried = reader.state
        if self.piece is not None:
            self.plan.pieces.append(self.piece)

    def boundary(self, boundary: MySQLBoundary) -> None:
        if self.in_header:
            self.in_header = False
            self.file_starts(boundary)
        self.covered = (boundary.position, boundary.time)
        self.step(boundary)

    def file_starts(self, header: MySQLBoundary) -> None:
        """The file's first boundary, after its PREVIOUS_GTIDS (joined with `carried`)."""
        plan = self.plan
        if plan.done or self.covered is None:
            return
        missing = header.position.minus(self.covered[0])
        if missing:
            end = plan.end if plan.end is not None else self.covered[0]
            raise ArchiveGapError(
                f"the archive has a gap at {end or '(nothing)'}: the next file "
                f"{self.reading.name} starts after {missing}, which no file holds; restore to "
                f"a target at or before {end or '(nothing)'}"
                + (f" ({plan.time.isoformat()})" if plan.time else "")
            )

    def step(self, boundary: MySQLBoundary) -> None:
        plan = self.plan
        if plan.done:
            return
        if boundary.position.issubset(self.start):
            # Within the backup (applied already): the replay starts at the last such point.
            plan.end, plan.time = self.start, None
            plan.pieces.clear()
            self.piece = Piece(self.reading, start=boundary.offset, stop=boundary.offset)
            plan.done = self.reached()
            return
        if plan.end is None:
            return  # the archive starts after the backup: found nowhere
        if self.piece is None:
            self.piece = Piece(self.reading, stop=boundary.offset)
        if self.after_target(boundary):
            plan.done = True  # this transaction is after the target: stop before it
            return
        self.piece.stop = boundary.offset
        plan.end = boundary.position.union(self.start)
        plan.time = boundary.time if boundary.group else plan.time
        plan.done = self.reached()

    def reached(self) -> bool:
        return (
            self.until is not None
            and self.plan.end is not None
            and self.until.issubset(self.plan.end)
        )


def plan_replay(start: GtidSet, files: list[Path], target: LogTarget) -> MySQLReplayPlan:
    """ReplayPlanner.replay with MySQL's GTID sets."""
    return _Planner(start, target).replay(files)


def plan_toward(start: GtidSet, files: list[Path], checkpoint: GtidSet) -> MySQLReplayPlan:
    """ReplayPlanner.toward with MySQL's GTID sets."""
    return _Planner(start, LogTarget(position=str(checkpoint))).toward(files, checkpoint)


def replay_archived(
    server: MySQLServer, log_dir: Path, checkpoint: str, cancel: CancelToken
) -> GtidSet:
    """Apply what the archive holds of a cycle's delta to the running replica (restarted
    once, to take the files as relay logs); returns the GTID set reached."""
    with server.connect() as conn:
        start = executed(conn)
    plan = plan_toward(start, archived_files(log_dir), GtidSet.parse(checkpoint))
    if not apply_archived(server, start, plan, _apply, cancel):
        return start
    with server.connect() as conn:
        return executed(conn)


def replay_log(
    server: MySQLServer, position: str, log_dir: Path, target: LogTarget, cancel: CancelToken
) -> str:
    """Start the restored backup, replay the archive up to exactly `target`, and leave it
    running at the GTID set reached (returned)."""
    plan = plan_replay(GtidSet.parse(position), archived_files(log_dir), target)
    return apply_to_target(server, plan, _apply, executed, cancel)


def _apply(server: MySQLServer, start: int, end: GtidSet, cancel: CancelToken) -> None:
    """Run the SQL thread over the staged relay logs until it has applied `end`."""
    with server.connect() as conn, conn.cursor() as cursor:
        disabled_before = _replica_disabled_events(cursor)
        # No source: the receiver never starts. A relay log position is a file offset.
        cursor.execute(
            "CHANGE REPLICATION SOURCE TO SOURCE_HOST='127.0.0.1', SOURCE_PORT=1, "
            "SOURCE_USER='archive', SOURCE_AUTO_POSITION=0, RELAY_LOG_FILE=%s, RELAY_LOG_POS=%s",
            (RELAY_LOG.format(1), start),
        )
        cursor.execute("START REPLICA SQL_THREAD UNTIL SQL_AFTER_GTIDS = %s", (str(end),))
        idle = 0
        wait = "SELECT WAIT_FOR_EXECUTED_GTID_SET(%s, %s)"
        while select_value(cursor, wait, (str(end), POLL_SECONDS)):
            cancel.check()
            idle = idle + 1 if _stuck(cursor, replica_status(conn)) else 0
            if idle > 2:  # (a stop or an error is seen before the wait ends: look again)
                status = replica_status(conn)
                reached = executed(conn)
                errno = int(status.get("Last_SQL_Errno") or 0)
                detail = (
                    f"SQL error {errno}: {status.get('Last_SQL_Error')}"
                    if errno
                    else f"the SQL thread stopped before {end.minus(reached)}"
                )
                raise InstanceError(
                    f"replaying the archived binlog failed at {reached or 'nothing'}: {detail}"
                )
        cursor.execute("STOP REPLICA")
        cursor.execute("RESET REPLICA ALL")  # gtid_executed stays: it is the position reached
        # As in a cycle, the SQL thread disables the events it creates (on a replica they
        # would run twice); enabled again for a stock server, they run as on the source.
        for schema, name in _replica_disabled_events(cursor) - disabled_before:
            cursor.execute(f"ALTER EVENT `{_quoted(schema)}`.`{_quoted(name)}` ENABLE")


def _stuck(cursor: Cursor, status: dict[str, Any]) -> bool:
    """The SQL thread stopped, or has applied all the staged relay logs and waits for
    more (no worker is applying a transaction), before the target."""
    if int(status.get("Last_SQL_Errno") or 0) or status.get("Replica_SQL_Running") != "Yes":
        return True
    if not str(status.get("Replica_SQL_Running_State", "")).startswith(RELAY_LOG_DONE):
        return False
    busy = select_value(
        cursor,
        "SELECT COUNT(*) FROM performance_schema.replication_applier_status_by_worker "
        "WHERE applying_transaction <> ''",
    )
    return not busy


def _replica_disabled_events(cursor: Cursor) -> set[tuple[str, str]]:
    cursor.execute(
        "SELECT event_schema, event_name FROM information_schema.events WHERE status IN %s",
        (REPLICA_DISABLED,),
    )
    return {(str(schema), str(name)) for schema, name in cursor.fetchall()}


def _quoted(identifier: str) -> str:
    return identifier.replace("`", "``")


def stop_for_restore(server: MySQLServer) -> str:
    """No replication state, no catchup account: then a clean shutdown, after which a
    stock mysqld starts without crash recovery at @@gtid_executed, the target. Returns
    how to start it, for the operator."""
    position = shut_down_clean(server, "REPLICA", executed)
    return start_instructions("<target dir>", str(position))


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC (a naive one is taken as UTC), to the microsecond."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC)
