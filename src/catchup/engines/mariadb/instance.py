"""The ephemeral MariaDB instance of one cycle or one verification: provisioned
under the work dir (engines/workdir.py), always destroyed — on success, on
error, on cancellation, and (through the reaper) even after catchup itself was
killed. A cycle's instance is a `MariaDBReplica`: the instance together with
the source it bootstraps and catches up from.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import pymysql.cursors

from catchup.cancel import CancelToken
from catchup.config import MariaDBSettings
from catchup.engines import Finding, LogTarget, StepProgress
from catchup.engines.mariadb import bootstrap, catchup, replay, restore, verify
from catchup.engines.mariadb.gtid import Position
from catchup.engines.mariadb.server import ADMIN_USER, MariaDBServer, ServerFiles, select_value
from catchup.engines.mariadb.source import MariaDBSource
from catchup.engines.replica import InstanceReplica
from catchup.engines.workdir import instance_dir, record_server
from catchup.errors import InstanceError

# A replica's server id must differ from the source's, from every server in the
# source's binlog history (a replica silently skips events that carry its own id)
# and from every other replica of the source (the source kills the older dump
# thread of two with one id). Instances on other hosts and pods cannot be asked,
# so ids are drawn at random from the top half of the range, far from the small
# ids sources use, and checked against what the source knows before each catch-up.
SERVER_ID_RANGE = (2**31, 2**32 - 1)
DRAWS = 100
RANDOM = secrets.SystemRandom()
MIB = 1024 * 1024

# Files of a stopped data dir that must not travel with a backup: replication
# state pointing at the source (with its password) and runtime leftovers.
NOT_ARCHIVED = re.compile(
    r"^(relay-bin\.\d+|relay-bin\.index|master.*\.info|relay-log.*\.info|multi-master\.info"
    r"|.*\.pid|.*\.sock)$"
)

FAST_REPLICA_OPTIONS = [
    "--skip-slave-start",
    "--relay-log=relay-bin",
    "--gtid-strict-mode=1",
    "--skip-log-bin",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--sync-master-info=0",
    "--sync-relay-log=0",
    "--sync-relay-log-info=0",
    "--innodb-fast-shutdown=1",
    # OFF, not DISABLED: events do not run here, but their DDL (in the dump, in the
    # binlog) is accepted; DISABLED refuses it with error 1577.
    "--event-scheduler=OFF",
]


def random_server_id(taken: Collection[int] = ()) -> int:
    """A random replica server id that is not in `taken`."""
    for _ in range(DRAWS):
        candidate = RANDOM.randint(*SERVER_ID_RANGE)
        if candidate not in taken:
            return candidate
    raise InstanceError(f"no free server id in {DRAWS} random draws; {len(taken)} are taken")


class MariaDBInstance:
    """One ephemeral server. Its data dir is `files.data_dir`."""

    def __init__(self, root: Path, server_id: int, settings: MariaDBSettings) -> None:
        self.files = ServerFiles(root)
        self.settings = settings
        self.server = MariaDBServer(
            self.files,
            server_id,
            [
                *FAST_REPLICA_OPTIONS,
                f"--innodb-buffer-pool-size={settings.buffer_pool_mb}M",
                f"--innodb-log-file-size={settings.redo_log_mb}M",
                f"--slave-compressed-protocol={'ON' if settings.compress_replication else 'OFF'}",
                f"--slave-parallel-threads={settings.replica_parallel_threads}",
                "--slave-parallel-mode=optimistic",  # only used with threads > 0
            ],
            binaries=settings.binaries,
        )

    @property
    def data_dir(self) -> Path:
        return self.files.data_dir

    def server_version(self) -> str:
        with self.server.connect() as conn, conn.cursor() as cursor:
            return str(select_value(cursor, "SELECT @@version"))

    def open_for_checks(self, position: str, cancel: CancelToken) -> None:
        restore.open_for_checks(self.server, cancel)

    def verify(self, expected_position: str) -> list[Finding]:
        return verify.verify(self.server, expected_position)

    def table_checksums(self) -> dict[str, int | None]:
        with self.server.connect() as conn, conn.cursor() as cursor:
            return verify.table_checksums(cursor)

    def replay_log(
        self, position: str, log_dir: Path, target: LogTarget, cancel: CancelToken
    ) -> str:
        return replay.replay_log(self.server, position, log_dir, target, cancel)

    def stop_for_restore(self) -> str:
        return replay.stop_for_restore(self.server)

    def destroy(self) -> None:
        self.server.kill()
        shutil.rmtree(self.files.root, ignore_errors=True)
        if not self.files.socket.is_relative_to(self.files.root):
            shutil.rmtree(self.files.socket.parent, ignore_errors=True)


@contextlib.contextmanager
def provision(work_dir: Path, label: str, settings: MariaDBSettings) -> Iterator[MariaDBInstance]:
    with instance_dir(work_dir, label) as root:
        instance = MariaDBInstance(root, random_server_id(), settings)
        record_server(root, instance.files.pid_file, instance.data_dir)
        try:
            yield instance
        finally:
            instance.destroy()


class MariaDBReplica(InstanceReplica[MariaDBServer, ServerFiles, MariaDBSource]):
    """A cycle's instance, fed by its source: bootstrapped from a dump or restored,
    then caught up through the source's binlog."""

    instance: MariaDBInstance

    def bootstrap(self, cancel: CancelToken, progress: StepProgress) -> None:
        bootstrap.bootstrap(self.server, self.source, cancel, progress)

    def start(self, cancel: CancelToken) -> None:
        self.server.start(cancel=cancel)

    def catch_up(
        self,
        checkpoint: str,
        cancel: CancelToken,
        progress: StepProgress,
        archived: Path | None = None,
    ) -> str:
        """From the archive as far as it goes (the source then sends only the rest, or
        nothing when the archive holds the checkpoint), then from the source."""
        if archived is not None:
            reached = replay.replay_archived(self.server, archived, checkpoint, cancel)
            if reached == Position.parse(checkpoint):
                return checkpoint
        taken = self.source.taken_server_ids
        if self.server.server_id in taken:
            self.server.set_server_id(random_server_id(taken))
        return catchup.catch_up(
            self.server, self.source, checkpoint, self.stall_timeout, cancel, progress
        )

    def stop_for_archive(self) -> None:
        catchup.forget_source(self.server)
        size = self.instance.settings.archive_redo_log_mb * MIB
        shrink_redo_and_stop(self.server, "innodb_log_file_size", size)

    def is_archived(self, relative_path: str) -> bool:
        return "/" in relative_path or not NOT_ARCHIVED.match(relative_path)


