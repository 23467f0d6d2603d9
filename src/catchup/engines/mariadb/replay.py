"""Point-in-time restore: replaying archived binlog files on a restored backup.

The files (named as archive.py's stream wrote them) are read once by binlog.py to
plan the replay: where the backup's position is, that each file continues exactly
where the one before ended (no gap, no overlap), and the byte offset at which the
target is reached (a time target: before the first transaction committed after it;
a position target: after the transaction at it).

Those bytes become the instance's relay logs, and its replication SQL thread applies
them, with no source (the IO thread never runs): it starts at the backup's position
as a relay log offset and finds nothing past the target, because the last file is
cut there. Measured against `mariadb-binlog | mariadb` on the same files, it replays
1.5-2.2 times faster (docs/benchmarks.md, "Archive replay (MariaDB)"), and it moves
`gtid_slave_pos` as it goes, so the data dir stands at the position reached like a
backup does.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Generic, TypeVar

import pymysql

from catchup.cancel import CancelToken
from catchup.engines import LogTarget
from catchup.engines.mariadb.binlog import NAME, BinlogReader, Boundary, P, archive_order
from catchup.engines.mariadb.catchup import slave_position, slave_status
from catchup.engines.mariadb.gtid import Position, compare_positions
from catchup.engines.mariadb.server import ADMIN_USER, MariaDBServer, select_value
from catchup.errors import ArchiveGapError, InstanceError

POLL_SECONDS = 0.5
RELAY_LOG = "relay-bin.{:06}"  # the instance's --relay-log basename (instance.py)
RELAY_INDEX = "relay-bin.index"
COPY_CHUNK = 1 << 20

S = TypeVar("S", bound=MariaDBServer)  # the engine's server (MySQL's is a MariaDBServer)


@dataclass
class Piece:
    """What to replay of one file: its events up to `stop`, from `start` in the first."""

    path: Path
    stop: int  # the end of its last replayed transaction (or event outside one)
    start: int | None = None  # the backup's position, in the first file only


@dataclass
class ReplayPlan(Generic[P]):
    pieces: list[Piece] = field(default_factory=list)
    end: P | None = None  # the position the replay reaches; None: start not found
    time: datetime | None = None  # of its last transaction
    done: bool = False  # the target is reached within the files


def archived_files(log_dir: Path) -> list[Path]:
    """The archived binlog files of `log_dir`, in log order."""
    names = [p.name for p in log_dir.iterdir() if NAME.match(p.name)]
    return [log_dir / name for name in sorted(names, key=archive_order)]


class ReplayPlanner(Generic[P]):
    """Both engines' planning: the walk over the files in order, and the verdicts on the
    plan it builds. A subclass reads each file's boundaries into the plan (`read`) with
    its engine's positions, which it also parses, compares and checks (`reached`)."""

    def __init__(self, start: P, target: LogTarget, until_time: datetime | None) -> None:
        self.start = start
        self.target = target
        self.until = self.parse(target.position) if target.position else None
        self.until_time = until_time  # to the binlog's precision
        self.plan: ReplayPlan[P] = ReplayPlan()
        self.covered: tuple[P, datetime | None] | None = None  # the files' last state

    def parse(self, text: str) -> P:
        raise NotImplementedError

    def compare(self, a: P, b: P) -> int | None:
        """-1, 0 or 1 as `a` is before, at or after `b`; None: different histories."""
        raise NotImplementedError

    def at_target(self, end: P, until: P) -> bool:
        """Whether `end`, which has reached `until`, is exactly there (not past it)."""
        raise NotImplementedError

    def read(self, path: Path) -> None:
        raise NotImplementedError

    def reached(self) -> bool:
        raise NotImplementedError

    def after_target(self, boundary: Boundary[P]) -> bool:
        """Whether the transaction ending at `boundary` committed after the target time."""
        return bool(
            boundary.group and self.until_time and boundary.time and boundary.time > self.until_time
        )

    def walk(self, files: list[Path]) -> ReplayPlan[P]:
        for path in files:
            self.read(path)
            if self.plan.done:
                break
        plan = self.plan
        plan.pieces = [p for p in plan.pieces if p.start is None or p.stop > p.start]
        return plan

    def replay(self, files: list[Path]) -> ReplayPlan[P]:
        """What to replay of `files` to go from `start` to the target; ArchiveGapError if
        the files do not hold that stretch of the log (naming what they do hold)."""
        start, target = self.start, self.target
        if self.until is not None:
            order = self.compare(self.until, start)
            if order is None or order < 0:
                raise ArchiveGapError(
                    f"position {target.position} is not after the backup's position {start}"
                )
        plan = self.walk(files)
        covered = self.covered
        held = (
            f"the archive ends at {covered[0] or '(nothing)'}" if covered else "no archived files"
        )
        if covered and covered[1]:
            held += f", last commit {covered[1].isoformat()}"
        if plan.end is None:
            raise ArchiveGapError(
                f"the archive does not hold the backup's position {start}; {held}"
            )
        if not plan.done and not (self.until_time and plan.time == self.until_time):
            # A time after the archive's last commit may have had commits the archive does
            # not hold yet; the caller who knows the archive was current then asks for its
            # end position instead. The last commit's own time (to the binlog's precision)
            # is the window's end: taken.
            raise ArchiveGapError(f"target {target.describe()} is past the archive: {held}")
        if self.until is not None and not self.at_target(plan.end, self.until):
            raise ArchiveGapError(
                f"position {target.position} is not in the archived history: it has "
                f"{plan.end} there"
            )
        return plan

    def toward(self, files: list[Path], checkpoint: P) -> ReplayPlan[P]:
        """A cycle's part of the archive: from the backup up to `checkpoint`, or as far as
        the files go before it; nothing when they do not hold the backup's position or do
        not continue cleanly (the source then sends it all, as without an archive)."""
        try:
            plan = self.walk(files)
        except ArchiveGapError:
            return ReplayPlan()
        if plan.end is None or self.compare(plan.end, checkpoint) not in (-1, 0):
            return ReplayPlan()
        return plan


