"""Streaming a MySQL source's binary log into a spool directory for the archive.

`mysqlbinlog --read-from-remote-source=BINLOG-DUMP-GTIDS --raw --stop-never` is the
server's own tool for this: it connects as a replica (its own server id) and writes
the binlog files as the source sends them, one event at a time. Given a GTID set
(`--exclude-gtids`) and an empty file name, the source itself finds the first file
with a transaction outside the set and sends that file from its header on, leaving
out every transaction in the set: a resumed stream neither repeats nor skips one,
but its file of a given name lacks what an earlier stream wrote of it. Each stream
therefore prefixes its files with its start time (binlog.NAME, as MariaDB's does),
and the reader puts the excluded set under every file's state (binlog.py's floor).

Settled lengths end at whole transactions (binlog.py), so the archive never holds
half of one and the end of the archive is always a position to resume at.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from catchup.config import Config, Shard
from catchup.engines import Coverage, LogMark
from catchup.engines.environment import child_environment
from catchup.engines.mariadb.archive import STOP_SECONDS, archive_server_id, clear_spool
from catchup.engines.mysql.binaries import find_binary
from catchup.engines.mysql.binlog import BinlogFormatError, MySQLBinlogReader, archive_order
from catchup.engines.mysql.gtid import GtidSet, judge_coverage
from catchup.engines.mysql.server import option_file
from catchup.engines.mysql.source import MySQLSession, open_source
from catchup.engines.serverprocess import log_tail, private_directory
from catchup.engines.workdir import instance_dir
from catchup.errors import LogStreamError, SourceError
from catchup.files import write_private


class MySQLLogStream:
    """One run of mysqlbinlog and the files it writes (see the module docstring)."""

    def __init__(self, spool: Path, prefix: str, start: GtidSet, stderr: Path) -> None:
        self.spool = spool
        self.prefix = prefix  # "<stamp>-": this stream's files, and no other's
        self.begin = start
        self.stderr = stderr
        self.process: subprocess.Popen[bytes] | None = None
        self.readers: dict[str, MySQLBinlogReader] = {}
        self.forgotten: set[str] = set()
        self.forgotten_time: datetime | None = None

    @property
    def start(self) -> str:
        return str(self.begin)

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
                f"mysqlbinlog exited (code {code}): {log_tail(self.stderr, ('ERROR',))}"
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
                reader = self.readers[name] = MySQLBinlogReader(self.begin, time)
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
            again = MySQLBinlogReader(self.begin, reader.time_before)
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


def choose_start(session: MySQLSession, resume: str | None) -> GtidSet:
    """The GTID set the stream starts after: the archive's end when the source still
    holds everything past it, else a later set (the archiver records the gap)."""
    executed, purged = session.executed(), session.purged()
    if resume is None:
        return executed  # a new archive: from now on
    wanted = GtidSet.parse(resume)
    verdict = judge_coverage(wanted, executed, purged)
    if verdict.coverage is Coverage.COVERED:
        return wanted
    if verdict.coverage is Coverage.PURGED:
        # From the oldest binary log on: what it lacks of the resume set is skipped.
        return wanted.union(purged)
    raise LogStreamError(
        f"cannot continue the archive at {resume} on this source: {verdict.reason}; the source "
        "is not of the archived history (a failover that lost transactions?)"
    )


def taken_server_ids(session: MySQLSession) -> set[int]:
    """The source's own server id and its registered replicas' (mysqlbinlog does not
    register, so an earlier stream of this archiver is not among them)."""
    taken = {session.facts().server_id}
    with contextlib.suppress(SourceError):  # the account may not see them: only a hint
        taken |= {int(row[0]) for row in session.query("SHOW REPLICAS")}
    return taken


@contextlib.contextmanager
def stream_log(
    config: Config, shard: Shard, spool: Path, resume: str | None
) -> Iterator[MySQLLogStream]:
    with open_source(config, shard) as source:
        source.require_ready()
        start = choose_start(source.session, resume)
        server_id = archive_server_id(shard, taken_server_ids(source.session))
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
        command = [
            find_binary("mysqlbinlog", config.mysql.binaries),
            f"--defaults-extra-file={defaults}",
            "--read-from-remote-source=BINLOG-DUMP-GTIDS",
            "--raw",
            "--stop-never",
            f"--connection-server-id={server_id}",
            # caching_sha2_password without TLS needs the server's RSA key; with TLS
            # (ssl-mode PREFERRED, the default) it is not asked for.
            "--get-server-public-key",
            f"--result-file={spool}/{prefix}",
        ]
        if start:
            command.append(f"--exclude-gtids={start}")
        # An empty file name: the source finds the first file the stream needs.
        command.append("")
        if shutil.which("setpriv"):
            # If catchup is killed, the kernel stops the stream with it.
            command = ["setpriv", "--pdeathsig", "KILL", *command]
        stream = MySQLLogStream(spool, prefix, start, private / "stderr.log")
        stream.launch(command)
        try:
            yield stream
        finally:
            stream.stop()
