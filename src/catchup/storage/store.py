"""The store interface: what every backend implements (local.py, cloud.py), and
the errors they raise. `catchup.storage` wires a repository URL to its backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from catchup.errors import CatchupError
from catchup.streams import Readable, Writable


class StorageError(CatchupError):
    """A store operation failed for good (after any retries)."""


class ObjectNotFound(StorageError):
    pass


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int


class Store(Protocol):
    url: str

    def writer(self, key: str) -> AbstractContextManager[Writable]:
        """A stream that becomes the object `key` only when the block exits cleanly."""
        ...

    def reader(self, key: str) -> AbstractContextManager[Readable]: ...

    def put(self, key: str, data: bytes) -> None: ...

    def read_range(self, key: str, start: int, buffer: memoryview) -> int:
        """Fill `buffer` with the bytes of `key` from `start`; how many there were (fewer
        if the object ends before). Into the caller's buffer: a restore reuses one per
        thread, and a fresh allocation per read measured 5x slower from the page cache."""
        ...

    def get(self, key: str) -> bytes: ...

    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Every complete object whose key starts with `prefix`."""
        ...

    def delete(self, key: str) -> None: ...

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under `prefix`, and any partial write left there by a crash."""
        ...

    def partial_writes(self, prefix: str) -> Iterator[str]:
        """Keys of the writes under `prefix` that a crash interrupted, which `list` hides."""
        ...

    # The compare-and-swap trio. A version is opaque: it names one write of an object,
    # so that `replace` succeeds only if nobody wrote the object since it was read.

    def create(self, key: str, data: bytes) -> str | None:
        """Store `data` as `key` only if no object `key` exists: its version, or None."""
        ...

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object and its version, or None if there is no object `key`."""
        ...

    def replace(self, key: str, data: bytes, version: str) -> str | None:
        """Overwrite `key` only if it is still at `version`: the new version, or None."""
        ...
