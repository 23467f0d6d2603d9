"""The MariaDB engine: GTID positions, binlog replication, mariadbd instances.

source.py asks the source; bootstrap.py loads a dump into a fresh instance;
catchup.py replicates it to the checkpoint; restore.py and verify.py start and
check a restored backup; archive.py streams the binlog into the archive (binlog.py
reads its files) and replay.py replays it for a point-in-time restore; instance.py
ties an ephemeral server to its source.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from catchup.config import Config, Shard
from catchup.engines.mariadb import archive, gtid, restore
from catchup.engines.mariadb.archive import MariaDBLogStream
from catchup.engines.mariadb.instance import MariaDBInstance, MariaDBReplica, provision
from catchup.engines.mariadb.source import MariaDBSource, open_source


class MariaDBEngine:
    name = "mariadb"

    def open_source(self, config: Config, shard: Shard) -> AbstractContextManager[MariaDBSource]:
        return open_source(config, shard)

    @contextlib.contextmanager
    def provision(
        self, config: Config, shard: Shard, source: MariaDBSource
    ) -> Iterator[MariaDBReplica]:
        # One mariadbd runs the data of every source version: no version to match.
        with self.provision_for_checks(config, shard, "") as instance:
            yield MariaDBReplica(instance, source, config.stall_timeout_seconds)

    def provision_for_checks(
        self, config: Config, shard: Shard, server_version: str
    ) -> AbstractContextManager[MariaDBInstance]:
        return provision(config.work_dir, f"{shard.keyspace}.{shard.shard}", config.mariadb)

    def prepare_restored(self, data_dir: Path, position: str) -> str:
        return restore.prepare_restored(data_dir, position)

    def stream_log(
        self, config: Config, shard: Shard, spool: Path, resume: str | None
    ) -> AbstractContextManager[MariaDBLogStream]:
        return archive.stream_log(config, shard, spool, resume)

    def compare_positions(self, a: str, b: str) -> int | None:
        return gtid.compare_positions(gtid.Position.parse(a), gtid.Position.parse(b))

    def parse_position(self, text: str) -> str:
        return str(gtid.parse_position(text))
