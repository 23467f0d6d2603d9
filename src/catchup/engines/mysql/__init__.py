"""The MySQL engine: GTID sets, replication with SOURCE_AUTO_POSITION, mysqld
instances. MariaDB and MySQL are one protocol family: the server process, the
session, the dump pipe and table checks are MariaDB's code (engines/mariadb/),
and these files hold only what differs.

source.py asks the source; bootstrap.py clones it or loads a dump into a fresh
instance; catchup.py replicates it to the checkpoint; restore.py and verify.py
start and check a restored backup; archive.py streams the binary log into the
archive (binlog.py reads its files) and replay.py replays it for a point-in-time
restore; instance.py ties an ephemeral server to its source.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from catchup.config import Config, Shard
from catchup.engines.mysql import archive, gtid, restore
from catchup.engines.mysql.archive import MySQLLogStream
from catchup.engines.mysql.instance import MySQLInstance, MySQLReplica, provision
from catchup.engines.mysql.source import MySQLSource, open_source


class MySQLEngine:
    name = "mysql"

    def open_source(self, config: Config, shard: Shard) -> AbstractContextManager[MySQLSource]:
        return open_source(config, shard)

    @contextlib.contextmanager
    def provision(
        self, config: Config, shard: Shard, source: MySQLSource
    ) -> Iterator[MySQLReplica]:
        with self.provision_for_checks(config, shard, source.server_version()) as instance:
            yield MySQLReplica(instance, source, config.stall_timeout_seconds)

    def provision_for_checks(
        self, config: Config, shard: Shard, server_version: str
    ) -> AbstractContextManager[MySQLInstance]:
        return provision(
            config.work_dir, f"{shard.keyspace}.{shard.shard}", config.mysql, server_version
        )

    def prepare_restored(self, data_dir: Path, position: str) -> str:
        return restore.prepare_restored(data_dir, position)

    def stream_log(
        self, config: Config, shard: Shard, spool: Path, resume: str | None
    ) -> AbstractContextManager[MySQLLogStream]:
        return archive.stream_log(config, shard, spool, resume)

    def compare_positions(self, a: str, b: str) -> int | None:
        return gtid.compare_positions(gtid.GtidSet.parse(a), gtid.GtidSet.parse(b))

    def parse_position(self, text: str) -> str:
        return str(gtid.parse_position(text))
