"""The byte streams that pass between the codec and the stores.

A store's writer or reader is not always a file (an object-store upload, a ranged
download), so the codec asks only for the methods it calls.
"""

from __future__ import annotations

from typing import Protocol


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class ReadableInto(Readable, Protocol):
    """A source that fills a caller's buffer: no copy per chunk."""

    def readinto(self, buffer: bytearray, /) -> int: ...


class Writable(Protocol):
    def write(self, data: bytes | memoryview, /) -> int: ...
    def flush(self) -> None: ...
