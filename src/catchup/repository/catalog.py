"""Listing the repository: its intact and damaged backups, and the incomplete ones."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from catchup.errors import IntegrityError, KeyUnavailableError
from catchup.repository.layout import MANIFEST, parse_key
from catchup.repository.manifest import ListedBackup, Manifest
from catchup.repository.retention import FUTURE_TOLERANCE, dated, future_dated
from catchup.storage import ObjectNotFound, Store


@dataclass(frozen=True)
class DamagedBackup(ListedBackup):
    """A backup whose manifest cannot be believed: unreadable, altered, not sealed, bound
    to another place, or sealed with a key that is not configured."""

    keyspace: str
    shard: str
    backup_id: str
    reason: str
    key_unavailable: bool = False  # its key is not configured or refused: not damage

    def summary(self) -> dict[str, object]:
        return self.listed(state="damaged", reason=self.reason)


@dataclass(frozen=True)
class Catalog:
    """One listing: the intact backups (oldest first) and the damaged ones."""

    backups: list[Manifest]
    damaged: list[DamagedBackup]

    def latest(self, keyspace: str, shard: str, now: datetime) -> Manifest | None:
        """The shard's newest intact backup that is not dated in the future."""
        for manifest in reversed(self.backups):
            if (manifest.keyspace, manifest.shard) == (keyspace, shard) and not future_dated(
                manifest, now
            ):
                return manifest
        return None

    def key_unavailable(
        self, keyspace: str, shard: str, newer_than: str | None
    ) -> list[DamagedBackup]:
        """The shard's backups newer than `newer_than` (all, if None) that could not be
        opened only because their key is not configured or is refused, newest first."""
        return [
            d
            for d in reversed(self.damaged)
            if (d.keyspace, d.shard) == (keyspace, shard)
            and d.key_unavailable
            and (newer_than is None or d.backup_id > newer_than)
        ]

    def skipped(
        self, keyspace: str, shard: str, now: datetime, newer_than: str | None = None
    ) -> list[str]:
        """What `latest` passes over for the shard, and why, newest first; only what is
        newer than backup `newer_than`, if given."""
        found = [
            (d.backup_id, f"damaged backup {d.backup_id} ({d.reason})")
            for d in self.damaged
            if (d.keyspace, d.shard) == (keyspace, shard)
        ]
        found += [
            (
                m.backup_id,
                f"future-dated backup {m.backup_id} (dated {dated(m):%Y-%m-%d %H:%M:%S} UTC, "
                f"more than {FUTURE_TOLERANCE.seconds // 60} minutes ahead of this host's "
                "clock: a writer's clock is wrong, or the backup is forged)",
            )
            for m in self.backups
            if (m.keyspace, m.shard) == (keyspace, shard) and future_dated(m, now)
        ]
        return [
            text
            for backup_id, text in sorted(found, reverse=True)
            if newer_than is None or backup_id > newer_than
        ]


def read_catalog(store: Store, prefix: str, read_manifest: Callable[[str], Manifest]) -> Catalog:
    """Every complete backup under `prefix`: intact ones and damaged ones.

    A manifest that `read_manifest` refuses (an IntegrityError) is reported as damaged,
    not raised, so that one bad backup blocks neither its shard nor the others. Store and
    KMS failures still raise: they say nothing about the backup.
    """
    manifests: list[Manifest] = []
    damaged: list[DamagedBackup] = []
    for obj in store.list(prefix):
        parsed = parse_key(obj.key)
        if not parsed or parsed[3] != MANIFEST:
            continue
        try:
            manifests.append(read_manifest(obj.key))
        except ObjectNotFound:
            continue  # removed since the listing (prune)
        except IntegrityError as exc:
            unavailable = isinstance(exc, KeyUnavailableError)
            damaged.append(DamagedBackup(*parsed[:3], str(exc), unavailable))
    identity = lambda b: (b.keyspace, b.shard, b.backup_id)  # noqa: E731
    return Catalog(sorted(manifests, key=identity), sorted(damaged, key=identity))


def backup_prefixes(store: Store, prefix: str) -> dict[tuple[str, str, str], bool]:
    """Every backup prefix under `prefix` that holds objects or partial writes (a crash's
    leftovers), as (keyspace, shard, backup_id), with whether its manifest exists."""
    seen: dict[tuple[str, str, str], bool] = {}
    keys = [obj.key for obj in store.list(prefix)]
    for key in [*keys, *store.partial_writes(prefix)]:
        parsed = parse_key(key)
        if parsed:
            ident = parsed[:3]
            seen[ident] = seen.get(ident, False) or parsed[3] == MANIFEST
    return seen


def incomplete_prefixes(store: Store, prefix: str) -> list[tuple[str, str, str]]:
    """(keyspace, shard, backup_id) of every backup under `prefix` without a manifest."""
    seen = backup_prefixes(store, prefix)
    return sorted(ident for ident, complete in seen.items() if not complete)


class DamagedBook:
    """Damaged backups per shard, as the latest listings found them (for /metrics)."""

    def __init__(self) -> None:
        self._found: dict[str, list[DamagedBackup]] = {}
        self._lock = threading.Lock()

    def record(self, damaged: list[DamagedBackup], shard_name: str | None) -> None:
        """What a listing of one shard, or of all (`shard_name` None), found."""
        by_shard: dict[str, list[DamagedBackup]] = defaultdict(list)
        for backup in damaged:
            by_shard[backup.shard_name].append(backup)
        with self._lock:
            if shard_name is None:
                self._found = dict(by_shard)
            else:
                self._found[shard_name] = by_shard.get(shard_name, [])

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {name: len(found) for name, found in self._found.items()}
