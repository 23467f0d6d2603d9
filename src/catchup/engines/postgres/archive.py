"""The source's WAL, streamed into a spool directory by `pg_receivewal` for the archiver.

pg_receivewal (the source major's) runs with the archive's own physical slot
(`catchup_archive_<shard>_<hash>`, distinct from the chain slots, which cycles create
and drop) and `--synchronous`, so the slot follows what is flushed to the spool and
the source keeps every segment the archive still needs. It connects through a
counting relay like a cycle's tools, with the password in a 0600 passfile in a
private directory (PGPASSFILE), never in argv or the environment, and `-n`: a lost
connection (a source restart) ends it, and the archiver starts it again.

pg_receivewal begins at the newest segment in its directory (at its start when it is
`.partial`, after it when complete), else at the slot's position. To resume at the
archive's end, the stream leaves a zero-filled `.partial` of that segment for it to
fill. Names carry the timeline; after a failover it follows the new timeline and
writes its `.history` file, which replay needs too.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from catchup.config import Config, Shard
from catchup.engines import LogMark
from catchup.engines.environment import child_environment
from catchup.engines.postgres.lsn import WAL_SEGMENT, format_lsn, make_position, split_position
from catchup.engines.postgres.server import find_binaries
from catchup.engines.postgres.source import (
    PostgresSession,
    PostgresSource,
    archive_slot_name,
    conninfo_value,
    open_source,
    pgpass_line,
)
from catchup.engines.postgres.walfiles import (
    PARTIAL,
    WalName,
    parse_name,
    parse_waldump,
    settled_length,
)
from catchup.engines.workdir import instance_dir
from catchup.errors import LogStreamError, SourceError
from catchup.files import write_private


def plan_start(
    resume: str | None, timeline: int, floor_lsn: int, spool: list[tuple[WalName, bool]]
) -> tuple[str, WalName | None]:
    """Where the stream begins, and the zero `.partial` to leave for pg_receivewal (None:
    the spool already makes it begin far enough).

    `floor_lsn` is the slot's restart_lsn (the source keeps that whole segment and all
    later ones); `spool` the segment files there, each with whether it is `.partial`.
    The stream begins exactly at `resume` when the source or the spool still holds
    everything from its segment on; else at the first segment it can have, later."""
    floor_seg = floor_lsn // WAL_SEGMENT
    have = {wal.segment for wal, _ in spool}

    def covered(first: int, end: int) -> bool:
        return all(segment in have for segment in range(first, end))

    if resume is not None:
        resume_lsn, resume_timeline = split_position(resume)
        want = resume_lsn // WAL_SEGMENT
        begin = max(want, floor_seg)
        exact = want >= floor_seg or covered(want, floor_seg)
        start = make_position(resume_lsn, resume_timeline, None) if exact else ""
        begin_timeline = resume_timeline if begin == want else timeline
    else:
        begin, start, begin_timeline = floor_seg, "", timeline
    if not start:
        start = make_position(begin * WAL_SEGMENT, timeline, None)
    newest = max(
        spool, key=lambda item: (item[0].segment, not item[1], item[0].timeline), default=None
    )
    spool_begin = None if newest is None else newest[0].segment + (0 if newest[1] else 1)
    if spool_begin is None or spool_begin < begin:
        return start, WalName(begin_timeline, True, begin)
    missing = [segment for segment in range(begin, spool_begin) if segment not in have]
    if missing:
        start = make_position((missing[-1] + 1) * WAL_SEGMENT, timeline, None)
    return start, None


class WalStream:
    """pg_receivewal into `spool`, and what its files hold (the LogStream protocol)."""

    def __init__(self, spool: Path, private: Path, waldump: Path, start: str) -> None:
        self.spool, self.private, self.waldump = spool, private, waldump
        self._start = start
        self.process: subprocess.Popen[bytes] | None = None
        self.settled: dict[str, int] = {}  # the last settled length of each `.partial`
        self.copies = private / "waldump"  # padded copies of the newest segments
        self.copies.mkdir(mode=0o700)
        self.copied: dict[str, int] = {}
        self.marked: tuple[WalName, int] | None = None
        self.end: int | None = None  # where the last whole record marked so far ends
        self.commit_time: datetime | None = (
            None  # and the commit time of the last commit record so far
        )
        self.timeline = split_position(start)[1]

    @property
    def start(self) -> str:
        return self._start

    def launch(self, command: list[str], env: dict[str, str]) -> None:
        with open(self.private / "pg_receivewal.err", "wb") as errors:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=errors, stderr=errors, env=env
            )

    def poll(self) -> list[tuple[str, int]]:
        if self.process is None or self.process.poll() is not None:
            raise LogStreamError(self.exit_reason())
        found: list[tuple[WalName, int]] = []
        for path in self.spool.iterdir():
            wal = parse_name(path.name)
            if wal is None:
                continue
            try:
                length = settled_length(path, self.settled.get(wal.name, 0))
            except FileNotFoundError:  # renamed from .partial meanwhile: the next poll has it
                continue
            if path.name.endswith(PARTIAL):
                self.settled[wal.name] = length
            found.append((wal, length))
        return [(wal.name, length) for wal, length in sorted(found)]

    def exit_reason(self) -> str:
        code = self.process.returncode if self.process else None
        errors = (self.private / "pg_receivewal.err").read_text(errors="replace").strip()
        lines = [line for line in errors.splitlines() if line.strip()][-3:]
        return f"pg_receivewal exited (code {code}): " + (" | ".join(lines) or "(no output)")

    def path(self, name: str) -> Path:
        complete = self.spool / name
        if complete.exists():
            return complete
        partial = self.spool / (name + PARTIAL)
        return partial if partial.exists() else complete

    def forget(self, name: str) -> None:
        for path in (self.spool / name, self.spool / (name + PARTIAL)):
            path.unlink(missing_ok=True)
        self.settled.pop(name, None)

    def mark(self, name: str, length: int) -> LogMark:
        wal = parse_name(name)
        if wal is None:
            raise ValueError(f"{name!r} is not a WAL file name")
        if wal.is_segment and length >= 64:  # a segment's long page header, at least
            if self.marked is not None and (wal, length) < self.marked:
                self.end, self.commit_time = None, None  # asked again about less: from scratch
                self.copied.clear()
            self._copy(wal, length)
            begin = self.end
            if begin is None or (begin // WAL_SEGMENT) not in self._copied_segments(wal):
                begin = wal.start_lsn  # pg_waldump finds the first record from there
            # The copy's zero padding stands for the trimmed zero tail as replay's padding
            # will: a record whose last bytes are zeros is whole (its CRC says so).
            end = wal.start_lsn + WAL_SEGMENT
            dumped = parse_waldump(self._dump(wal, begin, end))
            if dumped.end is None and begin < wal.start_lsn:
                # Nothing from the old end on, e.g. a segment left as zeros: from here.
                dumped = parse_waldump(self._dump(wal, wal.start_lsn, end))
            self.end = dumped.end if dumped.end is not None else self.end
            self.commit_time = dumped.commit_time or self.commit_time
            self.marked = (wal, length)
            self.timeline = wal.timeline
        position = make_position(self.end, self.timeline, None) if self.end is not None else ""
        return LogMark(position, self.commit_time)

    def _copied_segments(self, wal: WalName) -> set[int]:
        return {
            parsed.segment
            for name in self.copied
            if (parsed := parse_name(name)) is not None and parsed.timeline == wal.timeline
        }

    def _copy(self, wal: WalName, length: int) -> None:
        """Bring the copy of `wal` to its first `length` bytes, zero-padded to a whole
        segment (sparse), as pg_waldump needs; only new bytes are read. Copies older
        than the previous segment go."""
        target = self.copies / wal.name
        have = self.copied.get(wal.name, 0)
        with open(target, "r+b" if have else "wb") as out:  # not "a": writes go where seeked
            if length < have:
                have = 0
                out.truncate(0)
            with open(self.path(wal.name), "rb") as source:
                source.seek(have)
                out.seek(have)
                remaining = length - have
                while remaining > 0:
                    data = source.read(min(remaining, 1 << 20))
                    if not data:
                        break
                    out.write(data)
                    remaining -= len(data)
            out.truncate(WAL_SEGMENT)
        self.copied[wal.name] = length
        for name in list(self.copied):
            parsed = parse_name(name)
            if parsed is not None and (parsed.timeline, parsed.segment) < (
                wal.timeline,
                wal.segment - 1,
            ):
                (self.copies / name).unlink(missing_ok=True)
                del self.copied[name]

    def _dump(self, wal: WalName, begin: int, end: int) -> str:
        """pg_waldump's records from `begin` to `end`: with an end, it never waits for
        the next segment to appear (it retries a missing one for 5 s)."""
        result = subprocess.run(
            [
                str(self.waldump),
                "-p",
                str(self.copies),
                "-t",
                str(wal.timeline),
                "-s",
                format_lsn(begin),
                "-e",
                format_lsn(end),
            ],
            capture_output=True,
            text=True,
            check=False,
            env=child_environment(TZ="UTC"),  # commit times printed in UTC
        )
        return result.stdout

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)  # pg_receivewal's clean stop
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def prepare_slot(session: PostgresSession, name: str, wait: float = 15) -> int:
    """The archive's slot, created if missing or recreated if its WAL was lost; returns
    its restart_lsn. A slot in use (another archiver, or the walsender of a killed one
    not yet gone) is waited for, then refused."""
    deadline = time.monotonic() + wait
    while True:
        rows = session.query(
            "SELECT active, wal_status, restart_lsn FROM pg_replication_slots WHERE slot_name = %s",
            (name,),
        )
        if rows and rows[0][0]:
            if time.monotonic() > deadline:
                raise LogStreamError(
                    f"the archive's replication slot {name} is in use on the source: is "
                    "another archiver of this shard running?"
                )
            time.sleep(0.2)
            continue
        if rows and (rows[0][1] == "lost" or rows[0][2] is None):
            session.drop_slot(name)  # its WAL is gone: the archive records a gap
            rows = []
        if not rows:
            session.query("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
            continue
        return split_position(str(rows[0][2]))[0]


def spool_segments(spool: Path) -> list[tuple[WalName, bool]]:
    found = []
    for path in spool.iterdir():
        wal = parse_name(path.name)
        if wal is not None and wal.is_segment:
            found.append((wal, path.name.endswith(PARTIAL)))
    return found


def leave_partial(spool: Path, wal: WalName) -> None:
    """A zero-filled (sparse) segment-sized `.partial`: pg_receivewal begins there."""
    target = spool / (wal.name + PARTIAL)
    if not target.exists():
        with open(target, "wb") as out:
            out.truncate(WAL_SEGMENT)


@contextlib.contextmanager
def stream_log(
    config: Config, shard: Shard, spool: Path, resume: str | None
) -> Iterator[WalStream]:
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    # A 0700 dir for the passfile and pg_waldump's copies, removed on exit; after a
    # kill -9 the next run of catchup reaps it (engines/workdir.py).
    label = f"archive.{shard.keyspace}.{shard.shard}"
    with instance_dir(config.work_dir, label) as private, contextlib.ExitStack() as stack:
        stream = _open(stack, config, shard, spool, private, resume)
        try:
            yield stream
        finally:
            stream.stop()


def _open(
    stack: contextlib.ExitStack[bool | None],
    config: Config,
    shard: Shard,
    spool: Path,
    private: Path,
    resume: str | None,
) -> WalStream:
    try:  # an unreachable source or a missing privilege: the archiver retries
        source = stack.enter_context(open_source(config, shard))
        return _launch(config, shard, source, spool, private, resume)
    except SourceError as exc:
        raise LogStreamError(str(exc)) from None


def _launch(
    config: Config,
    shard: Shard,
    source: PostgresSource,
    spool: Path,
    private: Path,
    resume: str | None,
) -> WalStream:
    session = source.session
    facts = session.facts()
    binaries = find_binaries(facts.major, config.postgres.binaries)
    slot = archive_slot_name(shard)
    floor = prepare_slot(session, slot)
    start, partial = plan_start(resume, facts.timeline, floor, spool_segments(spool))
    if partial is not None:
        leave_partial(spool, partial)
    stream = WalStream(spool, private, binaries / "pg_waldump", start)
    passfile = private / "pgpass"
    write_private(passfile, pgpass_line(session.password or ""))
    conninfo = (
        f"host=127.0.0.1 port={source.relay.port} user={conninfo_value(session.user)} "
        "application_name=catchup_archive"
    )
    death = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
    stream.launch(
        [
            *death,  # the kernel ends it with catchup: it would hold the slot
            str(binaries / "pg_receivewal"),
            *("-D", str(spool), "-S", slot, "-d", conninfo),
            "--synchronous",  # the slot follows what is flushed to the spool
            "-n",  # a lost connection ends it: the archiver restarts it
            "-w",
        ],
        child_environment(PGPASSFILE=str(passfile)),
    )
    return stream