class _Planner(ReplayPlanner[Position]):
    """Walks the boundaries of every file in order (binlog.py) and builds a ReplayPlan."""

    def __init__(self, start: Position, target: LogTarget) -> None:
        # Whole seconds: the binlog's precision (see docs/operations.md).
        super().__init__(start, target, utc_seconds(target.time) if target.time else None)

    def parse(self, text: str) -> Position:
        return Position.parse(text)

    def compare(self, a: Position, b: Position) -> int | None:
        return compare_positions(a, b)

    def at_target(self, end: Position, until: Position) -> bool:
        return all(end.get(d) == g for d, g in until.items())

    def read(self, path: Path) -> None:
        self.reading = path
        self.header: Boundary[Position] | None = None  # the state before the first transaction
        self.in_header = True
        self.piece: Piece | None = None
        reader = BinlogReader()
        reader.sink = self.boundary
        reader.read(path)
        if self.in_header and self.header is not None:
            self.file_starts(path, self.header)
        if self.piece is not None:
            self.plan.pieces.append(self.piece)

    def boundary(self, boundary: Boundary[Position]) -> None:
        self.covered = (boundary.position, boundary.time)
        if self.in_header and not boundary.group:
            self.header = boundary  # a later GTID list replaces an earlier one
            return
        if self.in_header:
            if self.header is None:
                raise ArchiveGapError(
                    "an archived binlog file has a transaction before its GTID list"
                )
            self.file_starts(self.reading, self.header)
            self.in_header = False
        self.step(self.reading, boundary)

    def file_starts(self, path: Path, header: Boundary[Position]) -> None:
        plan = self.plan
        if plan.done:
            return
        if plan.end is not None and header.position != plan.end:
            later = compare_positions(header.position, plan.end) == 1
            raise ArchiveGapError(
                f"the archive has {'a gap' if later else 'an overlap'} at {plan.end}: the next "
                f"file {path.name} starts at {header.position or '(nothing)'}; restore to a "
                f"target at or before {plan.end}"
                + (f" ({plan.time.isoformat()})" if plan.time else "")
            )
        self.step(path, header)

    def step(self, path: Path, boundary: Boundary[Position]) -> None:
        plan = self.plan
        if plan.done:
            return
        if plan.end is None:
            if boundary.position == self.start:
                plan.end, plan.time = self.start, None
                self.piece = Piece(path, start=boundary.offset, stop=boundary.offset)
                plan.done = self.reached()
            return
        if self.piece is None:
            self.piece = Piece(path, stop=boundary.offset)
        if self.after_target(boundary):
            plan.done = True  # this transaction is after the target: stop before it
            return
        self.piece.stop = boundary.offset
        plan.end, plan.time = boundary.position, boundary.time
        plan.done = self.reached()

    def reached(self) -> bool:
        if self.until is None or self.plan.end is None:
            return False
        end = self.plan.end
        return all(d in end and end[d].seqno >= g.seqno for d, g in self.until.items())


