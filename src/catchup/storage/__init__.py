"""Object stores behind one narrow interface.

A store holds immutable objects under `/`-separated keys. Writes are atomic:
an object is visible whole or not at all. That is all the repository needs,
except for one kind of object: a shard's lease, which is the one object that is
rewritten, and only by compare-and-swap (`create`, `read_versioned`, `replace`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from catchup.errors import ConfigError
from catchup.storage.store import ObjectNotFound, StorageError, Store, StoredObject

if TYPE_CHECKING:
    from catchup.config.repository import StorageSettings

__all__ = [
    "SCHEMES",
    "ObjectNotFound",
    "Scheme",
    "StorageError",
    "Store",
    "StoredObject",
    "open_store",
    "parse_url",
]


def _local(url: str, rest: str, settings: StorageSettings | None) -> Store:
    from catchup.storage.local import LocalStore

    return LocalStore(Path(rest))


def _cloud(url: str, rest: str, settings: StorageSettings | None) -> Store:
    from catchup.config.repository import StorageSettings
    from catchup.storage.cloud import CloudStore  # obstore loads only for a cloud repository

    return CloudStore(url, settings or StorageSettings())


@dataclass(frozen=True)
class Scheme:
    """A kind of repository URL and the store that opens it."""

    example: str  # how such a URL is written, for messages
    open: Callable[[str, str, StorageSettings | None], Store]  # (url, what follows ://, …)
    bucket: bool = False  # the URL names a bucket (or container) first


# The repository URLs catchup can open. A plain path is a "file" repository.
SCHEMES = {
    "file": Scheme("file://", _local),
    "s3": Scheme("s3://bucket/prefix", _cloud, bucket=True),
    "gs": Scheme("gs://bucket/prefix", _cloud, bucket=True),
    "az": Scheme("az://container/prefix", _cloud, bucket=True),
}


def parse_url(url: str) -> tuple[Scheme, str]:
    """A repository URL's scheme and what follows its `://` (a plain path: "file" and the
    path). Raises ValueError, saying what to write instead, for a scheme no store opens
    or a URL that names no bucket."""
    match = re.match(r"^([a-z][a-z0-9+.-]*)://(.*)$", url)
    if match is None:
        return SCHEMES["file"], url
    name, rest = match.groups()
    scheme = SCHEMES.get(name)
    if scheme is None:
        forms = ["a directory path", *(known.example for known in SCHEMES.values())]
        raise ValueError(
            f"scheme {name}:// is not supported; use {', '.join(forms[:-1])} or {forms[-1]}"
        )
    if scheme.bucket and not rest.partition("/")[0]:
        raise ValueError(f"names no bucket; write it as {scheme.example}")
    return scheme, rest


def open_store(url: str, settings: StorageSettings | None = None) -> Store:
    """The store a repository URL names (see SCHEMES)."""
    try:
        scheme, rest = parse_url(url)
    except ValueError as exc:
        raise ConfigError(f"repository = {url!r}: {exc}") from None
    return scheme.open(url, rest, settings)
