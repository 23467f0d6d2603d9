"""Writing a backup: its files (format 2 objects or format 3 chunks), then, once every
object it names is confirmed in the store and the writer still holds the shard, the
manifest. A failure removes what was written (the manifest first)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from catchup.codec import CodecSettings
from catchup.codec.encryption import Encryptor, new_data_key
from catchup.codec.keys import Keyring
from catchup.config.repository import ChunkSettings
from catchup.errors import IntegrityError
from catchup.repository.catalog import Catalog
from catchup.repository.chunks import ChunkedWrite, ChunkStore
from catchup.repository.envelope import BackupKeys, encode_manifest
from catchup.repository.layout import MANIFEST, backup_prefix
from catchup.repository.manifest import BackupHeader, Manifest
from catchup.repository.transfer import ByteCounter, DataDirError, DataDirListing, upload_files
from catchup.storage import ObjectNotFound, Store


class WritableRepository(Protocol):
    """What writing needs of the repository (catchup.repository.Repository)."""

    store: Store
    keyring: Keyring
    chunk_settings: ChunkSettings
    chunks: ChunkStore

    @property
    def url(self) -> str: ...

    def catalog(self, keyspace: str | None = None, shard: str | None = None) -> Catalog: ...

    def new_backup_id(self) -> str: ...

    def now(self) -> datetime: ...

    def encryptor(self, manifest: Manifest) -> Encryptor | None: ...


def write_backup(
    repo: WritableRepository,
    header: BackupHeader,
    data_dir: Path,
    listing: DataDirListing,
    codec: CodecSettings,
    jobs: int,
    progress: ByteCounter | None = None,
    confirm: Callable[[], None] = lambda: None,
) -> Manifest:
    """Store the data dir's files, then the manifest; only then is the backup visible.

    The manifest is the header with what this adds: a new backup id, the files and
    sizes, compression and encryption, the commit time and the 'back up' duration.
    Before the manifest is stored, every object it names is confirmed in the store
    with its size, and then `confirm` is called (a lock holder checks it still holds
    the shard): either raising stops the commit. On failure the partial prefix is
    removed if possible (else `prune` removes it).
    """
    if not listing.files:
        raise DataDirError(
            f"the data dir '{data_dir}' holds no file to back up; refusing to commit an "
            "empty backup (was the data dir emptied, or is the listing wrong?)"
        )
    started = time.monotonic()
    backup_id = repo.new_backup_id()
    prefix = backup_prefix(header.keyspace, header.shard, backup_id)
    active = repo.keyring.active
    keys = BackupKeys.create(active, new_data_key(), prefix.rstrip("/")) if active else None
    encryptor = Encryptor(keys.data_key) if keys else None
    try:
        if repo.chunk_settings.format == 3:
            fields = _write_chunks(
                repo, header, backup_id, data_dir, listing, codec, jobs, encryptor, progress
            )
        else:
            fields = _write_objects(
                repo, prefix, data_dir, listing, codec, jobs, encryptor, progress
            )
        manifest = Manifest(
            **{
                **dict(header),
                "durations": {
                    **header.durations,
                    "back up": round(time.monotonic() - started, 3),
                },
            },
            backup_id=backup_id,
            created_at=repo.now(),
            directories=listing.directories,
            compression=codec.describe(),
            encryption=keys.describe() if keys else None,
            **fields,
        )
        blob = encode_manifest(manifest, keys, prefix.rstrip("/"))
        _confirm_objects(repo, prefix, manifest)
        confirm()
        repo.store.put(prefix + MANIFEST, blob)
    except BaseException:
        _discard(repo, prefix)
        raise
    return manifest


def _write_objects(
    repo: WritableRepository,
    prefix: str,
    data_dir: Path,
    listing: DataDirListing,
    codec: CodecSettings,
    jobs: int,
    encryptor: Encryptor | None,
    progress: ByteCounter | None,
) -> dict[str, Any]:
    """Format 2: one object per file, under the backup's prefix."""
    files = upload_files(repo.store, prefix, data_dir, listing, codec, jobs, encryptor, progress)
    return {
        "format_version": 2,
        "files": files,
        "data_bytes": sum(f.size for f in files),
        "stored_bytes": sum(f.stored_size for f in files),
    }


def _write_chunks(
    repo: WritableRepository,
    header: BackupHeader,
    backup_id: str,
    data_dir: Path,
    listing: DataDirListing,
    codec: CodecSettings,
    jobs: int,
    encryptor: Encryptor | None,
    progress: ByteCounter | None,
) -> dict[str, Any]:
    """Format 3: the chunks the shard lacks, into its packs; the backup's chunk table."""
    catalog = repo.catalog(header.keyspace, header.shard)
    parent = next((m for m in catalog.backups if m.backup_id == header.parent), None)
    newest = max((m.created_at for m in catalog.backups), default=None)
    written: ChunkedWrite = repo.chunks.write(
        (header.keyspace, header.shard, backup_id),
        data_dir,
        listing,
        codec,
        jobs,
        encryptor,
        parent,
        repo.encryptor(parent) if parent is not None else None,
        newest,
        repo.now(),
        progress,
    )
    return {
        "format_version": 3,
        "files": written.files,
        "data_bytes": sum(f.size for f in written.files),
        "stored_bytes": sum(p.used for p in written.packs) + written.table.stored_size,
        "new_stored_bytes": written.new_stored_bytes,
        "chunk_key": written.chunk_key,
        "chunk_table": written.table,
        "packs": written.packs,
    }


def _confirm_objects(repo: WritableRepository, prefix: str, manifest: Manifest) -> None:
    """Every object the manifest names is in the store with its size (one listing), so
    a manifest never names an object someone else removed meanwhile."""
    stored = {obj.key: obj.size for obj in repo.store.list(prefix)}
    expected = [(f.object, f.stored_size) for f in manifest.object_files()]
    if manifest.chunk_table is not None:
        expected.append((manifest.chunk_table.object, manifest.chunk_table.stored_size))
        repo.chunks.confirm_packs(manifest)
    for name, size in expected:
        found = stored.get(prefix + name)
        if found != size:
            state = "is missing" if found is None else f"has {found} bytes"
            raise IntegrityError(
                f"backup {prefix.rstrip('/')} not committed: object {name} {state} "
                f"in {repo.url} right after its upload, expected {size} "
                "bytes; did another host or `catchup prune` remove it?"
            )


def _discard(repo: WritableRepository, prefix: str) -> None:
    """Remove a failed write: the manifest first (its put may have landed although it
    raised), and the objects only once it is surely gone, so an interrupted cleanup
    never leaves a visible manifest naming deleted objects."""
    with contextlib.suppress(Exception):  # best effort; prune removes what is left
        with contextlib.suppress(ObjectNotFound):
            repo.store.delete(prefix + MANIFEST)
        repo.store.delete_prefix(prefix)
