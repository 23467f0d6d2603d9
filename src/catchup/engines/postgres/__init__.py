"""The PostgreSQL engine: physical standby catch-up to a target LSN.

source.py asks the source and holds its slots; bootstrap.py takes a base
backup (basebackup.py unpacks it); catchup.py replays WAL to the checkpoint as
a standby, from the log archive first (autoconf.py neutralises the source's
settings); restore.py and verify.py recover and check a restored backup;
instance.py ties an ephemeral server to its source. archive.py streams the WAL
for the log archive (walfiles.py reads its files) and replay.py replays it to a
point in time. The slot is advanced only after the new backup's manifest is
committed (`PostgresSource.release`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from catchup.config import Config, Shard
from catchup.engines.postgres import archive, lsn, restore
from catchup.engines.postgres.instance import PostgresInstance, PostgresReplica, provision
from catchup.engines.postgres.source import PostgresSource, open_source


class PostgresEngine:
    name = "postgres"

    def open_source(self, config: Config, shard: Shard) -> AbstractContextManager[PostgresSource]:
        return open_source(config, shard)

    @contextlib.contextmanager
    def provision(
        self, config: Config, shard: Shard, source: PostgresSource
    ) -> Iterator[PostgresReplica]:
        # Right after the precheck: the WAL another slot held for it is held by the
        # chain's own (new) slot before the restore, however long that takes.
        source.take_over()
        with provision(config, shard, source.server_version()) as instance:
            yield PostgresReplica(instance, source, shard, config.stall_timeout_seconds)

    def provision_for_checks(
        self, config: Config, shard: Shard, server_version: str
    ) -> AbstractContextManager[PostgresInstance]:
        return provision(config, shard, server_version)

    def prepare_restored(self, data_dir: Path, position: str) -> str:
        return restore.prepare_restored(data_dir, position)

    def stream_log(
        self, config: Config, shard: Shard, spool: Path, resume: str | None
    ) -> AbstractContextManager[archive.WalStream]:
        return archive.stream_log(config, shard, spool, resume)

    def compare_positions(self, a: str, b: str) -> int | None:
        return lsn.compare_positions(a, b)

    def parse_position(self, text: str) -> str:
        return lsn.parse_position(text)
