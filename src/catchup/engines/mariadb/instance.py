"""The ephemeral MariaDB instance of one cycle: provisioned under the work dir
(engines/workdir.py), always destroyed — on success, on error, on
cancellation, and (through the reaper) even after catchup itself was killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from catchup.config import MariaDBSettings
from catchup.engines.mariadb.server import MariaDBServer, ServerFiles
from catchup.engines.workdir import instance_dir, record_server

# Replica server ids must differ from every server the source talks to; sources
# normally use small ids, so ephemeral ones come from the top of the range.
SERVER_ID_BASE = 4_000_000_000
SERVER_ID_SLOTS = 10_000

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
    "--event-scheduler=DISABLED",
]


@dataclass
class ServerIdLease:
    server_id: int
    handle: int

    def release(self) -> None:
        os.close(self.handle)


def lease_server_id(work_dir: Path) -> ServerIdLease:
    """A server id no other instance under this work dir holds (flock, so a crash frees it)."""
    leases = work_dir / "server-ids"
    leases.mkdir(parents=True, exist_ok=True)
    for slot in range(SERVER_ID_SLOTS):
        handle = os.open(leases / f"{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            continue
        return ServerIdLease(SERVER_ID_BASE + slot, handle)
    raise RuntimeError(f"all {SERVER_ID_SLOTS} server ids under {leases} are in use")


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
            self.files.socket.unlink(missing_ok=True)


@contextlib.contextmanager
def provision(work_dir: Path, label: str, settings: MariaDBSettings) -> Iterator[EphemeralInstance]:
    with instance_dir(work_dir, label) as root:
        lease = lease_server_id(work_dir)
        instance = EphemeralInstance(root, lease.server_id, settings)
        record_server(root, instance.files.pid_file, instance.data_dir)
        try:
            yield instance
        finally:
            instance.destroy()
            lease.release()
