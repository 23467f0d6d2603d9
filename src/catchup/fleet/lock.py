"""One run per shard at a time.

An flock on a file under the work dir: the kernel releases it when the holder
exits, however it exits, so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from catchup.errors import ShardBusyError


@contextlib.contextmanager
def shard_lock(work_dir: Path, keyspace: str, shard: str) -> Iterator[None]:
    locks = work_dir / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / f"{keyspace}.{shard}.lock"
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 64, 0).decode(errors="replace").strip() or "unknown"
            raise ShardBusyError(
                f"shard {keyspace}/{shard} is already being backed up (pid {holder}); "
                "wait for that run to finish"
            ) from None
        os.ftruncate(handle, 0)
        os.pwrite(handle, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(handle)
