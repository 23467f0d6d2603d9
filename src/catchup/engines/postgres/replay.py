"""Point-in-time restore: a restored backup recovers through archived WAL to a target.

The archive's files are staged in the instance dir (linked, or copied when short: a
segment still being written when it was archived is padded with zeros to a whole
segment, where replay finds the end of the WAL) and recovery fetches them with a
`restore_command` that copies by name, following timelines through their `.history`
files (`recovery_target_timeline = latest`).

Targets (LogTarget), both inclusive:
- a time: `recovery_target_time` with `recovery_target_inclusive = on`: every
  transaction committed at or before it (to the microsecond, the precision of the
  WAL's commit records);
- a position T (an LSN): `recovery_target_lsn = T` with `recovery_target_inclusive =
  off`: every record that begins before T, so the transaction whose commit record ends
  at T (pg_current_wal_insert_lsn() after it; the end the archive's marks give) is in,
  and the record that begins at T is not.

Recovery stops when it reads the first record past the target; when the archive ends
first, PostgreSQL stops with "recovery ended before configured recovery target was
reached". Then everything the files hold is before the target: a time target, or a
position the files reach, is replayed again without a target to its end; a position
beyond what the files hold is refused, naming where they end.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import time
from pathlib import Path

from catchup.cancel import CancelToken
from catchup.engines import LogTarget
from catchup.engines.postgres import restore
from catchup.engines.postgres.lsn import (
    WAL_SEGMENT,
    format_lsn,
    make_position,
    parse_lsn,
    split_position,
)
from catchup.engines.postgres.server import (
    PostgresServer,
    config_string,
    give_to_server_user,
    read_text,
    run_tool,
    select_value,
)
from catchup.engines.postgres.walfiles import parse_name, parse_waldump
from catchup.errors import ArchiveGapError, InstanceError

NOT_REACHED = "recovery ended before configured recovery target was reached"
BEFORE_CONSISTENT = "requested recovery stop point is before consistent recovery point"
REDO_DONE = re.compile(r"redo done at ([0-9A-F]+/[0-9A-F]+)")


def stage(log_dir: Path, staged: Path) -> None:
    """The archive's files where the server's restore_command reads them: hard links
    (copies across file systems), a short segment copied and padded to a whole one."""
    staged.mkdir(mode=0o700)
    for path in log_dir.iterdir():
        wal = parse_name(path.name)
        if wal is None or wal.name != path.name:
            continue
        target = staged / path.name
        if wal.is_segment and path.stat().st_size < WAL_SEGMENT:
            shutil.copyfile(path, target)
            with open(target, "r+b") as stream:
                stream.truncate(WAL_SEGMENT)  # sparse zeros: where replay finds the end
        else:
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)
    give_to_server_user(staged)


def restore_command(staged: Path) -> str:
    """The restore_command fetching WAL files by name from `staged`, as a setting's value."""
    archive = shlex.quote(str(staged))
    return config_string(f"test -f {archive}/%f && cp {archive}/%f %p")


def recovery_settings(staged: Path, target: LogTarget) -> str:
    lines = [
        "# Written by catchup: replay the log archive to a point in time, then promote.",
        f"restore_command = {restore_command(staged)}",
        "recovery_target_timeline = 'latest'",
        "recovery_target_action = 'promote'",
    ]
    if target.time is not None:
        lines += [
            f"recovery_target_time = '{target.time.isoformat(sep=' ')}'",
            "recovery_target_inclusive = on",
        ]
    elif target.position is not None:
        lsn, _ = split_position(target.position)
        lines += [f"recovery_target_lsn = '{format_lsn(lsn)}'", "recovery_target_inclusive = off"]
    return "".join(line + "\n" for line in lines)


