"""A local (or mounted) directory as an object store.

Objects are files; a write goes to a hidden temporary name, is fsynced, and is
renamed into place, so a crash never leaves a partial object under its key.

Compare-and-swap: `create` links a finished temporary file to the key, which
fails if the key exists; `replace` compares and renames under an flock on one
side file at the root. Both hold on one host and on a shared POSIX file system
whose locks span hosts (NFSv4); a version is the sha256 of the content.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO

from catchup.storage.store import ObjectNotFound, StorageError, StoredObject

TEMP_MARK = ".tmp-"
CAS_LOCK = ".catchup-cas.lock"  # never an object key: every key part starts otherwise


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"{self.url}: invalid object key {key!r}")
        return self.root / key

    def writer(self, key: str) -> AbstractContextManager[BinaryIO]:
        return self._write(key, os.replace)

    @contextmanager
    def _write(self, key: str, move: Callable[[Path, Path], None]) -> Iterator[BinaryIO]:
        """Write a temporary file beside `key`, fsync it, then `move(temp, final)` it."""
        final = self._path(key)
        temp = final.with_name(f"{TEMP_MARK}{final.name}.{uuid.uuid4().hex[:8]}")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(temp, "wb") as stream:
                yield stream
                stream.flush()
                os.fsync(stream.fileno())
            move(temp, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            raise StorageError(f"{self.url}: cannot write {key}: {exc.strerror}") from exc
        finally:
            temp.unlink(missing_ok=True)

    @contextmanager
    def reader(self, key: str) -> Iterator[BinaryIO]:
        try:
            stream = open(self._path(key), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.url}: object {key} does not exist") from None
        except OSError as exc:
            raise StorageError(f"{self.url}: cannot read {key}: {exc.strerror}") from exc
        with stream:
            yield stream

    def put(self, key: str, data: bytes) -> None:
        with self.writer(key) as stream:
            stream.write(data)

    def get(self, key: str) -> bytes:
        with self.reader(key) as stream:
            return stream.read()

    def read_range(self, key: str, start: int, buffer: memoryview) -> int:
        try:
            fd = os.open(self._path(key), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ObjectNotFound(f"{self.url}: object {key} does not exist") from None
        except OSError as exc:
            raise StorageError(f"{self.url}: cannot read {key}: {exc.strerror}") from exc
        try:
            done = 0
            while done < len(buffer):
                count = os.preadv(fd, [buffer[done:]], start + done)
                if count == 0:
                    break
                done += count
            return done
        except OSError as exc:
            raise StorageError(f"{self.url}: cannot read {key}: {exc.strerror}") from exc
        finally:
            os.close(fd)

    def list(self, prefix: str) -> Iterator[StoredObject]:
        for path, key in self._files(prefix):
            if not path.name.startswith(TEMP_MARK) and path.name != CAS_LOCK:
                yield StoredObject(key, path.stat().st_size)

    def partial_writes(self, prefix: str) -> Iterator[str]:
        for path, key in self._files(prefix):
            if path.name.startswith(TEMP_MARK):
                yield key

    def _files(self, prefix: str) -> Iterator[tuple[Path, str]]:
        base = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    yield path, key

    def create(self, key: str, data: bytes) -> str | None:
        created = True

        def link_unless_present(temp: Path, final: Path) -> None:
            nonlocal created
            try:
                os.link(temp, final)  # atomic, and refused if `final` exists
            except FileExistsError:
                created = False

        with self._write(key, link_unless_present) as stream:
            stream.write(data)
        return _version(data) if created else None

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        try:
            data = self.get(key)
        except ObjectNotFound:
            return None
        return data, _version(data)

    def replace(self, key: str, data: bytes, version: str) -> str | None:
        with self._cas_lock():
            current = self.read_versioned(key)
            if current is None or current[1] != version:
                return None
            self.put(key, data)
        return _version(data)

    @contextmanager
    def _cas_lock(self) -> Iterator[None]:
        path = self.root / CAS_LOCK
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            # Read-only is enough for flock, so runners under other uids share the file.
            handle = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"{self.url}: cannot open {CAS_LOCK}: {exc.strerror}") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            os.close(handle)  # releases the flock

    def delete_prefix(self, prefix: str) -> None:
        if not prefix.endswith("/"):
            raise StorageError(f"{self.url}: prefix {prefix!r} must end with '/'")
        directory = self._path(prefix.rstrip("/"))
        shutil.rmtree(directory, ignore_errors=True)
        self._remove_empty_parents(directory)

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        self._remove_empty_parents(path)

    def _remove_empty_parents(self, path: Path) -> None:
        """Drop directories left empty, so deleted backups leave no trace."""
        for parent in path.parents:
            if parent == self.root or not parent.is_relative_to(self.root):
                break
            try:
                parent.rmdir()
            except OSError:
                break


def _version(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
