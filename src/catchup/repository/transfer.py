"""Moving a data dir into the store and back: files in parallel, each streamed
through the codec, every file's hash checked on the way back.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from catchup.codec import CodecSettings, decode, encode
from catchup.codec.encryption import Encryptor
from catchup.repository.layout import object_key
from catchup.repository.manifest import FileEntry
from catchup.storage import Store

T = TypeVar("T")
Progress = Callable[[int], None]  # called with bytes just processed


@dataclass(frozen=True)
class DataDirListing:
    directories: list[str]
    files: list[tuple[str, int, int]]  # relative path, size, mode

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self.files)


def scan_data_dir(root: Path, excluded: Callable[[str], bool]) -> DataDirListing:
    """Every directory and regular file under `root` that `excluded` keeps."""
    directories: list[str] = []
    files: list[tuple[str, int, int]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        if rel_dir != ".":
            directories.append(rel_dir)
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            info = os.lstat(Path(dirpath) / name)
            if stat.S_ISREG(info.st_mode) and not excluded(rel):
                files.append((rel, info.st_size, stat.S_IMODE(info.st_mode)))
    return DataDirListing(directories, files)


def upload_files(
    store: Store,
    prefix: str,
    root: Path,
    listing: DataDirListing,
    codec: CodecSettings,
    jobs: int,
    encryptor: Encryptor | None = None,
    progress: Progress | None = None,
) -> list[FileEntry]:
    """Store every listed file as its own object; returns their manifest entries."""

    def upload(index: int, rel: str, mode: int) -> FileEntry:
        key = object_key(index)
        with open(root / rel, "rb") as source, store.writer(prefix + key) as sink:
            encoded = encode(ProgressReader(source, progress), sink, codec, encryptor, prefix + key)
        return FileEntry(
            path=rel,
            size=encoded.size,
            hash=encoded.digest,
            object=key,
            stored_size=encoded.stored_size,
            mode=mode,
        )

    # Largest first, so that no big file is left running alone at the end.
    order = sorted(range(len(listing.files)), key=lambda i: -listing.files[i][1])
    tasks = [(i, listing.files[i][0], listing.files[i][2]) for i in order]
    entries = run_parallel(upload, tasks, jobs)
    return [entry for _, entry in sorted(zip(order, entries, strict=True))]


def download_files(
    store: Store,
    prefix: str,
    entries: Iterable[FileEntry],
    target: Path | None,
    jobs: int,
    encryptor: Encryptor | None = None,
    progress: Progress | None = None,
) -> None:
    """Write every entry under `target`, refusing any whose hash does not match.

    With `target` None, every object is read, authenticated and hashed, and
    the plaintext discarded: `verify --deep`.
    """

    def download(entry: FileEntry) -> None:
        name = prefix + entry.object
        path = target / entry.path if target else None
        with store.reader(name) as source, open(path or os.devnull, "wb") as sink:
            decode(ProgressReader(source, progress), sink, entry.hash, entry.size, name, encryptor)
        if path:
            os.chmod(path, entry.mode)

    run_parallel(download, [(e,) for e in entries], jobs)


def run_parallel(func: Callable[..., T], tasks: list[tuple], jobs: int) -> list[T]:
    """Run `func(*task)` for each task on `jobs` threads; the first error stops the rest."""
    failed = threading.Event()

    def guarded(*task: object) -> T:
        if failed.is_set():
            raise _Skipped
        try:
            return func(*task)
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="transfer") as pool:
        futures = [pool.submit(guarded, *task) for task in tasks]
    errors = [f.exception() for f in futures]
    first = next((e for e in errors if e and not isinstance(e, _Skipped)), None)
    if first:
        raise first
    return [f.result() for f in futures]


class _Skipped(Exception):
    pass


class ProgressReader:
    """Reports bytes read from a stream to a progress callback."""

    def __init__(self, stream: object, progress: Progress | None) -> None:
        self.stream = stream
        self.progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)  # type: ignore[attr-defined]
        if self.progress and data:
            self.progress(len(data))
        return data

    def readinto(self, buffer: bytearray) -> int:
        count = self.stream.readinto(buffer)  # type: ignore[attr-defined]
        if self.progress and count:
            self.progress(count)
        return count
