"""Streaming a MariaDB source's binlog into a spool directory for the archive.

`mariadb-binlog --read-from-remote-server --raw --stop-never` is the server's own
tool for this: it connects as a replica (its own server id) and writes the binlog
files as the source sends them, one event at a time, flushed. Started at a GTID
position (`--start-position=<GTID>`, remote GTID mode), it writes the file holding
that position from its header straight to the next transaction, with the position
as a second GTID list: so a resumed stream neither repeats nor skips a transaction,
but its file of a given name differs from the one an earlier stream wrote. Each
stream therefore prefixes its files with its start time (binlog.NAME).

Settled lengths end at whole transactions (binlog.py), so the archive never holds
half of one and the end of the archive is always a position to resume at.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from catchup.config import Config, Shard
from catchup.engines import Coverage, LogMark
from catchup.engines.environment import child_environment
from catchup.engines.mariadb.binaries import find_binary
from catchup.engines.mariadb.binlog import (
    NAME,
    BinlogFile,
    BinlogFormatError,
    BinlogReader,
    P,
    archive_order,
)
from catchup.engines.mariadb.gtid import Position, judge_coverage
from catchup.engines.mariadb.instance import SERVER_ID_RANGE, random_server_id
from catchup.engines.mariadb.server import option_file
from catchup.engines.mariadb.source import MariaDBSession, open_source
from catchup.engines.serverprocess import log_tail, private_directory
from catchup.engines.workdir import instance_dir
from catchup.errors import LogStreamError
from catchup.files import write_private

STOP_SECONDS = 10

T = TypeVar("T", bound="BinlogStream[Any]")  # the engine's stream


def archive_server_id(shard: Shard, taken: set[int]) -> int:
    """The same id for every stream of a shard, so that a restarted archiver replaces its
    predecessor's connection on the source instead of adding one; random if it is taken."""
    low, high = SERVER_ID_RANGE
    digest = int.from_bytes(hashlib.sha256(f"archive {shard.name}".encode()).digest()[:8], "big")
    candidate = low + digest % (high - low + 1)
    return candidate if candidate not in taken else random_server_id(taken)


class BinlogStream(Generic[P]):
    """One run of the engine's binlog tool and the files it writes (see the module
    docstring), MariaDB's or MySQL's: a subclass names the tool and makes the reader of
    each file (`_reader`), which says where its transactions end."""

    tool: ClassVar[str]  # the program, as its exit is reported

    def __init__(self, spool: Path, prefix: str, start: P, stderr: Path) -> None:
        self.spool = spool
        self.prefix = prefix  # "<stamp>-": this stream's files, and no other's
        self.begin = start
        self.stderr = stderr
        self.process: subprocess.Popen[bytes] | None = None
        self.readers: dict[str, BinlogFile[P]] = {}
        self.forgotten: set[str] = set()
        self.forgotten_time: datetime | None = None

    @property
    def start(self) -> str:
        return str(self.begin)

    def _reader(self, name: str, time: datetime | None) -> BinlogFile[P]:
        """A reader of spool file `name` from its start; `time`: the last commit before it."""
        raise NotImplementedError

    def launch(self, command: list[str]) -> None:
        with open(self.stderr, "ab") as errors:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,
                env=child_environment(TZ="UTC"),
            )

    def poll(self) -> list[tuple[str, int]]:
        if self.process is None or self.process.poll() is not None:
            code = self.process.returncode if self.process else None
            raise LogStreamError(
                f"{self.tool} exited (code {code}): {log_tail(self.stderr, ('ERROR',))}"
            )
        names = sorted(
            (p.name for p in self.spool.iterdir() if p.name.startswith(self.prefix)),
            key=archive_order,
        )
        settled = []
        time = self.forgotten_time
        for name in names:
            if name in self.forgotten:
                continue
            reader = self.readers.get(name)
            if reader is None:
                reader = self.readers[name] = self._reader(name, time)
            try:
                reader.read(self.spool / name)
            except BinlogFormatError as exc:
                raise LogStreamError(f"spool file {name}: {exc}") from None
            settled.append((name, reader.settled))
            time = reader.time
        return settled

    def path(self, name: str) -> Path:
        return self.spool / name

    def mark(self, name: str, length: int) -> LogMark:
        reader = self.readers.get(name)
        boundary = reader.at(length) if reader else None
        if boundary is None and reader is not None and reader.boundaries:
            # A shorter prefix than asked before (its boundaries are forgotten): read again.
            again = self._reader(name, reader.time_before)
            again.read(self.spool / name)
            boundary = again.at(length)
        if boundary is None:
            return LogMark("", None)
        return LogMark(str(boundary.position), boundary.time)

    def forget(self, name: str) -> None:
        (self.spool / name).unlink(missing_ok=True)
        reader = self.readers.pop(name, None)
        if reader is not None:
            self.forgotten_time = reader.time
        self.forgotten.add(name)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class MariaDBLogStream(BinlogStream[Position]):
    """One run of mariadb-binlog and the files it writes (see the module docstring)."""

    tool = "mariadb-binlog"

    def __init__(self, spool: Path, prefix: str, start: Position, stderr: Path) -> None:
        super().__init__(spool, prefix, start, stderr)
        self.first: str | None = None

    def _reader(self, name: str, time: datetime | None) -> BinlogReader:
        self.first = self.first or name
        # The stream's first file holds its start position as a second GTID list, after
        # the file's own (earlier) one: its state is never below the start.
        return BinlogReader(self.begin if name == self.first else None, time)