def replay_log(
    server: PostgresServer,
    user: str,
    position: str,
    log_dir: Path,
    target: LogTarget,
    cancel: CancelToken,
) -> str:
    """Recover the restored backup at `position` through `log_dir` to `target`, promote,
    and return the position reached (`LSN@timeline` on the replayed timeline)."""
    data_dir = server.files.data_dir
    staged = server.files.root / "wal-archive"
    stage(log_dir, staged)
    restore.write_recovery(data_dir, recovery_settings(staged, target))
    server.write_config({})
    if not _recover(server, user, cancel):
        log = read_text(server.files.log)
        if BEFORE_CONSISTENT in log:
            raise ArchiveGapError(
                f"{target.describe()} is before the backup's position "
                f"{position.partition(':')[0]}: choose an older backup"
            )
        if NOT_REACHED not in log:
            raise InstanceError(f"replay of the log archive failed: {server.log_tail()}")
        if target.position is not None:
            covered = replayed_end(server, staged, log)
            wanted, _ = split_position(target.position)
            if covered is None or wanted > covered:
                where = format_lsn(covered) if covered is not None else "(unknown)"
                raise ArchiveGapError(
                    f"the archived WAL ends at {where}, before the target {format_lsn(wanted)}"
                )
        # Everything the files hold is before the target: replay it all.
        restore.write_recovery(data_dir, recovery_settings(staged, LogTarget()))
        if not _recover(server, user, cancel):
            raise InstanceError(f"replay of the log archive failed: {server.log_tail()}")
    reached = reached_position(data_dir)
    if reached is None:
        raise InstanceError("replay promoted the server but left no timeline history")
    return reached


def _recover(server: PostgresServer, user: str, cancel: CancelToken) -> bool:
    """Start the server and wait until it promoted (True) or exited (False)."""
    server.start()
    role: str | None = None
    while server.running:
        cancel.check()
        with contextlib.suppress(Exception):
            role = role or restore.superuser(server, user)
            with server.connect(role, timeout=2) as conn:
                if not select_value(conn, "SELECT pg_is_in_recovery()"):
                    return True
        time.sleep(0.1)
    return False


def replayed_end(server: PostgresServer, staged: Path, log: str) -> int | None:
    """Where the last record recovery replayed ends ("redo done at" gives its start)."""
    done = REDO_DONE.findall(log)
    if not done:
        return None
    start = parse_lsn(done[-1])
    segment = start // WAL_SEGMENT
    timelines = sorted(
        (
            wal.timeline
            for p in staged.iterdir()
            if (wal := parse_name(p.name)) and wal.is_segment and wal.segment == segment
        ),
        reverse=True,
    )
    for timeline in timelines:
        result = run_tool(
            [
                *server.tool("pg_waldump"),
                *("-p", str(staged), "-t", str(timeline), "-s", done[-1], "-n", "1"),
            ]
        )
        dumped = parse_waldump(result.stdout)
        if dumped.end is not None:
            return dumped.end
    return None


def reached_position(data_dir: Path) -> str | None:
    """Where a promoted server's data stands: the switch point its newest timeline's
    history file records (the end of the last replayed record), on the parent timeline."""
    newest = max(
        (
            wal
            for p in (data_dir / "pg_wal").iterdir()
            if (wal := parse_name(p.name)) and not wal.is_segment
        ),
        default=None,
    )
    if newest is None:
        return None
    lines = [
        line.split()
        for line in (data_dir / "pg_wal" / newest.name).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parent, switch = lines[-1][0], lines[-1][1]
    return make_position(parse_lsn(switch), int(parent), None)


def stop_for_restore(server: PostgresServer) -> str:
    """A clean shutdown (a checkpoint), without the recovery settings catchup wrote: a
    stock server starts on the data dir as it is. Returns how, for the operator."""
    server.stop()
    restore.write_recovery(server.files.data_dir, None)
    return (
        "Start it with: postgres -D <target dir> (chown -R postgres: it first). It was "
        "promoted at the target and shut down cleanly: no recovery is left to do. "
        "postgresql.conf, if the source kept it in its data dir, still has the source's "
        "port and socket settings: set them for this host."
    )
