"""Finding the processes a test started, by the directory their command lines mention:
how the integration tests prove that a cycle, killed or cancelled, leaves no server behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import zstandard


def command_lines() -> Iterator[tuple[int, bytes]]:
    """Each live process's pid and NUL-separated command line; one that exits while it is
    being read is skipped."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        yield int(proc.name), cmdline


def processes_under(root: Path, program: bytes = b"") -> list[int]:
    """Pids of the processes whose command line mentions `root` (and `program`, if given)."""
    return [pid for pid, line in command_lines() if str(root).encode() in line and program in line]


def stored_plaintext(path: Path) -> bytes:
    """An object of an unencrypted repository as a secret would appear in it: a format 2
    object or table decompressed, a format 3 pack's chunks decompressed one by one (each
    chunk is its own zstd frame), anything else (manifests, indexes) as it is."""
    blob = path.read_bytes()
    if path.suffix == ".zst":
        return zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    if path.suffix != ".pack":
        return blob
    plain = bytearray()
    while blob:
        frame = zstandard.ZstdDecompressor().decompressobj()
        plain += frame.decompress(blob)
        blob = frame.unused_data
    return bytes(plain)
