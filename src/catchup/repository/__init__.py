"""The backup repository: format, catalog, writing, restoring and pruning.

Properties the rest of catchup relies on:
- a backup is complete if and only if its manifest exists, and the manifest is
  stored only after every object it names was confirmed in the store;
- a failed or killed write leaves an incomplete prefix that listing ignores and
  `prune` removes; cleanup deletes the manifest before the objects;
- a manifest is believed only if it is sealed by a configured key (when keys
  are configured) and names the keyspace, shard and id it is stored under; a
  manifest that fails any check is a *damaged* backup, reported and skipped, so
  one bad manifest never blocks a shard;
- a restore writes only below its target, never through a symlink, with
  private modes until each file's hash is checked.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from catchup.codec import CodecSettings
from catchup.codec.encryption import Encryptor
from catchup.codec.keys import Keyring, KeyService
from catchup.config import ChunkSettings, Config
from catchup.errors import (
    IntegrityError,
    KeyUnavailableError,
    NotFoundError,
    TargetNotEmptyError,
)
from catchup.repository.archive import (
    ArchiveIndex,
    ArchiveRecord,
    ArchiveWriter,
    read_index,
    restore_files,
)
from catchup.repository.catalog import (
    Catalog,
    DamagedBackup,
    DamagedBook,
    backup_prefixes,
    incomplete_prefixes,
    read_catalog,
)
from catchup.repository.chunks import ChunkStore
from catchup.repository.envelope import decode_manifest
from catchup.repository.layout import (
    MANIFEST,
    backup_prefix,
    new_backup_id,
    parse_key,
    shard_prefix,
)
from catchup.repository.manifest import BackupHeader, Manifest
from catchup.repository.retention import backup_id_time
from catchup.repository.transfer import (
    DIR_MODE,
    ByteCounter,
    DataDirListing,
    RestoreTargetError,
    download_files,
    scan_data_dir,
)
from catchup.repository.writing import write_backup
from catchup.storage import ObjectNotFound, Store, open_store

__all__ = [
    "BackupHeader",
    "Catalog",
    "DamagedBackup",
    "Manifest",
    "Repository",
    "open_repository",
]


class Repository:
    def __init__(
        self,
        store: Store,
        keyring: Keyring | None = None,
        read_unencrypted_before: datetime | None = None,
        chunks: ChunkSettings | None = None,
    ) -> None:
        self.store = store
        self.keyring = keyring or Keyring()
        # With keys configured, a plain manifest is refused unless its backup is dated
        # before this (the time encryption was turned on: a migration).
        self.read_unencrypted_before = read_unencrypted_before
        self._data_keys: dict[
            str, bytes | None
        ] = {}  # per backup prefix, once its manifest is read
        self._damaged = DamagedBook()
        self.chunk_settings = chunks or ChunkSettings()
        self.chunks = ChunkStore(store, self.keyring, self.chunk_settings)

    @property
    def url(self) -> str:
        return self.store.url

    # --- catalog -------------------------------------------------------------

    def check_encryption(self) -> None:
        """Raise now if the active key cannot wrap a data key and unwrap it again (a KMS
        that refuses either, say): a backup that could not be read back is worthless."""
        active = self.keyring.active
        if not active:
            return
        context = b"catchup key check"
        key_id, wrapped = active.wrap(bytes(32), context)
        try:
            unwrapped = self.keyring.get(key_id, "the key check").unwrap(wrapped, context)
        except KeyUnavailableError:
            raise
        except IntegrityError as exc:
            raise KeyUnavailableError(
                f"encryption key {active.key_id} cannot unwrap a data key it wrapped: {exc}"
            ) from None
        if unwrapped != bytes(32):
            raise KeyUnavailableError(
                f"encryption key {active.key_id} unwrapped a test data key wrongly; check it"
            )

    def catalog(self, keyspace: str | None = None, shard: str | None = None) -> Catalog:
        """Every complete backup, optionally of one shard: intact ones and damaged ones.

        A manifest that fails any check is reported as damaged, not raised, so that one
        bad backup blocks neither its shard nor the others. Store and KMS failures still
        raise: they say nothing about the backup.
        """
        prefix = shard_prefix(keyspace, shard) if keyspace and shard else ""
        catalog = read_catalog(self.store, prefix, self._read_manifest)
        self._damaged.record(catalog.damaged, f"{keyspace}/{shard}" if prefix else None)
        return catalog

    def backups(self, keyspace: str | None = None, shard: str | None = None) -> list[Manifest]:
        """Intact complete backups, oldest first, optionally of one shard."""
        return self.catalog(keyspace, shard).backups

    def latest(self, keyspace: str, shard: str) -> Manifest | None:
        """The newest intact backup that is not dated in the future (see retention.py)."""
        return self.catalog(keyspace, shard).latest(keyspace, shard, datetime.now(UTC))

    def damaged_counts(self) -> dict[str, int]:
        """Damaged backups per shard, as the latest listings found them."""
        return self._damaged.counts()

    def find(self, keyspace: str, shard: str, backup_id: str | None) -> Manifest:
        """A shard's backup by id, or its newest usable one when `backup_id` is None or
        'latest'."""
        if backup_id in (None, "latest"):
            catalog = self.catalog(keyspace, shard)
            now = datetime.now(UTC)
            found = catalog.latest(keyspace, shard, now)
            if found is None:
                skipped = catalog.skipped(keyspace, shard, now)
                if skipped:
                    raise IntegrityError(
                        f"shard {keyspace}/{shard} has no usable backup in {self.url}: "
                        f"{'; '.join(skipped)}"
                    )
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
        catalog = self.catalog()
        for manifest in catalog.backups:
            if manifest.backup_id == backup_id:
                return manifest
        for damaged in catalog.damaged:
            if damaged.backup_id == backup_id:
                raise IntegrityError(damaged.reason)
        raise NotFoundError(f"no complete backup with id {backup_id!r} in {self.url}")

    def incomplete(
        self, keyspace: str | None = None, shard: str | None = None
    ) -> list[tuple[str, str, str]]:
        """(keyspace, shard, backup_id) of every prefix that holds objects or partial
        writes (a crash's leftovers) but no manifest, optionally of one shard."""
        return incomplete_prefixes(
            self.store, shard_prefix(keyspace, shard) if keyspace and shard else ""
        )

    def shards(self) -> list[tuple[str, str]]:
        """(keyspace, shard) of every shard with anything stored, from one listing: no
        manifest is read."""
        return sorted({ident[:2] for ident in backup_prefixes(self.store, "")})

    # --- the log archive (repository/archive/) --------------------------------

    def archive_index(self, ks: str, shard: str, known: ArchiveIndex | None = None) -> ArchiveIndex:
        """The shard's archive, checked (or `known` extended); keys configured: sealed only."""
        plain = not self.keyring.configured
        return read_index(self.store, self.keyring, plain, ks, shard, known=known)

    def archive_writer(
        self, index: ArchiveIndex, session: str, source: str, codec: CodecSettings
    ) -> ArchiveWriter:
        return ArchiveWriter(self.store, self.keyring, index, session, source, codec)

    def restore_log(
        self, index: ArchiveIndex, records: list[ArchiveRecord], target: Path, jobs: int
    ) -> list[str]:
        return restore_files(self.store, index, records, target, jobs)

    def _read_manifest(self, key: str) -> Manifest:
        prefix = key.removesuffix(MANIFEST)
        parsed = parse_key(key)
        read_plain = not self.keyring.configured or self._dated_before_encryption(
            backup_id_time(parsed[2]) if parsed else None
        )
        manifest, data_key = decode_manifest(
            self.store.get(key), self.keyring, prefix.rstrip("/"), key, read_plain
        )
        # A sealed manifest is bound to its prefix by its seal; a plain one only by this.
        where = (manifest.keyspace, manifest.shard, manifest.backup_id)
        if parsed is None or where != parsed[:3]:
            raise IntegrityError(
                f"manifest {key} describes backup {'/'.join(where)}, not the one it is stored "
                "as: it was copied from elsewhere or altered; refused"
            )
        if (
            data_key is None
            and self.keyring.configured
            and not self._dated_before_encryption(manifest.created_at)
        ):
            raise IntegrityError(
                f"manifest {key} is not encrypted and was created at {manifest.created_at}, "
                "after encryption.read_unencrypted_before: anyone with write access to the "
                "store could have written it; refused"
            )
        self._data_keys[prefix] = data_key
        return manifest

    def _dated_before_encryption(self, when: datetime | None) -> bool:
        cutoff = self.read_unencrypted_before
        return cutoff is not None and when is not None and when < cutoff

    def encryptor(self, manifest: Manifest) -> Encryptor | None:
        prefix = backup_prefix(manifest.keyspace, manifest.shard, manifest.backup_id)
        if prefix not in self._data_keys:
            self._read_manifest(prefix + MANIFEST)
        data_key = self._data_keys[prefix]
        return Encryptor(data_key) if data_key else None

    # --- writing -------------------------------------------------------------

    def new_backup_id(self) -> str:
        return new_backup_id()

    def now(self) -> datetime:
        """The commit time a manifest records (a method, so a test can date a backup)."""
        return datetime.now(UTC)

    def scan(self, data_dir: Path, excluded: Callable[[str], bool]) -> DataDirListing:
        return scan_data_dir(data_dir, excluded)

    def write_backup(
        self,
        header: BackupHeader,
        data_dir: Path,
        listing: DataDirListing,
        codec: CodecSettings,
        jobs: int,
        progress: ByteCounter | None = None,
        confirm: Callable[[], None] = lambda: None,
    ) -> Manifest:
        """Store the data dir, then the manifest; only then is the backup visible
        (repository/writing.py). `confirm` is called last before the manifest is stored
        (a lock holder checks it still holds the shard)."""
        return write_backup(self, header, data_dir, listing, codec, jobs, progress, confirm)

    # --- reading -------------------------------------------------------------

    def restore(
        self, manifest: Manifest, target: Path, jobs: int, progress: ByteCounter | None = None
    ) -> None:
        """Recreate the backup's data dir in `target` (empty or absent), verified file by file.

        Every path is inside `target` (the manifest's validation refuses any other), is
        reached without following a symlink, and is created exclusively: directories
        0700, files 0600 until their hash is checked, then their recorded permission bits.
        On any failure, everything written into `target` is removed again. A target that
        cannot be created or written (no such parent, no space, a name too long) is one
        line naming it and the reason.
        """
        try:
            self._restore(manifest, target, jobs, progress)
        except OSError as exc:
            where = (
                f" ('{exc.filename}')" if exc.filename and str(exc.filename) != str(target) else ""
            )
            raise RestoreTargetError(
                f"cannot restore into '{target}': {exc.strerror or exc}{where}; choose a "
                "target directory you may create and write, on a file system with room"
            ) from None

    def _restore(
        self, manifest: Manifest, target: Path, jobs: int, progress: ByteCounter | None
    ) -> None:
        if target.exists() and not target.is_dir():
            raise TargetNotEmptyError(
                f"target '{target}' is not a directory; give an empty or new dir"
            )
        if target.exists() and any(target.iterdir()):
            raise TargetNotEmptyError(
                f"target dir '{target}' is not empty; give an empty or new dir"
            )
        encryptor = self.encryptor(manifest)  # a missing or wrong key fails before any write
        created = not target.exists()
        if created:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(target, DIR_MODE)
        try:
            prefix = backup_prefix(manifest.keyspace, manifest.shard, manifest.backup_id)
            if manifest.chunked:
                self.chunks.restore(manifest, encryptor, target, jobs, progress)
                return
            download_files(
                self.store,
                prefix,
                manifest.object_files(),
                target,
                jobs,
                encryptor,
                progress,
                directories=manifest.directories,
            )
        except BaseException:
            if created:
                shutil.rmtree(target, ignore_errors=True)
            else:
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            raise

    def check_objects(
        self, manifest: Manifest, jobs: int, progress: ByteCounter | None = None
    ) -> None:
        """Re-read every object of a backup: authentication, decompression, hash; no writes."""
        prefix = backup_prefix(manifest.keyspace, manifest.shard, manifest.backup_id)
        encryptor = self.encryptor(manifest)
        if manifest.chunked:
            self.chunks.check([(manifest, encryptor)], jobs, progress)
            return
        download_files(self.store, prefix, manifest.object_files(), None, jobs, encryptor, progress)

    def check_chunks(
        self, manifests: list[Manifest], jobs: int, progress: ByteCounter | None = None
    ) -> tuple[int, int]:
        """Format 3 backups' chunks, each stored chunk read once however many backups use
        it; returns (chunks, stored bytes) checked."""
        chunked = [(m, self.encryptor(m)) for m in manifests if m.chunked]
        return self.chunks.check(chunked, jobs, progress)

    # --- collecting unreferenced packs (format 3) ------------------------------

    def garbage_packs(self, keyspace: str, shard: str, now: datetime) -> list[str]:
        """Packs that no backup of the shard names, older than the safety window. None at
        all while any backup of the shard cannot be read: what it names is unknown."""
        catalog = self.catalog(keyspace, shard)
        if catalog.damaged:
            return []
        return self.chunks.garbage(keyspace, shard, catalog.backups, now)

    def delete_packs(self, keyspace: str, shard: str, names: list[str]) -> None:
        self.chunks.delete_packs(keyspace, shard, names)

    # --- removing ------------------------------------------------------------

    def delete(self, keyspace: str, shard: str, backup_id: str) -> None:
        """Remove a backup: its manifest first, so it is never seen half-deleted."""
        prefix = backup_prefix(keyspace, shard, backup_id)
        self.store.delete(prefix + MANIFEST)
        self.store.delete_prefix(prefix)


def kms_service(region: str | None, endpoint: str | None) -> KeyService:
    from catchup.codec.kms import KmsService  # boto3 loads only when a KMS is used

    return KmsService(region, endpoint)


def open_repository(config: Config) -> Repository:
    """The repository a config names, with its store options and its keyring."""
    keyring = Keyring.from_settings(config.encryption, kms_service)
    return Repository(
        open_store(config.repository, config.storage),
        keyring,
        read_unencrypted_before=config.encryption.read_unencrypted_before,
        chunks=config.chunks,
    )
