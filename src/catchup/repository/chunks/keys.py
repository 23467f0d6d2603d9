"""The shard's chunk key: what names and seals the chunks its backups share.

A chunk's id is its plaintext's BLAKE3 hash, keyed by a secret of the shard when the
repository is encrypted, so that someone holding only the bucket cannot confirm that
a chunk holds a plaintext they guess. The same secret seals each chunk (AES-256-GCM,
bound to its id) and each pack's index. It is stored only wrapped by a
key-encryption key, in `<keyspace>/<shard>/chunks/keys/<id>.json`, bound to that name.

A backup reuses the chunk key that the configured active key-encryption key wraps
(the newest such); after a key rotation, a new chunk key starts, and the first backup
under it stores every chunk once again.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass, field
from functools import cached_property

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from catchup.codec.encryption import DecryptionError, new_data_key
from catchup.codec.keys import Keyring
from catchup.errors import IntegrityError, KeyUnavailableError
from catchup.repository.layout import CHUNK_KEY_ID, chunk_key_object, chunks_prefix, new_pack_name
from catchup.storage import ObjectNotFound, Store

FORMAT = "catchup-chunk-key"
VERSION = 1
NONCE = 12
ID_SIZE = 32


@dataclass(frozen=True)
class ChunkKey:
    """A shard's chunk key; `key_id` and `secret` None: an unencrypted repository, whose
    chunk ids are plain BLAKE3 and whose chunks are only compressed."""

    key_id: str | None = None
    secret: bytes | None = field(default=None, repr=False)

    @property
    def encrypted(self) -> bool:
        return self.secret is not None

    def chunk_id(self, plaintext: bytes | memoryview) -> bytes:
        if self.secret is None:
            return blake3.blake3(plaintext).digest()
        return blake3.blake3(plaintext, key=self._id_key).digest()

    def seal(self, chunk_id: bytes, compressed: bytes) -> bytes:
        """nonce | AES-256-GCM(compressed), bound to the chunk's id; unencrypted: as is."""
        if self._aead is None:
            return compressed
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, compressed, b"catchup chunk " + chunk_id)

    def open(self, chunk_id: bytes, blob: bytes | memoryview) -> bytes | memoryview:
        if self._aead is None:
            return blob
        try:
            return self._aead.decrypt(blob[:NONCE], blob[NONCE:], b"catchup chunk " + chunk_id)
        except InvalidTag:
            raise DecryptionError("failed authentication") from None

    @cached_property
    def index_key(self) -> bytes | None:
        return self._derive(b"catchup pack index") if self.secret else None

    @cached_property
    def _id_key(self) -> bytes:
        return self._derive(b"catchup chunk id")

    @cached_property
    def _aead(self) -> AESGCM | None:
        return AESGCM(self._derive(b"catchup chunk seal")) if self.secret else None

    def _derive(self, info: bytes) -> bytes:
        assert self.secret is not None
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(self.secret)


PLAIN = ChunkKey()


def load_chunk_key(
    store: Store, keyring: Keyring, keyspace: str, shard: str, key_id: str
) -> ChunkKey:
    """The chunk key a backup names, unwrapped; a missing, altered or foreign one is refused."""
    name = chunk_key_object(keyspace, shard, key_id)
    if not CHUNK_KEY_ID.match(key_id):
        raise IntegrityError(f"chunk key id {key_id!r} is malformed; the manifest was altered")
    try:
        document = json.loads(store.get(name))
        if document.get("format") != FORMAT or document.get("version") != VERSION:
            raise ValueError("not a catchup chunk key of version 1")
        wrapping = keyring.get(document["key_id"], f"chunk key {name}")
        secret = wrapping.unwrap(
            base64.b64decode(document["wrapped"], validate=True), name.encode()
        )
    except ObjectNotFound:
        raise IntegrityError(
            f"chunk key {name} is missing; the shard's chunks cannot be opened"
        ) from None
    except (KeyUnavailableError, IntegrityError):
        raise
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise IntegrityError(
            f"chunk key {name} is unreadable ({type(exc).__name__}): altered or damaged"
        ) from None
    return ChunkKey(key_id, secret)


def _wrapped_for(store: Store, name: str) -> str | None:
    """The active key, as configured, when the chunk key was wrapped (a KMS alias stays an
    alias here, while `key_id` is the ARN the KMS reported)."""
    try:
        document = json.loads(store.get(name))
        return str(document["active"]) if isinstance(document, dict) else None
    except (ObjectNotFound, ValueError, KeyError):
        return None


def writing_chunk_key(
    store: Store, keyring: Keyring, keyspace: str, shard: str, preferred: str | None
) -> ChunkKey:
    """The chunk key a new backup uses: `preferred` (its parent's) if the active key wraps
    it, else the newest one the active key wraps, else a new one stored now."""
    active = keyring.active
    if active is None:
        return PLAIN
    prefix = f"{chunks_prefix(keyspace, shard)}keys/"
    names = sorted(
        (
            obj.key[len(prefix) : -len(".json")]
            for obj in store.list(prefix)
            if obj.key.endswith(".json")
        ),
        reverse=True,
    )
    candidates = ([preferred] if preferred in names else []) + names
    for key_id in candidates:
        if (
            CHUNK_KEY_ID.match(key_id)
            and _wrapped_for(store, chunk_key_object(keyspace, shard, key_id)) == active.key_id
        ):
            try:
                return load_chunk_key(store, keyring, keyspace, shard, key_id)
            except IntegrityError:
                continue  # a damaged or planted key object: never used for new chunks
    key_id = "c-" + new_pack_name()
    name = chunk_key_object(keyspace, shard, key_id)
    secret = new_data_key()
    wrapped_by, wrapped = active.wrap(secret, name.encode())
    document = {
        "format": FORMAT,
        "version": VERSION,
        "key_id": wrapped_by,
        "active": active.key_id,
        "wrapped": base64.b64encode(wrapped).decode(),
    }
    store.put(name, json.dumps(document, indent=1).encode())
    return ChunkKey(key_id, secret)