def shrink_redo_and_stop(
    server: MariaDBServer,
    redo_variable: str,
    size: int | None,
    resize_online: Callable[[pymysql.cursors.Cursor, int], bool] | None = None,
) -> None:
    """The last steps of every MariaDB and MySQL cycle (`redo_variable` names the redo log's
    size): the redo log shrunk to `size` (None: left as it is), catchup's account dropped,
    a clean shutdown.
    `resize_online`, where the server can, resizes without a restart (True when done)."""
    with server.connect() as conn, conn.cursor() as cursor:
        # With a clean, fast shutdown the next restore starts without crash recovery.
        cursor.execute("SET GLOBAL innodb_fast_shutdown = 1")
        resize = size is not None and select_value(cursor, f"SELECT @@{redo_variable}") != size
        if resize and resize_online is not None and size is not None:
            resize = not resize_online(cursor, size)
    if resize:
        # A small redo log makes a smaller archive. InnoDB resizes it at startup (MariaDB in
        # about 0.2 s); online (SET GLOBAL) MariaDB waits 1-2 s for a checkpoint, which
        # was most of a zero-delta cycle.
        server.stop()
        server.options.append(f"--{redo_variable.replace('_', '-')}={size}")  # last wins
        server.start()
    with server.connect() as conn, conn.cursor() as cursor:
        cursor.execute("DROP USER IF EXISTS %s@'localhost'", (ADMIN_USER,))
    server.stop()
