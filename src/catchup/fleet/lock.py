"""One runner per shard at a time, wherever runners run.

`shard_lock` is what every writer (`catchup backup`, the daemon, a Kubernetes
Job's pod) and `prune` take. It is two leases (fleet/lease.py):

- an flock on a file under the work dir: the kernel releases it when the
  holder exits, however it exits, so a killed run on this host never blocks
  the next one; and it refuses a second run on this host without a request;
- the repository lease: an object beside the shard's backups, renewed while
  the holder lives, that every host reaching the repository honours.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from catchup.cancel import NEVER, CancelToken
from catchup.errors import ShardBusyError
from catchup.fleet.lease import BACKUP, Held, Leaser, Purpose, RepositoryLeaser, hold
from catchup.storage import Store


class FlockLeaser:
    """The host's lock: an flock under `work_dir/locks/`."""

    def __init__(self, work_dir: Path, purpose: Purpose = BACKUP) -> None:
        self.locks = work_dir / "locks"
        self.purpose = purpose

    def acquire(self, keyspace: str, shard: str) -> FlockLease:
        self.locks.mkdir(parents=True, exist_ok=True)
        name = f"{keyspace}.{shard}{self.purpose.lock_file}.lock"
        handle = os.open(self.locks / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(handle)
            raise ShardBusyError(
                f"shard {keyspace}/{shard} {self.purpose.busy} on this host (pid {holder}); "
                f"{self.purpose.advice}"
            ) from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, str(os.getpid()).encode(), 0)
        return FlockLease(handle)


class FlockLease:
    ttl: float | None = None  # held as long as the process lives

    def __init__(self, handle: int) -> None:
        self.handle = handle

    def renew(self) -> None:
        pass

    def confirm(self) -> None:
        pass  # nobody can take an flock from its living holder

    def release(self) -> None:
        os.close(self.handle)


@contextmanager
def shard_lock(
    work_dir: Path,
    store: Store,
    keyspace: str,
    shard: str,
    lease_seconds: float,
    cancel: CancelToken = NEVER,
    purpose: Purpose = BACKUP,
) -> Iterator[Held]:
    """This host's flock, then the repository lease; or ShardBusyError naming the holder.

    Work under it with `held.cancel`, which a lost lease cancels, and call
    `held.confirm()` right before committing anything. `purpose` ARCHIVE: the shard
    archiver's own pair, so that one archiver per shard runs beside the cycles.
    """
    leasers: list[Leaser] = [
        FlockLeaser(work_dir, purpose),
        RepositoryLeaser(store, lease_seconds, purpose=purpose),
    ]
    with hold(leasers, keyspace, shard, cancel) as held:
        yield held
