"""The ephemeral MariaDB instance of one cycle: provisioned under the work dir
(engines/workdir.py), always destroyed — on success, on error, on
cancellation, and (through the reaper) even after catchup itself was killed.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
from collections.abc import Collection, Iterator
from pathlib import Path

from catchup.config import MariaDBSettings
from catchup.engines.mariadb.server import MariaDBServer, ServerFiles
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


class EphemeralInstance:
    """One cycle's server. Its data dir is `files.data_dir`."""

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

    def destroy(self) -> None:
        self.server.kill()
        shutil.rmtree(self.files.root, ignore_errors=True)
        if not self.files.socket.is_relative_to(self.files.root):
            shutil.rmtree(self.files.socket.parent, ignore_errors=True)


@contextlib.contextmanager
def provision(work_dir: Path, label: str, settings: MariaDBSettings) -> Iterator[EphemeralInstance]:
    with instance_dir(work_dir, label) as root:
        instance = EphemeralInstance(root, random_server_id(), settings)
        record_server(root, instance.files.pid_file, instance.data_dir)
        try:
            yield instance
        finally:
            instance.destroy()
