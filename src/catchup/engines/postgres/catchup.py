"""Catching a restored data dir up to exactly the checkpoint T.

The data dir starts as a standby streaming from the source (through the relay,
not through the slot) with `recovery_target_lsn = T` and
`recovery_target_action = shutdown`: the postmaster exits by itself at T. The
source's postgresql.auto.conf is neutralised first (autoconf.py). Afterwards
only the WAL from the last restartpoint's REDO to minRecoveryPoint is kept.

With the log archive's files, staged as for a point-in-time restore (replay.py),
a `restore_command` feeds the standby from them first. When they reach T, it
gets no `primary_conninfo` at all: the source sends no WAL, and the standby is
stopped once replay passes T (the record after T that recovery stops at may be
missing from the archive), as for a standby source. Else it streams what they
lack; PostgreSQL then asks from the start of the segment where the files end,
so the source resends that segment's first part.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

from catchup.cancel import CancelToken
from catchup.config import Shard
from catchup.engines import StepProgress
from catchup.engines.postgres import autoconf, basebackup, replay
from catchup.engines.postgres.lsn import (
    WAL_SEGMENT,
    format_lsn,
    make_position,
    parse_lsn,
    position_slot,
    segment_name,
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
from catchup.engines.postgres.source import PostgresSource, conninfo_value
from catchup.engines.postgres.walfiles import parse_name, parse_waldump
from catchup.errors import CatchUpFailedError, CatchUpStalledError, InstanceError

WAL_GONE = "has already been removed"
POLL_SECONDS = 0.2


def catch_up(
    server: PostgresServer,
    user: str,
    source: PostgresSource,
    shard: Shard,
    checkpoint: str,
    stall_timeout: float,
    cancel: CancelToken,
    progress: StepProgress,
    archived: Path | None = None,
) -> str:
    """Replay the WAL up to the checkpoint, from `archived` (the log archive's files)
    first, then from the source; return the position reached. `user` is the role the
    instance lets in over its private socket."""
    data_dir = server.files.data_dir
    target, timeline = split_position(checkpoint)
    from_standby = source.session.standby
    refuse_new_tablespaces(data_dir, source, shard)
    autoconf.sanitize_file(data_dir)  # its primary_conninfo would win over ours
    staged = None
    if archived is not None:
        staged = server.files.root / "wal-archive"
        replay.stage(archived, staged)
    # The archive reaches T: replay stops there, with nothing from the source.
    archive_only = staged is not None and (archive_end(server, staged, timeline) or 0) >= target
    conninfo = (
        f"host=127.0.0.1 port={source.relay.port} user={conninfo_value(source.session.user)} "
        f"password={conninfo_value(source.session.password or '')} application_name=catchup"
    )
    server.write_config(
        {
            **source.session.standby_requirements(),
            "primary_conninfo": "''" if archive_only else config_string(conninfo),
            "recovery_target_lsn": f"'{format_lsn(target)}'",
            "recovery_target_action": "'shutdown'",
            "recovery_target_inclusive": "on",
            "restore_command": replay.restore_command(staged) if staged else "''",
        }
    )
    (data_dir / "recovery.signal").unlink(missing_ok=True)
    (data_dir / "standby.signal").touch()
    give_to_server_user(data_dir / "standby.signal")
    server.start()
    # A standby source's T is its replay position, with no record after it to stop at;
    # the archive may end right at T too: stop once replay is there.
    stop_when_passed = from_standby or archive_only
    wait_for_target(
        server,
        user,
        target,
        stall_timeout,
        cancel,
        progress,
        stop_when_passed,
        source.session.password,
    )
    assert_reached(server, target)
    refuse_outside_tablespaces(data_dir, shard)
    if stop_when_passed:
        return make_position(last_record_start(server), timeline, position_slot(checkpoint))
    return checkpoint


def archive_end(server: PostgresServer, staged: Path, timeline: int) -> int | None:
    """Where the last whole record of the staged archive's newest segment on `timeline`
    ends (None: it has none)."""
    segments = [
        wal.segment
        for path in staged.iterdir()
        if (wal := parse_name(path.name)) and wal.is_segment and wal.timeline == timeline
    ]
    if not segments:
        return None
    last = max(segments)
    # As this user, not the server's: the instance dir is not the server's until its
    # config is written, and reading the files needs no more.
    result = run_tool(
        [
            str(server.binaries / "pg_waldump"),
            *("-p", str(staged), "-t", str(timeline)),
            *("-s", format_lsn(last * WAL_SEGMENT), "-e", format_lsn((last + 1) * WAL_SEGMENT)),
        ]
    )
    return parse_waldump(result.stdout).end


def refuse_new_tablespaces(data_dir: Path, source: PostgresSource, shard: Shard) -> None:
    """A tablespace created on the source after this chain's bootstrap: its WAL names
    an absolute path of the source's host, which replay would create or write to on
    this host. Refuse before starting; a new chain carries it inside the data dir."""
    # An empty directory is what versions before in-place tablespaces stored for the
    # symlink: the tablespace's files are missing from that backup.
    inside = [
        oid
        for oid, in_place in basebackup.tablespace_dirs(data_dir).items()
        if in_place and any((data_dir / "pg_tblspc" / oid).iterdir())
    ]
    new = [(oid, name) for oid, name in source.session.tablespaces() if oid not in inside]
    if new:
        names = ", ".join(f"{name} (oid {oid})" for oid, name in new)
        raise CatchUpFailedError(
            f"shard {shard.name}: the source has tablespace {names} that the newest "
            "backup lacks (created after its bootstrap, or backed up by a version that "
            "left tablespaces out); replaying it would write to the source's path on this "
            f"host. Start a new chain: `catchup backup --bootstrap {shard.name}`"
        )


def refuse_outside_tablespaces(data_dir: Path, shard: Shard) -> None:
    """Belt and braces for a tablespace created between the check above and T."""
    links = [oid for oid, inside in basebackup.tablespace_dirs(data_dir).items() if not inside]
    if links:
        targets = ", ".join(
            f"{oid} -> {os.readlink(data_dir / 'pg_tblspc' / oid)}" for oid in links
        )
        raise CatchUpFailedError(
            f"shard {shard.name}: replay created tablespaces outside the instance "
            f"({targets}); remove those directories if nothing else uses them, and start a "
            f"new chain: `catchup backup --bootstrap {shard.name}`"
        )


def wait_for_target(
    server: PostgresServer,
    user: str,
    target: int,
    stall_timeout: float,
    cancel: CancelToken,
    progress: StepProgress,
    stop_when_passed: bool,
    secret: str | None,
) -> None:
    start_lsn, last_lsn, last_change = None, None, time.monotonic()
    while server.running:
        cancel.check()
        log = read_text(server.files.log)
        if WAL_GONE in log:
            server.kill()
            raise CatchUpFailedError(
                'the source no longer has the WAL after the backup ("requested WAL segment '
                'has already been removed"); bootstrap again with `catchup backup '
                "--bootstrap`"
            )
        replayed = replayed_lsn(server, user)
        if stop_when_passed and replayed is not None and replayed >= target:
            server.stop()  # a restartpoint; minRecoveryPoint is where replay stood
            break
        if replayed is not None:
            start_lsn = start_lsn or replayed
            progress(max(0, replayed - start_lsn), max(1, target - start_lsn))
            if replayed != last_lsn:
                last_lsn, last_change = replayed, time.monotonic()
        if time.monotonic() - last_change > stall_timeout:
            server.kill()
            raise CatchUpStalledError(
                f"catch-up stalled: no WAL replayed for {stall_timeout:.0f}"
                f"s at {format_lsn(last_lsn or 0)}; check that the source is reachable; "
                f"the standby's log: {stall_lines(server.files.log, secret)}"
            )
        time.sleep(POLL_SECONDS)
    code = server.exit_code
    if code != 0:
        raise InstanceError(
            f"the ephemeral postgres died (exit code {code}) during catch-up: {server.log_tail()}"
        )


def replayed_lsn(server: PostgresServer, user: str) -> int | None:
    with contextlib.suppress(Exception), server.connect(user, timeout=1) as conn:
        value = select_value(conn, "SELECT pg_last_wal_replay_lsn()")
        return parse_lsn(str(value)) if value else None
    return None


def assert_reached(server: PostgresServer, target: int) -> None:
    control = server.controldata()
    state = control.get("Database cluster state", "")
    reached = parse_lsn(control.get("Minimum recovery ending location", "0/0"))
    if state != "shut down in recovery" or reached < target:
        raise CatchUpFailedError(
            f"the standby stopped in state '{state}' at {format_lsn(reached)}, not at the "
            f"target {format_lsn(target)}; see its log: {server.log_tail()}"
        )


def last_record_start(server: PostgresServer) -> int:
    """Where the last replayed record starts: as a recovery target, it makes a restore
    stop exactly where this standby stopped."""
    control = server.controldata()
    end = control["Minimum recovery ending location"]
    result = run_tool(
        [
            *server.tool("pg_waldump"),
            "-p",
            str(server.files.data_dir / "pg_wal"),
            "-s",
            control["Latest checkpoint's REDO location"],
            "-e",
            end,
        ]
    )
    starts = re.findall(r"lsn: ([0-9A-F]+/[0-9A-F]+)", result.stdout)
    if not starts:
        raise CatchUpFailedError(f"cannot find the last replayed record before {end}")
    return parse_lsn(starts[-1])


def keep_restore_wal(server: PostgresServer) -> None:
    """The standby shut down at the target: keep only the WAL a restore needs."""
    data_dir = server.files.data_dir
    control = server.controldata()
    timeline = int(control["Latest checkpoint's TimeLineID"])
    first = segment_name(timeline, parse_lsn(control["Latest checkpoint's REDO location"]))
    last = segment_name(timeline, parse_lsn(control["Minimum recovery ending location"]))
    for wal in (data_dir / "pg_wal").iterdir():
        if re.fullmatch(r"[0-9A-F]{24}", wal.name) and not first <= wal.name <= last:
            wal.unlink()
    (data_dir / "standby.signal").unlink(missing_ok=True)


def stall_lines(log: Path, secret: str | None, count: int = 4) -> str:
    """The lines of a standby's log that say why it replays nothing, with `secret` (the
    replication password) masked should a line ever echo it."""
    markers = ("FATAL", "ERROR", "could not", "started streaming")
    lines = [line for line in read_text(log).splitlines() if any(m in line for m in markers)]
    quoted = " | ".join(lines[-count:]) or "(nothing relevant in the log)"
    return quoted.replace(secret, "***") if secret else quoted
