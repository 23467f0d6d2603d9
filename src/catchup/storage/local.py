"""A local (or mounted) directory as an object store.

Objects are files; a write goes to a hidden temporary name, is fsynced, and is
renamed into place, so a crash never leaves a partial object under its key.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from catchup.storage import ObjectNotFound, StorageError, StoredObject

TEMP_MARK = ".tmp-"


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise StorageError(f"{self.url}: invalid object key {key!r}")
        return self.root / key

    @contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        final = self._path(key)
        temp = final.with_name(f"{TEMP_MARK}{final.name}.{uuid.uuid4().hex[:8]}")
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            with open(temp, "wb") as stream:
                yield stream
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temp, final)
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

    def list(self, prefix: str) -> Iterator[StoredObject]:
        base = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix) and not name.startswith(TEMP_MARK):
                    yield StoredObject(key, path.stat().st_size)

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
