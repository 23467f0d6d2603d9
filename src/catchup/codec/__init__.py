"""Streaming stages between a file and its stored object: hash, compress,
encrypt. Each stage is a writer wrapping the next, so memory stays bounded by a
few segments per file whatever the file's size.

Plaintext hashes are BLAKE3: on this machine it hashes at 5,150 MiB/s on one
core against 1,480 for sha256, and hashing every byte is a fixed cost of every
backup and restore. Manifests of format 1 carry sha256 and still verify.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Protocol, cast

import blake3
import zstandard

from catchup.codec.encryption import Encryptor
from catchup.errors import IntegrityError
from catchup.streams import Readable, ReadableInto, Writable

CHUNK = 1 << 20
HASH = "blake3"
HASHES: dict[str, Callable[[], Hasher]] = {"blake3": blake3.blake3, "sha256": hashlib.sha256}


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...
    def hexdigest(self) -> str: ...


@dataclass(frozen=True)
class CodecSettings:
    level: int = 1
    threads: int = 0

    def describe(self) -> dict[str, object]:
        return {"algorithm": "zstd", "level": self.level}


@dataclass(frozen=True)
class Encoded:
    size: int  # plaintext bytes
    digest: str  # "<algorithm>:<hex>" of the plaintext
    stored_size: int


class _CountingWriter:
    """Counts the bytes passed through to `sink`; hashes them and refuses more
    than `limit` of them when asked to."""

    def __init__(
        self,
        sink: Writable,
        hasher: Hasher | None = None,
        limit: int | None = None,
        name: str = "",
    ) -> None:
        self.sink = sink
        self.hasher = hasher
        self.limit = limit
        self.name = name
        self.count = 0

    def write(self, data: bytes | memoryview) -> int:
        if self.hasher:
            self.hasher.update(data)
        self.count += len(data)
        if self.limit is not None and self.count > self.limit:
            # An unencrypted object is not authenticated: stop one that inflates
            # beyond its manifest size before it fills the disk.
            raise IntegrityError(
                f"stored object {self.name} decompresses to more than the manifest's "
                f"{self.limit} bytes; the backup is damaged"
            )
        return self.sink.write(data)

    def flush(self) -> None:
        self.sink.flush()


def encode(
    source: ReadableInto,
    sink: Writable,
    settings: CodecSettings,
    encryptor: Encryptor | None = None,
    name: str = "",
) -> Encoded:
    """Compress (and encrypt) `source` into `sink`, hashing the plaintext on the way.

    `name` is the object's key: encryption binds the ciphertext to it.
    """
    hasher = HASHES[HASH]()
    counted = _CountingWriter(sink)
    sealed = encryptor.writer(counted, name) if encryptor else None
    target: Writable = sealed or counted
    compressor = zstandard.ZstdCompressor(level=settings.level, threads=settings.threads)
    buffer = bytearray(CHUNK)
    size = 0
    with (
        memoryview(buffer) as view,
        # zstandard's stub asks for a whole IO; the writer calls only write and flush.
        compressor.stream_writer(
            cast(IO[bytes], target), closefd=False, write_size=CHUNK
        ) as compressed,
    ):
        while read := source.readinto(buffer):
            hasher.update(view[:read])
            compressed.write(view[:read])
            size += read
    if sealed:
        sealed.close()
    return Encoded(size=size, digest=f"{HASH}:{hasher.hexdigest()}", stored_size=counted.count)


def decode(
    source: Readable,
    sink: Writable,
    expected: str,
    expected_size: int,
    name: str,
    encryptor: Encryptor | None = None,
) -> None:
    """Decrypt and decompress `source` into `sink`; refuse it unless its hash
    ("<algorithm>:<hex>") and size are as expected."""
    algorithm, _, expected_hex = expected.partition(":")
    hasher = HASHES[algorithm]()
    plain = _CountingWriter(sink, hasher, expected_size, name)
    pieces: Iterable[bytes] = (
        encryptor.open(source, name) if encryptor else iter(lambda: source.read(CHUNK), b"")
    )
    try:
        decompressor = zstandard.ZstdDecompressor()
        # As in encode: the stub's IO is more than the writer uses.
        with decompressor.stream_writer(
            cast(IO[bytes], plain), closefd=False, write_size=CHUNK
        ) as writer:
            for piece in pieces:
                writer.write(piece)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"stored object {name} is corrupt: {exc}") from None
    actual = hasher.hexdigest()
    if actual != expected_hex:
        raise IntegrityError(
            f"stored object {name} does not match its manifest hash ({algorithm} "
            f"{actual[:16]}… ≠ {expected_hex[:16]}…); the backup is damaged"
        )
    if plain.count != expected_size:
        raise IntegrityError(f"stored object {name}: its size differs from the manifest's")