def plan_replay(start: Position, files: list[Path], target: LogTarget) -> ReplayPlan[Position]:
    """ReplayPlanner.replay with MariaDB's positions."""
    return _Planner(start, target).replay(files)


def plan_toward(start: Position, files: list[Path], checkpoint: Position) -> ReplayPlan[Position]:
    """ReplayPlanner.toward with MariaDB's positions."""
    return _Planner(start, LogTarget(position=str(checkpoint))).toward(files, checkpoint)


def replay_archived(
    server: MariaDBServer, log_dir: Path, checkpoint: str, cancel: CancelToken
) -> Position:
    """Apply what the archive holds of a cycle's delta to the running replica (restarted
    once, to take the files as relay logs); returns the position reached."""
    with server.connect() as conn:
        start = slave_position(conn)
    plan = plan_toward(start, archived_files(log_dir), Position.parse(checkpoint))
    if not apply_archived(server, start, plan, _apply, cancel):
        return start
    assert plan.end is not None
    return plan.end


def replay_log(
    server: MariaDBServer, position: str, log_dir: Path, target: LogTarget, cancel: CancelToken
) -> str:
    """Start the restored backup, replay the archive up to exactly `target`, and leave it
    running at the position reached (returned)."""
    plan = plan_replay(Position.parse(position), archived_files(log_dir), target)
    return apply_to_target(server, plan, _apply, slave_position, cancel)


# The engine's SQL thread run over the staged relay logs: (server, relay log offset to
# start at, position to stop at, cancel).
Applier = Callable[[S, int, P, CancelToken], None]


def apply_archived(
    server: S, start: P, plan: ReplayPlan[P], apply: Applier[S, P], cancel: CancelToken
) -> bool:
    """A cycle's replay: restart the running replica on the plan's pieces as relay logs
    and apply them; False when the plan has nothing past `start` (nothing is done)."""
    if not plan.pieces or plan.end is None or plan.end == start:
        return False
    server.stop()
    _stage_and_apply(server, plan, apply, cancel)
    return True


def apply_to_target(
    server: S,
    plan: ReplayPlan[P],
    apply: Applier[S, P],
    position: Callable[[pymysql.Connection], P],
    cancel: CancelToken,
) -> str:
    """A restore's replay: start the stopped server on the plan's pieces, apply them, and
    check it stands at the plan's end (`position`: the server's own, returned)."""
    _stage_and_apply(server, plan, apply, cancel)
    with server.connect() as conn:
        reached = position(conn)
    if reached != plan.end:
        raise InstanceError(
            f"the replay stopped at {reached or 'nothing'} instead of {plan.end}; the archive "
            "and the backup do not fit together"
        )
    return str(reached)


def _stage_and_apply(
    server: S, plan: ReplayPlan[P], apply: Applier[S, P], cancel: CancelToken
) -> None:
    if plan.pieces:
        stage_relay_logs(server.files.data_dir, plan.pieces)
    server.start(cancel=cancel)
    assert plan.end is not None
    if plan.pieces:
        apply(server, plan.pieces[0].start or 4, plan.end, cancel)


