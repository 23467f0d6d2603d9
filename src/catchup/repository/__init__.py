"""The backup repository: format, catalog, writing, restoring and pruning.

Properties the rest of catchup relies on:
- a backup is complete if and only if its manifest exists, and the manifest is
  stored only after every object it names;
- a failed or killed write leaves an incomplete prefix that listing ignores and
  `prune` removes;
- a restore checks every file's hash before it reports success.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from catchup.codec import CodecSettings
from catchup.errors import IntegrityError, NotFoundError
from catchup.repository.layout import (
    MANIFEST,
    backup_prefix,
    new_backup_id,
    parse_key,
    shard_prefix,
)
from catchup.repository.manifest import Manifest
from catchup.repository.transfer import (
    DataDirListing,
    Progress,
    download_files,
    scan_data_dir,
    upload_files,
)
from catchup.storage import Store, open_store

__all__ = ["Manifest", "Repository", "open_repository"]


class Repository:
    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def url(self) -> str:
        return self.store.url

    # --- catalog -------------------------------------------------------------

    def backups(self, keyspace: str | None = None, shard: str | None = None) -> list[Manifest]:
        """Complete backups, oldest first, optionally of one shard."""
        prefix = shard_prefix(keyspace, shard) if keyspace and shard else ""
        manifests = [
            self._read_manifest(obj.key)
            for obj in self.store.list(prefix)
            if (parsed := parse_key(obj.key)) and parsed[3] == MANIFEST
        ]
        return sorted(manifests, key=lambda m: (m.keyspace, m.shard, m.backup_id))

    def latest(self, keyspace: str, shard: str) -> Manifest | None:
        backups = self.backups(keyspace, shard)
        return backups[-1] if backups else None

    def find(self, keyspace: str, shard: str, backup_id: str | None) -> Manifest:
        """A shard's backup by id, or its newest one when `backup_id` is None or 'latest'."""
        if backup_id in (None, "latest"):
            found = self.latest(keyspace, shard)
            if found is None:
                raise NotFoundError(
                    f"shard {keyspace}/{shard} has no complete backup in {self.url}"
                )
            return found
        key = backup_prefix(keyspace, shard, backup_id) + MANIFEST
        if parse_key(key) is None or not any(True for _ in self.store.list(key)):
            raise NotFoundError(
                f"backup {backup_id!r} of {keyspace}/{shard} is not a complete backup in "
                f"{self.url}; see `catchup list {keyspace}/{shard}`"
            )
        return self._read_manifest(key)

    def find_any(self, backup_id: str) -> Manifest:
        for manifest in self.backups():
            if manifest.backup_id == backup_id:
                return manifest
        raise NotFoundError(f"no complete backup with id {backup_id!r} in {self.url}")

    def incomplete(self) -> list[tuple[str, str, str]]:
        """(keyspace, shard, backup_id) of every prefix that has objects but no manifest."""
        seen: dict[tuple[str, str, str], bool] = {}
        for obj in self.store.list(""):
            parsed = parse_key(obj.key)
            if parsed:
                ident = parsed[:3]
                seen[ident] = seen.get(ident, False) or parsed[3] == MANIFEST
        return [ident for ident, complete in seen.items() if not complete]

    def _read_manifest(self, key: str) -> Manifest:
        try:
            return Manifest.model_validate_json(self.store.get(key))
        except ValidationError as exc:
            why = exc.errors()[0]["msg"]
            raise IntegrityError(f"manifest {key} is unreadable: {why}") from None

    # --- writing -------------------------------------------------------------

    def new_backup_id(self) -> str:
        return new_backup_id()

    def scan(self, data_dir: Path, excluded: Callable[[str], bool]) -> DataDirListing:
        return scan_data_dir(data_dir, excluded)

    def write_backup(
        self,
        draft: Manifest,
        data_dir: Path,
        listing: DataDirListing,
        codec: CodecSettings,
        jobs: int,
        progress: Progress | None = None,
        on_commit: Callable[[Manifest], Manifest] = lambda manifest: manifest,
    ) -> Manifest:
        """Store the data dir's files, then the manifest; only then is the backup visible.

        `draft` carries every manifest field but the files and sizes; `on_commit`
        may complete the manifest just before it is stored. On failure the
        partial prefix is removed if possible (else `prune` removes it).
        """
        prefix = backup_prefix(draft.keyspace, draft.shard, draft.backup_id)
        try:
            files = upload_files(self.store, prefix, data_dir, listing, codec, jobs, progress)
            manifest = on_commit(
                draft.model_copy(
                    update={
                        "files": files,
                        "directories": listing.directories,
                        "data_bytes": sum(f.size for f in files),
                        "stored_bytes": sum(f.stored_size for f in files),
                        "compression": codec.describe(),
                    }
                )
            )
            self.store.put(prefix + MANIFEST, manifest.model_dump_json(indent=1).encode())
        except BaseException:
            self._discard(prefix)
            raise
        return manifest

    def _discard(self, prefix: str) -> None:
        with contextlib.suppress(Exception):  # best effort; prune removes what is left
            self.store.delete_prefix(prefix)

    # --- reading -------------------------------------------------------------

    def restore(
        self, manifest: Manifest, target: Path, jobs: int, progress: Progress | None = None
    ) -> None:
        """Recreate the backup's data dir in `target` (empty or absent), verified file by file.

        On any failure, everything written into `target` is removed again.
        """
        if target.exists() and any(target.iterdir()):
            raise NotFoundError(f"target dir '{target}' is not empty; give an empty or new dir")
        created = not target.exists()
        target.mkdir(parents=True, exist_ok=True)
        try:
            for directory in manifest.directories:
                (target / directory).mkdir(parents=True, exist_ok=True)
            prefix = backup_prefix(manifest.keyspace, manifest.shard, manifest.backup_id)
            download_files(self.store, prefix, manifest.files, target, jobs, progress)
        except BaseException:
            if created:
                shutil.rmtree(target, ignore_errors=True)
            else:
                for child in target.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            raise

    # --- removing ------------------------------------------------------------

    def delete(self, keyspace: str, shard: str, backup_id: str) -> None:
        """Remove a backup: its manifest first, so it is never seen half-deleted."""
        prefix = backup_prefix(keyspace, shard, backup_id)
        self.store.delete(prefix + MANIFEST)
        self.store.delete_prefix(prefix)


def open_repository(url: str) -> Repository:
    return Repository(open_store(url))