def choose_start(session: MariaDBSession, resume: str | None) -> tuple[Position, str | None]:
    """Where the stream starts, and the binlog file to copy from its first byte when it
    cannot start at a GTID (None: at the GTID position)."""
    current = session.checkpoint()
    if resume is None:
        if current:
            return current, None
        return _oldest(session)  # nothing logged yet: from the very start
    wanted = Position.parse(resume)
    if not wanted:
        return _oldest(session)  # an archive of nothing yet: from the source's first binlog
    verdict = judge_coverage(
        wanted, current, session.oldest_binlog_state(), session.binlog_history()
    )
    if verdict.coverage is Coverage.COVERED:
        return wanted, None
    if verdict.coverage is Coverage.PURGED:
        return _oldest(session)  # a later start: the archiver records the gap
    raise LogStreamError(
        f"cannot continue the archive at {resume} on this source: {verdict.reason}; the source "
        "is not of the archived history (a failover that lost transactions?)"
    )


def _oldest(session: MariaDBSession) -> tuple[Position, str]:
    logs = session.query("SHOW BINARY LOGS")
    return session.oldest_binlog_state(), str(logs[0][0])


def clear_spool(spool: Path) -> None:
    """Files of an earlier stream: the archive holds what it needs of them, and this
    stream sends the rest again from the archive's end."""
    for path in spool.iterdir():
        if NAME.match(path.name):
            path.unlink()


@contextlib.contextmanager
def stream_log(
    config: Config, shard: Shard, spool: Path, resume: str | None
) -> Iterator[MariaDBLogStream]:
    with open_source(config, shard) as source:
        source.require_ready()
        start, first_file = choose_start(source.session, resume)
        server_id = archive_server_id(shard, source.known_server_ids())

    options = ["--read-from-remote-server", f"--stop-never-slave-server-id={server_id}"]
    # The file name is required but unused at a GTID: the source finds the GTID's file.
    files = [f"--start-position={start}", "binlog.000001"] if first_file is None else [first_file]
    binlog = find_binary("mariadb-binlog", config.mariadb.binaries)
    with run_stream(
        config, shard, spool, [binlog, *options], files, MariaDBLogStream, start
    ) as stream:
        yield stream


@contextlib.contextmanager
def run_stream(
    config: Config,
    shard: Shard,
    spool: Path,
    tool: list[str],
    files: list[str],
    kind: Callable[[Path, str, P, Path], T],
    start: P,
) -> Iterator[T]:
    """Either engine's stream of `kind` from `start`, run and stopped: a fresh spool, the
    source's login in a private option file, and `tool` (the program and its engine's
    options) writing raw files there forever, from `files` (where the stream starts)."""
    user, password = config.login(shard)
    spool.mkdir(parents=True, exist_ok=True)
    private_directory(spool)
    clear_spool(spool)
    label = f"archive-{shard.keyspace}.{shard.shard}"
    with instance_dir(config.work_dir, label) as private:
        defaults = private / "source.cnf"
        where = (
            {"host": shard.host or "", "port": str(shard.port), "protocol": "TCP"}
            if shard.source
            else {"socket": str(shard.socket)}
        )
        write_private(defaults, option_file("client", user=user, password=password or "", **where))
        prefix = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ") + "-"
        program, *options = tool
        # The option file comes first, as both tools require.
        command = [program, f"--defaults-extra-file={defaults}", *options]
        command += ["--raw", "--stop-never", f"--result-file={spool}/{prefix}", *files]
        if shutil.which("setpriv"):
            # If catchup is killed, the kernel stops the stream with it.
            command = ["setpriv", "--pdeathsig", "KILL", *command]
        stream = kind(spool, prefix, start, private / "stderr.log")
        stream.launch(command)
        try:
            yield stream
        finally:
            stream.stop()