def stage_relay_logs(data_dir: Path, pieces: list[Piece]) -> None:
    """The archived files as the instance's relay logs: linked where whole (the SQL thread
    deletes a relay log it has applied, which leaves the archived file); copied up to the
    target in the last file, so the SQL thread cannot apply past it, and up to its last
    whole transaction in any file that has more (never part of one)."""
    names = [RELAY_LOG.format(index) for index in range(1, len(pieces) + 1)]
    for name, piece in zip(names, pieces, strict=True):
        staged = data_dir / name
        if piece.stop < piece.path.stat().st_size:
            with open(piece.path, "rb") as source, open(staged, "wb") as copy:
                _copy_prefix(source, copy, piece.stop)
            continue
        try:
            os.link(piece.path, staged)
        except OSError:  # another file system
            shutil.copyfile(piece.path, staged)
    (data_dir / RELAY_INDEX).write_text("".join(f"./{name}\n" for name in names))


def _copy_prefix(source: BinaryIO, target: BinaryIO, length: int) -> None:
    while length > 0:
        chunk = source.read(min(length, COPY_CHUNK))
        if not chunk:
            raise InstanceError(f"{source.name} is shorter than its archive record")
        target.write(chunk)
        length -= len(chunk)


def _apply(server: MariaDBServer, start: int, end: Position, cancel: CancelToken) -> None:
    """Run the SQL thread over the staged relay logs until it has applied `end`."""
    with server.connect() as conn, conn.cursor() as cursor:
        cursor.execute("SELECT db, name FROM mysql.event WHERE status = 'SLAVESIDE_DISABLED'")
        disabled_before = set(cursor.fetchall())
        # No source: the IO thread never starts. A relay log position is a file offset.
        cursor.execute(
            "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=1, MASTER_USER='archive', "
            "MASTER_USE_GTID=no, RELAY_LOG_FILE=%s, RELAY_LOG_POS=%s",
            (RELAY_LOG.format(1), start),
        )
        cursor.execute("START SLAVE SQL_THREAD")
        while select_value(cursor, "SELECT MASTER_GTID_WAIT(%s, %s)", (str(end), POLL_SECONDS)):
            cancel.check()
            status = slave_status(conn)
            if status.get("Slave_SQL_Running") != "Yes":
                raise InstanceError(
                    f"replaying the archived binlog failed at {slave_position(conn)}: SQL error "
                    f"{status.get('Last_SQL_Errno')}: {status.get('Last_SQL_Error')}"
                )
        cursor.execute("STOP SLAVE")
        cursor.execute("RESET SLAVE ALL")  # gtid_slave_pos stays: it is the position reached
        # As in a cycle, the SQL thread disables the events it creates (on a replica they
        # would run twice); restored for a stock server, they run as on the source.
        cursor.execute("SELECT db, name FROM mysql.event WHERE status = 'SLAVESIDE_DISABLED'")
        for db, name in set(cursor.fetchall()) - disabled_before:
            cursor.execute(
                "UPDATE mysql.event SET status = 'ENABLED' WHERE db = %s AND name = %s", (db, name)
            )


def stop_for_restore(server: MariaDBServer) -> str:
    """No replication state, no catchup account: then a clean shutdown, after which a
    stock mariadbd starts without crash recovery at gtid_slave_pos, the target. Returns
    how to start it, for the operator."""
    position = shut_down_clean(server, "SLAVE", slave_position)
    return (
        "Start it with: mariadbd --datadir=<target dir> (chown -R mysql: it first when the "
        "server runs as mysql). It was shut down cleanly at the target: no recovery is left "
        "to do. To attach it as a replica: CHANGE MASTER TO …, MASTER_USE_GTID=slave_pos "
        f"(gtid_slave_pos is {position})."
    )


def shut_down_clean(
    server: MariaDBServer, replica: str, position: Callable[[pymysql.Connection], P]
) -> P:
    """Drop the replication state (`replica`: the engine's word in STOP/RESET ... ALL)
    and the catchup account, then shut down without leaving crash recovery to do;
    returns the position it stands at (`position`, read before the shutdown)."""
    with server.connect() as conn, conn.cursor() as cursor:
        cursor.execute(f"STOP {replica}")
        cursor.execute(f"RESET {replica} ALL")
        cursor.execute("SET GLOBAL innodb_fast_shutdown = 1")
        cursor.execute("DROP USER IF EXISTS %s@'localhost'", (ADMIN_USER,))
        reached = position(conn)
    server.stop()
    return reached


def utc_seconds(moment: datetime) -> datetime:
    """`moment` to the second, in UTC (a naive one is taken as UTC)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(microsecond=0)
