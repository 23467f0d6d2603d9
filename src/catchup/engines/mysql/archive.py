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
The stream itself is MariaDB's (mariadb/archive.py: BinlogStream, run_stream) with
this tool and this reader.

Settled lengths end at whole transactions (binlog.py), so the archive never holds
half of one and the end of the archive is always a position to resume at.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from catchup.config import Config, Shard
from catchup.engines import Coverage
from catchup.engines.mariadb.archive import BinlogStream, archive_server_id, run_stream
from catchup.engines.mysql.binaries import find_binary, program_version, version_numbers
from catchup.engines.mysql.binlog import MySQLBinlogReader
from catchup.engines.mysql.gtid import GtidSet, judge_coverage
from catchup.engines.mysql.source import MySQLSession, open_source
from catchup.errors import LogStreamError, SourceError


class MySQLLogStream(BinlogStream[GtidSet]):
    """One run of mysqlbinlog and the files it writes (see the module docstring)."""

    tool = "mysqlbinlog"

    def _reader(self, name: str, time: datetime | None) -> MySQLBinlogReader:
        return MySQLBinlogReader(self.begin, time)


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

    mysqlbinlog = find_binary("mysqlbinlog", config.mysql.binaries)
    # The option's name before 8.0.26.
    remote = "source" if version_numbers(program_version(mysqlbinlog)) >= (8, 0, 26) else "master"
    tool = [
        mysqlbinlog,
        f"--read-from-remote-{remote}=BINLOG-DUMP-GTIDS",
        f"--connection-server-id={server_id}",
        # caching_sha2_password without TLS needs the server's RSA key; with TLS
        # (ssl-mode PREFERRED, the default) it is not asked for.
        "--get-server-public-key",
    ]
    # An empty file name: the source finds the first file the stream needs.
    files = [f"--exclude-gtids={start}", ""] if start else [""]
    with run_stream(config, shard, spool, tool, files, MySQLLogStream, start) as stream:
        yield stream
