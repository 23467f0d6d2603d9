"""The ephemeral PostgreSQL instance of one cycle or one verification:
provisioned under the work dir (engines/workdir.py) with the binaries of the
data's major version, always destroyed. A cycle's instance is a
`PostgresReplica`: the instance together with the source it copies.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from catchup.cancel import CancelToken
from catchup.config import Config, PostgresSettings, Shard
from catchup.engines import Finding, LogTarget, StepProgress
from catchup.engines.postgres import bootstrap, catchup, replay, restore, verify
from catchup.engines.postgres.server import (
    PostgresFiles,
    PostgresServer,
    find_binaries,
    run_tool,
)
from catchup.engines.postgres.source import PostgresSource
from catchup.engines.replica import InstanceReplica
from catchup.engines.workdir import instance_dir, record_server
from catchup.errors import InstanceError

# Runtime files of a stopped data dir that must not travel with a backup.
NOT_ARCHIVED = re.compile(
    r"^(postmaster\.(pid|opts)|standby\.signal|recovery\.signal|backup_label\.old"
    r"|pg_wal/archive_status/.*|pg_replslot/.*|pg_stat_tmp/.*|log/.*|tablespace_map)$"
)


class PostgresInstance:
    """One ephemeral postgres; `user` is the role it lets in over its private socket."""

    def __init__(self, root: Path, binaries: Path, user: str, settings: PostgresSettings) -> None:
        self.files = PostgresFiles(root)
        self.user = user
        self.server = PostgresServer(
            self.files,
            binaries,
            port=5432,
            settings={
                "shared_buffers": f"{settings.shared_buffers_mb}MB",
                "fsync": "off",  # an ephemeral instance: durability comes from the archive
                "full_page_writes": "off",
                "wal_recycle": "off",
                "hot_standby": "on",
                "archive_mode": "off",
                # Tablespaces live in the data dir (basebackup.py); recovery refuses
                # directories in pg_tblspc without this.
                "allow_in_place_tablespaces": "on",
            },
            roles=(user,),
        )
        record_server(root, self.files.data_dir / "postmaster.pid", self.files.data_dir)

    @property
    def data_dir(self) -> Path:
        return self.files.data_dir

    def server_version(self) -> str:
        out = run_tool([*self.server.tool("postgres"), "--version"])
        if out.returncode != 0:
            raise InstanceError(f"postgres --version failed: {out.stderr.strip()}")
        return out.stdout.strip()

    def open_for_checks(self, position: str, cancel: CancelToken) -> None:
        restore.open_for_checks(self.server, self.user, position, cancel)

    def verify(self, expected_position: str) -> list[Finding]:
        return verify.verify(self.server, self.user, expected_position)

    def replay_log(
        self, position: str, log_dir: Path, target: LogTarget, cancel: CancelToken
    ) -> str:
        return replay.replay_log(self.server, self.user, position, log_dir, target, cancel)

    def stop_for_restore(self) -> str:
        return replay.stop_for_restore(self.server)

    def table_checksums(self) -> dict[str, int | None]:
        with self.server.connect(restore.superuser(self.server, self.user)) as conn:
            return verify.table_checksums(conn)


@contextlib.contextmanager
def provision(config: Config, shard: Shard, server_version: str) -> Iterator[PostgresInstance]:
    """An instance with the binaries of `server_version`'s major version."""
    found = re.search(r"PostgreSQL\)? (\d+)", server_version)
    if found is None:
        raise InstanceError(f"cannot tell the PostgreSQL major version of {server_version!r}")
    binaries = find_binaries(int(found.group(1)), config.postgres.binaries)
    label = f"{shard.keyspace}.{shard.shard}"
    with instance_dir(config.work_dir, label) as root:
        user = config.credentials_for(shard).user
        instance = PostgresInstance(root, binaries, user, config.postgres)
        try:
            yield instance
        finally:
            instance.server.kill()
            if not instance.files.sockets.is_relative_to(root):
                shutil.rmtree(instance.files.sockets, ignore_errors=True)


class PostgresReplica(InstanceReplica[PostgresServer, PostgresFiles, PostgresSource]):
    """A cycle's instance, fed by its source: bootstrapped from a base backup or
    restored, then caught up as a standby of the source."""

    instance: PostgresInstance

    def __init__(
        self, instance: PostgresInstance, source: PostgresSource, shard: Shard, stall_timeout: float
    ) -> None:
        super().__init__(instance, source, stall_timeout)
        self.shard = shard

    def bootstrap(self, cancel: CancelToken, progress: StepProgress) -> None:
        bootstrap.bootstrap(self.server, self.source, cancel, progress)

    def start(self, cancel: CancelToken) -> None:
        """Nothing to do yet: a standby needs its recovery target before it starts."""

    def catch_up(
        self,
        checkpoint: str,
        cancel: CancelToken,
        progress: StepProgress,
        archived: Path | None = None,
    ) -> str:
        return catchup.catch_up(
            self.server,
            self.instance.user,
            self.source,
            self.shard,
            checkpoint,
            self.stall_timeout,
            cancel,
            progress,
            archived,
        )

    def stop_for_archive(self) -> None:
        """Already shut down at the target: keep only the WAL a restore needs."""
        catchup.keep_restore_wal(self.server)

    def is_archived(self, relative_path: str) -> bool:
        return not NOT_ARCHIVED.match(relative_path)
