"""Streaming stages between a file and its stored object: hash, compress,
encrypt. Each stage is a writer wrapping the next, so memory stays bounded by a
few segments per file whatever the file's size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from catchup.codec.encryption import Encryptor
from catchup.errors import IntegrityError

CHUNK = 1 << 20


@dataclass(frozen=True)
class CodecSettings:
    level: int = 1
    threads: int = 0

    def describe(self) -> dict[str, object]:
        return {"algorithm": "zstd", "level": self.level}


@dataclass(frozen=True)
class Encoded:
    size: int  # plaintext bytes
    sha256: str  # of the plaintext
    stored_size: int


class _CountingWriter:
    """Counts the bytes passed through to `sink`."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.count = 0

    def write(self, data: bytes | memoryview) -> int:
        self.count += len(data)
        return self.sink.write(data)

    def flush(self) -> None:
        self.sink.flush()


def encode(
    source: BinaryIO,
    sink: BinaryIO,
    settings: CodecSettings,
    encryptor: Encryptor | None = None,
    name: str = "",
) -> Encoded:
    """Compress (and encrypt) `source` into `sink`, hashing the plaintext on the way.

    `name` is the object's key: encryption binds the ciphertext to it.
    """
    digest = hashlib.sha256()
    counted = _CountingWriter(sink)
    target = encryptor.writer(counted, name) if encryptor else counted  # type: ignore[arg-type]
    compressor = zstandard.ZstdCompressor(level=settings.level, threads=settings.threads)
    size = 0
    with compressor.stream_writer(target, closefd=False) as compressed:  # type: ignore[arg-type]
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            compressed.write(chunk)
            size += len(chunk)
    if encryptor:
        target.close()
    return Encoded(size=size, sha256=digest.hexdigest(), stored_size=counted.count)


def decode(
    source: BinaryIO,
    sink: BinaryIO,
    expected_sha256: str,
    name: str,
    encryptor: Encryptor | None = None,
) -> int:
    """Decrypt and decompress `source` into `sink`; refuse it unless its hash is as expected."""
    digest = hashlib.sha256()
    size = 0
    plain_source = encryptor.reader(source, name) if encryptor else source
    try:
        with zstandard.ZstdDecompressor().stream_reader(plain_source, closefd=False) as plain:
            while chunk := plain.read(CHUNK):
                digest.update(chunk)
                sink.write(chunk)
                size += len(chunk)
    except zstandard.ZstdError as exc:
        raise IntegrityError(f"stored object {name} is corrupt: {exc}") from None
    if digest.hexdigest() != expected_sha256:
        raise IntegrityError(
            f"stored object {name} does not match its manifest hash (sha256 "
            f"{digest.hexdigest()[:16]}… ≠ {expected_sha256[:16]}…); the backup is damaged"
        )
    return size
