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


class PackWriter:
    """Appends sealed chunks to the current pack, starting a new one past `limit` bytes;
    a pack's index is stored right after the pack. Safe to call from many threads."""

    def __init__(
        self,
        store: Store,
        key: ChunkKey,
        keyspace: str,
        shard: str,
        limit: int,
        on_stored: Callable[[Pack], None] = lambda pack: None,
    ) -> None:
        self.store, self.key, self.keyspace, self.shard = store, key, keyspace, shard
        self.limit = limit
        self.on_stored = on_stored
        self.stored: list[Pack] = []
        self._lock = threading.Lock()
        self._pack: Pack | None = None
        self._upload: AbstractContextManager[Writable] | None = None
        self._sink: Writable | None = None

    def add(self, chunk_id: bytes, blob: bytes, size: int) -> PackedChunk:
        with self._lock:
            if self._pack is None:
                self._start()
            assert self._pack is not None and self._sink is not None
            chunk = PackedChunk(chunk_id, self._pack.name, self._pack.size, len(blob), size)
            self._sink.write(blob)
            self._pack.size += len(blob)
            self._pack.chunks.append(chunk)
            if self._pack.size >= self.limit:
                self._finish()
            return chunk

    def close(self) -> None:
        """Store the pack being written and its index."""
        with self._lock:
            if self._pack is not None:
                self._finish()

    def abort(self) -> None:
        """Abandon the pack being written: its upload is never completed."""
        with self._lock:
            upload, self._upload, self._pack, self._sink = self._upload, None, None, None
            if upload is not None:
                try:
                    raise RuntimeError("backup aborted")
                except RuntimeError as exc:
                    upload.__exit__(type(exc), exc, exc.__traceback__)

    def _start(self) -> None:
        name = new_pack_name()
        self._upload = self.store.writer(pack_key(self.keyspace, self.shard, name))
        self._sink = self._upload.__enter__()
        self._pack = Pack(name)

    def _finish(self) -> None:
        pack, upload = self._pack, self._upload
        assert pack is not None and upload is not None
        self._pack, self._upload, self._sink = None, None, None
        upload.__exit__(None, None, None)  # completes the upload: the pack now exists
        self.store.put(
            pack_index_key(self.keyspace, self.shard, pack.name),
            encode_index(pack, self.key, self.keyspace, self.shard),
        )
        self.stored.append(pack)
        self.on_stored(pack)
