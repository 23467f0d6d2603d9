"""Object stores behind one narrow interface.

A store holds immutable objects under `/`-separated keys. Writes are atomic:
an object is visible whole or not at all. That is all the repository needs,
except for one kind of object: a shard's lease, which is the one object that is
rewritten, and only by compare-and-swap (`create`, `read_versioned`, `replace`).
"""

from __future__ import annotations

import re
from pathlib import Path

from catchup.config import StorageSettings
from catchup.errors import ConfigError
from catchup.storage.store import ObjectNotFound, StorageError, Store, StoredObject

__all__ = ["ObjectNotFound", "StorageError", "Store", "StoredObject", "open_store"]


def open_store(url: str, settings: StorageSettings | None = None) -> Store:
    """The store a repository URL names: a directory, file://, s3://, gs:// or az://."""
    from catchup.storage.local import LocalStore

    match = re.match(r"^([a-z][a-z0-9+.-]*)://(.*)$", url)
    if match is None:
        return LocalStore(Path(url))
    scheme, rest = match.groups()
    if scheme == "file":
        return LocalStore(Path(rest))
    if scheme in ("s3", "gs", "az"):
        from catchup.storage.cloud import CloudStore

        return CloudStore(url, settings or StorageSettings())
    raise ConfigError(f"repository = {url!r}: {scheme}:// is not supported; use a path or file://")
