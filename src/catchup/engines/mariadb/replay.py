"""Point-in-time restore: replaying archived binlog files on a restored backup.

The files (named as archive.py's stream wrote them) are read once by binlog.py to
plan the replay: where the backup's position is, that each file continues exactly
where the one before ended (no gap, no overlap), and the byte offset at which the
target is reached (a time target: before the first transaction committed after it;
a position target: after the transaction at it). `mariadb-binlog` then turns exactly
those bytes into SQL for the `mariadb` client of the instance; the mechanism was
chosen by measurement (docs/benchmarks.md, "Archive replay (MariaDB)").

The instance has no binlog and no replication, so the replayed transactions move
no GTID variable: the plan knows the position reached, and sets `gtid_slave_pos`,
which the data dir keeps in mysql.gtid_slave_pos, as a backup's own.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from catchup.cancel import CancelToken
from catchup.engines import LogTarget
from catchup.engines.environment import child_environment
from catchup.engines.mariadb.binaries import find_binary
from catchup.engines.mariadb.binlog import NAME, BinlogReader, Boundary, archive_order
from catchup.engines.mariadb.gtid import Position, compare_positions
from catchup.engines.mariadb.server import ADMIN_USER, MariaDBServer
from catchup.errors import ArchiveGapError, InstanceError

POLL_SECONDS = 0.2


@dataclass
class Piece:
    path: Path
    start: int | None = None  # first byte to replay (first file only); None: its start
    stop: int | None = None  # end of the last replayed transaction (last file only)


@dataclass
class ReplayPlan:
    pieces: list[Piece] = field(default_factory=list)
    end: Position | None = None  # the position the replay reaches; None: start not found
    time: datetime | None = None  # of its last transaction
    done: bool = False  # the target is reached within the files


def archived_files(log_dir: Path) -> list[Path]:
    """The archived binlog files of `log_dir`, in log order."""
    names = [p.name for p in log_dir.iterdir() if NAME.match(p.name)]
    return [log_dir / name for name in sorted(names, key=archive_order)]


class _Planner:
    """Walks the boundaries of every file in order (binlog.py) and builds a ReplayPlan."""

    def __init__(self, start: Position, target: LogTarget) -> None:
        self.start = start
        self.target = target
        self.until = Position.parse(target.position) if target.position else None
        # Whole seconds: the binlog's precision (see docs/operations.md).
        self.until_time = utc_seconds(target.time) if target.time else None
        self.plan = ReplayPlan()
        self.covered: tuple[Position, datetime | None] | None = None  # the files' last state

    def read(self, path: Path) -> None:
        self.reading = path
        self.header: Boundary | None = None  # the file's state before its first transaction
        self.in_header = True
        self.piece: Piece | None = None
        reader = BinlogReader()
        reader.sink = self.boundary
        reader.read(path)
        if self.in_header and self.header is not None:
            self.file_starts(path, self.header)
        if self.piece is not None:
            self.plan.pieces.append(self.piece)

    def boundary(self, boundary: Boundary) -> None:
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

    def file_starts(self, path: Path, header: Boundary) -> None:
        plan = self.plan
        if plan.done:
            return
        if plan.end is not None and header.position != plan.end:
            later = compare_positions(header.position, plan.end) == 1
            raise ArchiveGapError(
                f"the archive has {'a gap' if later else 'an overlap'} at {plan.end}: the next "
                f"file {path.name} starts at {header.position or '(nothing)'}; restore to a "
                f"target before {plan.end}" + (f" ({plan.time.isoformat()})" if plan.time else "")
            )
        self.step(path, header)

    def step(self, path: Path, boundary: Boundary) -> None:
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
        if boundary.group and self.until_time and boundary.time and boundary.time > self.until_time:
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


def plan_replay(start: Position, files: list[Path], target: LogTarget) -> ReplayPlan:
    """What to replay of `files` to go from `start` to `target`; ArchiveGapError if the
    files do not hold that stretch of the log (naming what they do hold)."""
    if target.position is not None:
        order = compare_positions(Position.parse(target.position), start)
        if order is None or order < 0:
            raise ArchiveGapError(
                f"position {target.position} is not after the backup's position {start}"
            )
    planner = _Planner(start, target)
    for path in files:
        planner.read(path)
        if planner.plan.done:
            break
    plan = planner.plan
    covered = planner.covered
    held = f"the archive ends at {covered[0] or '(nothing)'}" if covered else "no archived files"
    if covered and covered[1]:
        held += f", last commit {covered[1].isoformat()}"
    if plan.end is None:
        raise ArchiveGapError(f"the archive does not hold the backup's position {start}; {held}")
    if not plan.done:
        raise ArchiveGapError(f"target {target.describe()} is past the archive: {held}")
    if planner.until is not None:
        wrong = {d: g for d, g in planner.until.items() if plan.end.get(d) != g}
        if wrong:
            raise ArchiveGapError(
                f"position {target.position} is not in the archived history: it has "
                f"{plan.end} there"
            )
    plan.pieces = [p for p in plan.pieces if p.start is None or p.stop is None or p.stop > p.start]
    return plan


def replay_log(
    server: MariaDBServer, position: str, log_dir: Path, target: LogTarget, cancel: CancelToken
) -> str:
    """Start the restored backup, replay the archive up to exactly `target`, and leave it
    running at the position reached (returned)."""
    plan = plan_replay(Position.parse(position), archived_files(log_dir), target)
    server.start(cancel=cancel)
    if plan.pieces:
        _pipe(server, plan.pieces, cancel)
    assert plan.end is not None
    with server.connect() as conn, conn.cursor() as cursor:
        cursor.execute("SET GLOBAL gtid_slave_pos = %s", (str(plan.end),))
    return str(plan.end)


def binlog_command(server: MariaDBServer, pieces: list[Piece]) -> list[str]:
    command = [find_binary("mariadb-binlog", server.binaries)]
    first, last = pieces[0], pieces[-1]
    if first.start is not None:
        command.append(f"--start-position={first.start}")  # applies to the first file
    if last.stop is not None:
        command.append(f"--stop-position={last.stop}")  # applies to the last file
    return command + [str(p.path) for p in pieces]


def _pipe(server: MariaDBServer, pieces: list[Piece], cancel: CancelToken) -> None:
    errors = server.files.tmp_dir / "replay.err"
    client = [
        find_binary("mariadb", server.binaries),
        f"--defaults-extra-file={server.files.client_config}",
        "--binary-mode",
        "--max-allowed-packet=1G",
    ]
    env = child_environment(TZ="UTC")
    with open(errors, "wb") as err:
        reader = subprocess.Popen(
            binlog_command(server, pieces), stdout=subprocess.PIPE, stderr=err, env=env
        )
        assert reader.stdout is not None
        writer = subprocess.Popen(client, stdin=reader.stdout, stderr=err, env=env)
        reader.stdout.close()  # the client holds the pipe now
        try:
            while writer.poll() is None:
                cancel.check()
                time.sleep(POLL_SECONDS)
            reader.wait()
        finally:
            for process in (reader, writer):
                if process.poll() is None:
                    process.kill()
                    process.wait()
    if reader.returncode != 0 or writer.returncode != 0:
        detail = errors.read_text(errors="replace").strip()[-2000:]
        raise InstanceError(
            f"replaying the archived binlog failed (mariadb-binlog exit {reader.returncode}, "
            f"mariadb exit {writer.returncode}): {detail}"
        )


def stop_for_restore(server: MariaDBServer) -> None:
    """No replication state, no catchup account: then a clean shutdown, after which a
    stock mariadbd starts without crash recovery at gtid_slave_pos, the target."""
    with server.connect() as conn, conn.cursor() as cursor:
        cursor.execute("STOP SLAVE")
        cursor.execute("RESET SLAVE ALL")
        cursor.execute("SET GLOBAL innodb_fast_shutdown = 1")
        cursor.execute("DROP USER IF EXISTS %s@'localhost'", (ADMIN_USER,))
    server.stop()


def utc_seconds(moment: datetime) -> datetime:
    """`moment` to the second, in UTC (a naive one is taken as UTC)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).replace(microsecond=0)
