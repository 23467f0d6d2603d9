"""Pack objects: chunks bundled into objects of about `pack_mb`, each with an index.

    <keyspace>/<shard>/chunks/packs/<name>.pack   chunk blobs, back to back
    <keyspace>/<shard>/chunks/packs/<name>.index  which chunk lies where, authenticated

A pack is stored first and its index after it, so an index always describes a whole
pack; a pack without an index (a crash) is never reused and is collected once older
than the safety window. Backups do not need the index (a backup's chunk table says
where each of its chunks lies); a retried backup reads the indexes of recent packs to
reuse the chunks a failed attempt already stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from catchup.codec.encryption import DecryptionError, seal, unseal
from catchup.errors import IntegrityError
from catchup.repository.chunks.keys import ChunkKey
from catchup.repository.layout import new_pack_name, pack_index_key, pack_key
from catchup.storage import Store
from catchup.streams import Writable

FORMAT = "catchup-pack-index"
VERSION = 1
SEALED = b"catchup pack index "


@dataclass(frozen=True)
class PackedChunk:
    """Where a chunk lies: bytes [offset, offset + stored) of pack `pack`; `size` plaintext."""

    id: bytes
    pack: str
    offset: int
    stored: int
    size: int


@dataclass
class Pack:
    name: str
    size: int = 0
    chunks: list[PackedChunk] = field(default_factory=list)


def encode_index(pack: Pack, key: ChunkKey, keyspace: str, shard: str) -> bytes:
    body = {
        "pack": pack.name,
        "chunk_key": key.key_id,
        "size": pack.size,
        "chunks": [[c.id.hex(), c.offset, c.stored, c.size] for c in pack.chunks],
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    document: dict[str, object] = {"format": FORMAT, "version": VERSION}
    if key.index_key is None:
        document |= {"sha256": hashlib.sha256(canonical).hexdigest(), "index": body}
    else:
        context = SEALED + pack_index_key(keyspace, shard, pack.name).encode()
        sealed = seal(key.index_key, canonical, context)
        document |= {"chunk_key": key.key_id, "sealed_index": base64.b64encode(sealed).decode()}
    return json.dumps(document).encode()


def decode_index(blob: bytes, key: ChunkKey, keyspace: str, shard: str, name: str) -> Pack:
    """A pack's index, checked: sealed by `key` (or, unencrypted, matching its checksum) and
    describing the pack it is stored beside."""
    where = pack_index_key(keyspace, shard, name)
    try:
        document = json.loads(blob)
        if document.get("format") != FORMAT or document.get("version") != VERSION:
            raise ValueError("not a catchup pack index of version 1")
        if key.index_key is not None:
            sealed = base64.b64decode(document["sealed_index"], validate=True)
            canonical = unseal(
                key.index_key, sealed, SEALED + where.encode(), "failed authentication"
            )
            body = json.loads(canonical)
        else:
            body = document["index"]
            canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
            if hashlib.sha256(canonical).hexdigest() != document["sha256"]:
                raise IntegrityError(f"pack index {where} does not match its checksum")
        if body["pack"] != name or body["chunk_key"] != key.key_id:
            raise IntegrityError(f"pack index {where} describes another pack or chunk key")
        chunks = [
            PackedChunk(bytes.fromhex(c[0]), name, int(c[1]), int(c[2]), int(c[3]))
            for c in body["chunks"]
        ]
        return Pack(name, int(body["size"]), chunks)
    except DecryptionError as exc:
        raise IntegrityError(f"pack index {where}: {exc}: altered, or of another key") from None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, binascii.Error) as exc:
        raise IntegrityError(
            f"pack index {where} is unreadable ({type(exc).__name__}): altered or damaged"
        ) from None


class PackNames:
    """Packs numbered in order of first mention: a table record or an index row holds
    the number, `names` the names."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._numbers: dict[str, int] = {}

    def number(self, name: str) -> int:
        found = self._numbers.get(name)
        if found is None:
            found = self._numbers[name] = len(self.names)
            self.names.append(name)
        return found


class PackWriter:
    """Appends sealed chunks to packs, starting a new one past `limit` bytes; a pack's
    index is stored right after the pack. Each thread writes a pack of its own, so the
    chunks of one stretch of a file lie back to back and a restore reads them in one
    ranged read."""

    def __init__(
        self,
        store: Store,
        key: ChunkKey,
        keyspace: str,
        shard: str,
        limit: int,
    ) -> None:
        self.store, self.key, self.keyspace, self.shard = store, key, keyspace, shard
        self.limit = limit
        self.stored: list[Pack] = []
        self._lock = threading.Lock()
        self._open: dict[int, _OpenPack] = {}  # by thread

    def add(self, chunk_id: bytes, blob: bytes, size: int) -> PackedChunk:
        thread = threading.get_ident()
        with self._lock:
            current = self._open.get(thread)
        if current is None:
            current = _OpenPack(self.store, pack_key, self.keyspace, self.shard)
            with self._lock:
                self._open[thread] = current
        chunk = current.append(chunk_id, blob, size)
        if current.pack.size >= self.limit:
            with self._lock:
                del self._open[thread]
            self._finish(current)
        return chunk

    def close(self) -> None:
        """Store every pack still being written, and its index."""
        with self._lock:
            remaining, self._open = list(self._open.values()), {}
        for current in remaining:
            self._finish(current)

    def abort(self) -> None:
        """Abandon the packs being written: their uploads are never completed."""
        with self._lock:
            remaining, self._open = list(self._open.values()), {}
        for current in remaining:
            current.abandon()

    def _finish(self, current: _OpenPack) -> None:
        current.complete()  # the pack now exists
        pack = current.pack
        self.store.put(
            pack_index_key(self.keyspace, self.shard, pack.name),
            encode_index(pack, self.key, self.keyspace, self.shard),
        )
        with self._lock:
            self.stored.append(pack)


class _OpenPack:
    """A pack whose upload is under way."""

    def __init__(
        self, store: Store, key_of: Callable[[str, str, str], str], keyspace: str, shard: str
    ) -> None:
        self.pack = Pack(new_pack_name())
        self._upload: AbstractContextManager[Writable] = store.writer(
            key_of(keyspace, shard, self.pack.name)
        )
        self._sink = self._upload.__enter__()

    def append(self, chunk_id: bytes, blob: bytes, size: int) -> PackedChunk:
        chunk = PackedChunk(chunk_id, self.pack.name, self.pack.size, len(blob), size)
        self._sink.write(blob)
        self.pack.size += len(blob)
        self.pack.chunks.append(chunk)
        return chunk

    def complete(self) -> None:
        self._upload.__exit__(None, None, None)

    def abandon(self) -> None:
        try:
            raise RuntimeError("backup aborted")
        except RuntimeError as exc:
            self._upload.__exit__(type(exc), exc, exc.__traceback__)
