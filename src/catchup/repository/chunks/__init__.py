"""Repository format 3: a shard's backups share content-addressed chunks.

    keys.py     the shard's chunk key: chunk ids (keyed BLAKE3) and sealing
    packs.py    pack objects and their authenticated indexes
    table.py    a backup's chunk table: every file's chunks, in order
    index.py    the chunks a backup may reuse, on disk (bounded memory)
    backup.py   storing a data dir: hash everything, store only new chunks
    restore.py  ranged parallel reads, every chunk checked against its id

`ChunkStore` is what the repository calls. Every backup stays a complete full
backup: its manifest and table name every chunk of every file, and nothing refers
to another backup. Only the packs are shared, and they are collected (`garbage`)
once no manifest names them and they are older than the safety window.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from catchup.codec import CodecSettings, decode, encode
from catchup.codec.encryption import Encryptor
from catchup.codec.keys import Keyring
from catchup.config.repository import ChunkSettings
from catchup.errors import IntegrityError
from catchup.repository.chunks.backup import ChunkStorer, ParentChunks, store_files
from catchup.repository.chunks.index import ChunkIndex
from catchup.repository.chunks.keys import PLAIN, ChunkKey, load_chunk_key, writing_chunk_key
from catchup.repository.chunks.packs import PackedChunk, PackWriter, decode_index
from catchup.repository.chunks.restore import (
    ChunkReader,
    check_runs,
    restore_files,
    stored_runs,
)
from catchup.repository.chunks.table import ChunkRecord, TableSpool, read_records
from catchup.repository.layout import (
    CHUNK_TABLE,
    PACK_NAME,
    backup_prefix,
    chunks_prefix,
    pack_index_key,
    pack_key,
    pack_time,
)
from catchup.repository.manifest import ChunkedFile, ChunkTableRef, Manifest, PackUse
from catchup.repository.transfer import ByteCounter, DataDirListing, RestoreTarget
from catchup.storage import ObjectNotFound, Store

log = logging.getLogger("catchup.repository")


@dataclass(frozen=True)
class ChunkedWrite:
    """What storing a data dir as chunks adds to its manifest."""

    files: list[ChunkedFile]
    table: ChunkTableRef
    packs: list[PackUse]
    chunk_key: str | None
    new_stored_bytes: int  # new chunks and the table


@dataclass(frozen=True)
class StoredPacks:
    """One listing of a shard's packs: each pack's size, and the packs with an index."""

    sizes: dict[str, int]
    indexed: set[str]


class ChunkStore:
    def __init__(self, store: Store, keyring: Keyring, settings: ChunkSettings) -> None:
        self.store, self.keyring, self.settings = store, keyring, settings

    # --- writing -------------------------------------------------------------

    def write(
        self,
        manifest_fields: tuple[str, str, str],  # keyspace, shard, backup id
        data_dir: Path,
        listing: DataDirListing,
        codec: CodecSettings,
        jobs: int,
        encryptor: Encryptor | None,
        parent: Manifest | None,
        parent_encryptor: Encryptor | None,
        newest_commit: datetime | None,
        now: datetime,
        progress: ByteCounter | None = None,
    ) -> ChunkedWrite:
        """Store the data dir's chunks the shard lacks, then the backup's chunk table."""
        keyspace, shard, backup_id = manifest_fields
        parent_key = parent.chunk_key if parent is not None and parent.chunked else None
        key = writing_chunk_key(self.store, self.keyring, keyspace, shard, parent_key)
        stored = self.list_packs(keyspace, shard)
        prefix = backup_prefix(keyspace, shard, backup_id)
        with (
            tempfile.TemporaryDirectory(prefix=".catchup-chunks-", dir=_scratch(data_dir)) as tmp,
            contextlib.ExitStack() as stack,
        ):
            index = ChunkIndex(Path(tmp) / "index.sqlite")
            stack.callback(index.close)
            before = None
            if parent is not None and parent.chunked and parent.chunk_key == key.key_id:
                table_file = stack.enter_context(
                    self._decoded_table(parent, Path(tmp), parent_encryptor)
                )
                before = self._know_parent(index, parent, table_file, stored)
            self._know_recent(index, key, keyspace, shard, stored, parent, newest_commit, now)
            spool = TableSpool(stack.enter_context(open(Path(tmp) / "table.spool", "w+b")))
            packs = PackWriter(self.store, key, keyspace, shard, self.settings.pack_mb << 20)
            storer = ChunkStorer(index, packs, key, codec.level)
            try:
                files = store_files(
                    data_dir,
                    listing,
                    storer,
                    spool,
                    before,
                    self.settings.size_kib << 10,
                    jobs,
                    progress,
                )
                packs.close()
            except BaseException:
                packs.abort()
                raise
            new_sizes = {pack.name: pack.size for pack in packs.stored}
            table = self._store_table(spool, prefix, Path(tmp), codec, encryptor, index)
            used = index.used_bytes()
        uses = [
            PackUse(name=name, size=new_sizes.get(name) or stored.sizes[name], used=used[name])
            for name in spool.packs.names
        ]
        return ChunkedWrite(
            files=files,
            table=table,
            packs=uses,
            chunk_key=key.key_id,
            new_stored_bytes=storer.new_bytes + table.stored_size,
        )

    def _know_parent(
        self, index: ChunkIndex, parent: Manifest, table: BinaryIO, stored: StoredPacks
    ) -> ParentChunks:
        """The parent's chunks, by place and in the index, but not those in packs gone from
        the store, nor in packs the parent uses too little of (repack_below): those chunks
        are stored again, densely."""
        assert parent.packs is not None
        reusable: list[str | None] = []
        for use in parent.packs:
            dense = use.size > 0 and use.used >= self.settings.repack_below * use.size
            reusable.append(use.name if dense and use.name in stored.sizes else None)

        def chunks() -> Iterator[PackedChunk]:
            for record in read_records(_Reader(table), "of the parent"):
                name = reusable[record.pack] if record.pack < len(reusable) else None
                if name is not None:
                    yield PackedChunk(record.id, name, record.offset, record.stored, record.size)

        index.load(chunks())
        return ParentChunks(table, parent.chunked_files(), reusable)

    def _know_recent(
        self,
        index: ChunkIndex,
        key: ChunkKey,
        keyspace: str,
        shard: str,
        stored: StoredPacks,
        parent: Manifest | None,
        newest_commit: datetime | None,
        now: datetime,
    ) -> None:
        """Chunks of packs stored since the newest commit and within half the safety window:
        what a failed attempt left, which a retry reuses. Older unreferenced packs may be
        collected any time, so they are never reused."""
        window = timedelta(minutes=self.settings.gc_window_minutes) / 2
        since = max(filter(None, (newest_commit, now - window)))
        named = {use.name for use in (parent.packs or [])} if parent is not None else set()
        for name in sorted(stored.indexed):
            if name in named or pack_time(name) <= since or name not in stored.sizes:
                continue
            try:
                pack = decode_index(
                    self.store.get(pack_index_key(keyspace, shard, name)),
                    key,
                    keyspace,
                    shard,
                    name,
                )
            except (IntegrityError, ObjectNotFound) as exc:
                log.info("not reusing pack %s: %s", name, exc)  # another key, or damaged
                continue
            if pack.size == stored.sizes[name]:
                index.load(pack.chunks)

    def _store_table(
        self,
        spool: TableSpool,
        prefix: str,
        scratch: Path,
        codec: CodecSettings,
        encryptor: Encryptor | None,
        index: ChunkIndex,
    ) -> ChunkTableRef:
        """Store the table; and tally, in `index`, the distinct chunks it uses per pack."""
        with open(scratch / "table", "w+b") as table:
            records = spool.copy_to(table, range(len(spool.units)))
            table.seek(0)
            index.refer(
                PackedChunk(r.id, spool.packs.names[r.pack], r.offset, r.stored, r.size)
                for r in read_records(_Reader(table), "being written")
            )
            table.seek(0)
            with self.store.writer(prefix + CHUNK_TABLE) as sink:
                encoded = encode(table, sink, codec, encryptor, prefix + CHUNK_TABLE)
        return ChunkTableRef(
            object=CHUNK_TABLE,
            records=records,
            size=encoded.size,
            hash=encoded.digest,
            stored_size=encoded.stored_size,
        )

    def confirm_packs(self, manifest: Manifest) -> None:
        """Every pack the manifest names is in the store with its size (one listing)."""
        stored = self.list_packs(manifest.keyspace, manifest.shard)
        for use in manifest.packs or []:
            found = stored.sizes.get(use.name)
            if found != use.size:
                state = "is missing" if found is None else f"has {found} bytes"
                raise IntegrityError(
                    f"backup {manifest.keyspace}/{manifest.shard}/{manifest.backup_id} not "
                    f"committed: pack {use.name} {state} in {self.store.url}, expected "
                    f"{use.size} bytes; did another host or `catchup prune` remove it?"
                )

    # --- reading -------------------------------------------------------------

    def chunk_key(self, manifest: Manifest) -> ChunkKey:
        if manifest.chunk_key is None:
            return PLAIN
        return load_chunk_key(
            self.store, self.keyring, manifest.keyspace, manifest.shard, manifest.chunk_key
        )

    def restore(
        self,
        manifest: Manifest,
        encryptor: Encryptor | None,
        target: Path,
        jobs: int,
        progress: ByteCounter | None = None,
    ) -> None:
        reader = ChunkReader(
            self.store, self.chunk_key(manifest), manifest.keyspace, manifest.shard
        )
        names = [use.name for use in manifest.packs or []]
        below = RestoreTarget(target)
        try:
            for directory in sorted(manifest.directories, key=lambda d: d.count("/")):
                below.make_directory(directory)
            with self._open_table(manifest, _scratch(target), encryptor) as records:
                restore_files(
                    reader, manifest.chunked_files(), records, names, below, jobs, progress
                )
        finally:
            below.close()

    def check(
        self,
        manifests: list[tuple[Manifest, Encryptor | None]],
        jobs: int,
        progress: ByteCounter | None = None,
        scratch: Path | None = None,
    ) -> tuple[int, int]:
        """Read every chunk the backups reference once, however many of them reference
        it: authentication, decompression, id. Returns (chunks, stored bytes) checked."""
        # Packs live per shard, and a chunk key opens one shard's chunks.
        by_key: dict[tuple[str, str, str | None], list[tuple[Manifest, Encryptor | None]]] = {}
        for manifest, encryptor in manifests:
            where = (manifest.keyspace, manifest.shard, manifest.chunk_key)
            by_key.setdefault(where, []).append((manifest, encryptor))
        chunks = stored = 0
        for group in by_key.values():
            with tempfile.TemporaryDirectory(prefix=".catchup-check-", dir=scratch) as tmp:
                index = ChunkIndex(Path(tmp) / "index.sqlite")
                try:
                    for manifest, encryptor in group:
                        index.refer(self._references(manifest, encryptor, Path(tmp)))
                    first = group[0][0]
                    reader = ChunkReader(
                        self.store, self.chunk_key(first), first.keyspace, first.shard
                    )
                    totals = _Totals()
                    check_runs(
                        reader, stored_runs(totals.count(index.references())), jobs, progress
                    )
                    chunks += totals.chunks
                    stored += totals.stored
                finally:
                    index.close()
        return chunks, stored

    def _references(
        self, manifest: Manifest, encryptor: Encryptor | None, scratch: Path
    ) -> Iterator[PackedChunk]:
        names = [use.name for use in manifest.packs or []]
        with self._open_table(manifest, scratch, encryptor) as records:
            for entry in manifest.chunked_files():
                size = 0
                for _ in range(entry.count):
                    record = next(records, None)
                    if record is None or record.pack >= len(names):
                        raise IntegrityError(
                            f"backup {manifest.backup_id}: the chunk table does not match its "
                            f"files at {entry.path!r}: altered"
                        )
                    size += record.size
                    yield PackedChunk(
                        record.id, names[record.pack], record.offset, record.stored, record.size
                    )
                if size != entry.size:
                    raise IntegrityError(
                        f"backup {manifest.backup_id}: file {entry.path!r} has {size} bytes of "
                        f"chunks, not {entry.size}: altered"
                    )

    @contextlib.contextmanager
    def _open_table(
        self, manifest: Manifest, scratch: Path | None, encryptor: Encryptor | None = None
    ) -> Iterator[Iterator[ChunkRecord]]:
        """The backup's chunk table, record by record."""
        with self._decoded_table(manifest, scratch, encryptor) as table:
            assert manifest.chunk_table is not None
            name = manifest.backup_id + "/" + manifest.chunk_table.object
            yield read_records(_Reader(table), name)

    @contextlib.contextmanager
    def _decoded_table(
        self, manifest: Manifest, scratch: Path | None, encryptor: Encryptor | None
    ) -> Iterator[BinaryIO]:
        """The backup's chunk table, decoded (authenticated, hash checked) into a temporary
        file."""
        assert manifest.chunk_table is not None
        ref = manifest.chunk_table
        name = backup_prefix(manifest.keyspace, manifest.shard, manifest.backup_id) + ref.object
        with tempfile.TemporaryFile(dir=scratch) as table:
            try:
                with self.store.reader(name) as source:
                    decode(source, table, ref.hash, ref.size, name, encryptor)
            except ObjectNotFound:
                raise IntegrityError(
                    f"chunk table {name} is missing: the backup is damaged"
                ) from None
            table.seek(0)
            yield table

    # --- collecting ----------------------------------------------------------

    def list_packs(self, keyspace: str, shard: str) -> StoredPacks:
        prefix = chunks_prefix(keyspace, shard) + "packs/"
        sizes: dict[str, int] = {}
        indexed: set[str] = set()
        for obj in self.store.list(prefix):
            name, _, kind = obj.key[len(prefix) :].rpartition(".")
            if not PACK_NAME.match(name) or kind not in ("pack", "index"):
                continue  # not catchup's: never reused, never collected
            if kind == "pack":
                sizes[name] = obj.size
            else:
                indexed.add(name)
        return StoredPacks(sizes, indexed)

    def garbage(
        self, keyspace: str, shard: str, manifests: list[Manifest], now: datetime
    ) -> list[str]:
        """Packs (or lone indexes) that no manifest names, older than the safety window."""
        referenced = {use.name for m in manifests for use in m.packs or []}
        stored = self.list_packs(keyspace, shard)
        window = timedelta(minutes=self.settings.gc_window_minutes)
        return sorted(
            name
            for name in set(stored.sizes) | stored.indexed
            if name not in referenced and now - pack_time(name) >= window
        )

    def delete_packs(self, keyspace: str, shard: str, names: list[str]) -> None:
        """Each pack's index first, so that an index never describes a deleted pack."""
        for name in names:
            for key in (pack_index_key(keyspace, shard, name), pack_key(keyspace, shard, name)):
                with contextlib.suppress(ObjectNotFound):
                    self.store.delete(key)


@dataclass
class _Totals:
    chunks: int = 0
    stored: int = 0

    def count(self, chunks: Iterator[PackedChunk]) -> Iterator[PackedChunk]:
        for chunk in chunks:
            self.chunks += 1
            self.stored += chunk.stored
            yield chunk


class _Reader:
    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def read(self, size: int = -1) -> bytes:
        return self.stream.read(size)


def _scratch(path: Path) -> Path | None:
    """Where temporary files go: beside the data dir (the work dir, with room), if it exists."""
    parent = path.parent
    return parent if parent.is_dir() else None
