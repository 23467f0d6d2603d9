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

from catchup.codec import CodecSettings
from catchup.codec.encryption import Encryptor, new_data_key
from catchup.codec.keys import Keyring
from catchup.config import Config
from catchup.errors import NotFoundError
from catchup.repository.envelope import BackupKeys, decode_manifest, encode_manifest
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
from catchup.storage import ObjectNotFound, Store, open_store

__all__ = ["Manifest", "Repository", "open_repository"]


class Repository:
    def __init__(self, store: Store, keyring: Keyring | None = None) -> None:
        self.store = store
        self.keyring = keyring or Keyring()
        self._data_keys: dict[
            str, bytes | None
        ] = {}  # per backup prefix, once its manifest is read

    @property
    def url(self) -> str:
        return self.store.url

    # --- catalog -------------------------------------------------------------

    def check_encryption(self) -> None:
        """Raise now if the active key cannot wrap a data key (a KMS that refuses, say)."""
        if self.keyring.active:
            self.keyring.active.wrap(bytes(32), b"catchup key check")

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
        try:
            if parse_key(key) is None:
                raise ObjectNotFound(key)
            return self._read_manifest(key)
        except ObjectNotFound:
            raise NotFoundError(
                f"backup {backup_id!r} of {keyspace}/{shard} is not a complete backup in "
                f"{self.url}; see `catchup list {keyspace}/{shard}`"
            ) from None

    def find_any(self, backup_id: str) -> Manifest:
        for manifest in self.backups():
            if manifest.backup_id == backup_id:
                return manifest
        raise NotFoundError(f"no complete backup with id {backup_id!r} in {self.url}")

    def incomplete(
        self, keyspace: str | None = None, shard: str | None = None
    ) -> list[tuple[str, str, str]]:
        """(keyspace, shard, backup_id) of every prefix that holds objects or partial
        writes (a crash's leftovers) but no manifest, optionally of one shard."""
        prefix = shard_prefix(keyspace, shard) if keyspace and shard else ""
        seen: dict[tuple[str, str, str], bool] = {}
        keys = [obj.key for obj in self.store.list(prefix)]
        for key in [*keys, *self.store.partial_writes(prefix)]:
            parsed = parse_key(key)
            if parsed:
                ident = parsed[:3]
                seen[ident] = seen.get(ident, False) or parsed[3] == MANIFEST
        return sorted(ident for ident, complete in seen.items() if not complete)

    def _read_manifest(self, key: str) -> Manifest:
        prefix = key.removesuffix(MANIFEST)
        manifest, data_key = decode_manifest(
            self.store.get(key), self.keyring, prefix.rstrip("/"), key
        )
        self._data_keys[prefix] = data_key
        return manifest

    def _encryptor(self, manifest: Manifest) -> Encryptor | None:
        prefix = backup_prefix(manifest.keyspace, manifest.shard, manifest.backup_id)
        if prefix not in self._data_keys:
            self._read_manifest(prefix + MANIFEST)
        data_key = self._data_keys[prefix]
        return Encryptor(data_key) if data_key else None

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
        confirm: Callable[[], None] = lambda: None,
    ) -> Manifest:
        """Store the data dir's files, then the manifest; only then is the backup visible.

        `draft` carries every manifest field but the files and sizes; `on_commit`
        may complete the manifest just before it is stored; `confirm` raises to stop
        the commit (the writer no longer holds the shard). On failure the
        partial prefix is removed if possible (else `prune` removes it).
        """
        prefix = backup_prefix(draft.keyspace, draft.shard, draft.backup_id)
        active = self.keyring.active
        keys = BackupKeys.create(active, new_data_key(), prefix.rstrip("/")) if active else None
        encryptor = Encryptor(keys.data_key) if keys else None
        try:
            files = upload_files(
                self.store, prefix, data_dir, listing, codec, jobs, encryptor, progress
            )
            manifest = on_commit(
                draft.model_copy(
                    update={
                        "files": files,
                        "directories": listing.directories,
                        "data_bytes": sum(f.size for f in files),
                        "stored_bytes": sum(f.stored_size for f in files),
                        "compression": codec.describe(),
                        "encryption": keys.describe() if keys else None,
                    }
                )
            )
            blob = encode_manifest(manifest, keys, prefix.rstrip("/"))
            confirm()
            self.store.put(prefix + MANIFEST, blob)
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
        encryptor = self._encryptor(manifest)  # a missing or wrong key fails before any write
        created = not target.exists()
        target.mkdir(parents=True, exist_ok=True)
        try:
            for directory in manifest.directories:
                (target / directory).mkdir(parents=True, exist_ok=True)
            prefix = backup_prefix(manifest.keyspace, manifest.shard, manifest.backup_id)
            download_files(self.store, prefix, manifest.files, target, jobs, encryptor, progress)
        except BaseException:
            if created:
                shutil.rmtree(target, ignore_errors=True)
            else:
                for child in target.iterdir():
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
            raise

    def check_objects(
        self, manifest: Manifest, jobs: int, progress: Progress | None = None
    ) -> None:
        """Re-read every object of a backup: authentication, decompression, hash; no writes."""
        prefix = backup_prefix(manifest.keyspace, manifest.shard, manifest.backup_id)
        encryptor = self._encryptor(manifest)
        download_files(self.store, prefix, manifest.files, None, jobs, encryptor, progress)

    # --- removing ------------------------------------------------------------

    def delete(self, keyspace: str, shard: str, backup_id: str) -> None:
        """Remove a backup: its manifest first, so it is never seen half-deleted."""
        prefix = backup_prefix(keyspace, shard, backup_id)
        self.store.delete(prefix + MANIFEST)
        self.store.delete_prefix(prefix)


def open_repository(config: Config) -> Repository:
    """The repository a config names, with its store options and its keyring."""
    keyring = Keyring.from_settings(config.encryption)
    return Repository(open_store(config.repository, config.storage), keyring)
