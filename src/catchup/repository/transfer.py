"""Moving a data dir into the store and back: files in parallel, each streamed
through the codec, every file's hash checked on the way back.

The scanner refuses what it cannot archive faithfully (an unreadable dir, a
symlink, a special file the engine does not exclude) instead of skipping it.
A restore writes only below its target: it walks every path one component at
a time without following symlinks, creates everything exclusively with private
modes, and applies a file's recorded owner permission bits only once its hash matched.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, NoReturn, TypeVar

from catchup.codec import CodecSettings, decode, encode
from catchup.codec.encryption import Encryptor
from catchup.errors import CatchupError, IntegrityError
from catchup.repository.layout import object_key
from catchup.repository.manifest import FileEntry
from catchup.storage import Store
from catchup.streams import Readable, ReadableInto

T = TypeVar("T")
# Covariant so that a reader over a file is a reader over any Readable.
S = TypeVar("S", bound=Readable, covariant=True)
ByteCounter = Callable[[int], None]  # called with the number of bytes just processed

DIR_MODE = 0o700  # restored directories; nobody else may look in while plaintext arrives
FILE_MODE = 0o600  # restored files until their hash is checked
# Of a recorded mode, the only bits a restore applies: the owner's. No setuid etc., and no
# group or other bits: MariaDB and PostgreSQL data files need none (PostgreSQL accepts 0600
# files in a 0700 tree), and a restore often runs as root into a shared disk.
PERMISSIONS = 0o700
NO_FOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class DataDirError(CatchupError):
    """The stopped data dir cannot be archived faithfully as it is."""


class RestoreTargetError(CatchupError):
    """A restore's target cannot be created or written."""


@dataclass(frozen=True)
class DataDirListing:
    directories: list[str]
    files: list[tuple[str, int, int]]  # relative path, size, mode

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self.files)


def scan_data_dir(root: Path, excluded: Callable[[str], bool]) -> DataDirListing:
    """Every directory and regular file under `root` that `excluded` keeps.

    `excluded` is asked first, so what the engine leaves out never fails the scan; any
    other entry that is not a directory or a regular file, and any entry that cannot be
    read, is an error naming it: a backup that silently lacks it would restore broken.
    """

    def unreadable(exc: OSError) -> NoReturn:
        raise DataDirError(
            f"cannot list '{exc.filename}' in the data dir: {exc.strerror}; the backup "
            "would miss it"
        )

    directories: list[str] = []
    files: list[tuple[str, int, int]] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        if rel_dir != ".":
            directories.append(rel_dir)
        entries = [(name, True) for name in dirnames] + [(name, False) for name in filenames]
        dirnames.clear()
        for name, _ in sorted(entries):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if excluded(rel):
                continue
            path = Path(dirpath) / name
            try:
                info = os.lstat(path)
            except OSError as exc:
                unreadable(exc)
            if stat.S_ISDIR(info.st_mode):
                dirnames.append(name)
            elif stat.S_ISREG(info.st_mode):
                files.append((rel, info.st_size, stat.S_IMODE(info.st_mode)))
            else:
                raise DataDirError(
                    f"'{path}' in the data dir is a {_kind(info.st_mode)}, not a regular file "
                    "or directory; catchup cannot archive it faithfully, so it refuses the "
                    "backup rather than leave it out"
                )
    return DataDirListing(directories, files)


def _kind(mode: int) -> str:
    kinds = {
        stat.S_ISLNK: "symbolic link",
        stat.S_ISSOCK: "socket",
        stat.S_ISFIFO: "named pipe",
        stat.S_ISBLK: "block device",
        stat.S_ISCHR: "character device",
    }
    return next((name for test, name in kinds.items() if test(mode)), "special file")


def upload_files(
    store: Store,
    prefix: str,
    root: Path,
    listing: DataDirListing,
    codec: CodecSettings,
    jobs: int,
    encryptor: Encryptor | None = None,
    progress: ByteCounter | None = None,
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
    progress: ByteCounter | None = None,
    directories: Iterable[str] = (),
) -> None:
    """Create `directories`, then write every entry under `target`, refusing any whose
    hash does not match.

    With `target` None, every object is read, authenticated and hashed, and
    the plaintext discarded: `verify --deep`.
    """
    below = RestoreTarget(target) if target else None

    def download(entry: FileEntry) -> None:
        name = prefix + entry.object
        with store.reader(name) as source:
            sink = (
                open(os.devnull, "wb")  # noqa: SIM115 - closed by the with below
                if below is None
                else os.fdopen(below.create_file(entry.path), "wb")
            )
            with sink:
                decode(
                    ProgressReader(source, progress), sink, entry.hash, entry.size, name, encryptor
                )
                if below is not None:  # the recorded mode only once the hash matched
                    sink.flush()
                    os.fchmod(sink.fileno(), entry.mode & PERMISSIONS)

    try:
        if below:
            for directory in sorted(directories, key=lambda d: d.count("/")):
                below.make_directory(directory)
        run_parallel(download, [(e,) for e in entries], jobs)
    finally:
        if below:
            below.close()


class RestoreTarget:
    """A restore's target dir, held open: every path below it is reached one component at
    a time with O_NOFOLLOW, so no symlink (planted, or raced in) can lead outside it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # The root itself is the operator's choice and may be a symlink; nothing below it.
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.fd)

    def make_directory(self, relative: str) -> None:
        os.close(self._directory(relative.split("/")))

    def create_file(self, relative: str) -> int:
        """A new file's descriptor, mode FILE_MODE; refuses any path that already exists."""
        *parents, name = relative.split("/")
        parent = self._directory(parents)
        try:
            return os.open(name, NEW_FILE, FILE_MODE, dir_fd=parent)
        except FileExistsError:
            raise IntegrityError(
                f"refusing to restore '{relative}' into '{self.root}': it exists already "
                "(a symlink or a duplicate entry); the manifest was altered"
            ) from None
        finally:
            os.close(parent)

    def _directory(self, parts: list[str]) -> int:
        """The descriptor of the directory `parts` below the root, created (0700) as needed."""
        fd = os.dup(self.fd)
        try:
            for depth, part in enumerate(parts):
                # It may exist: made for another file, or not a directory (refused below).
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, DIR_MODE, dir_fd=fd)
                try:
                    child = os.open(part, NO_FOLLOW_DIR, dir_fd=fd)
                except OSError as exc:  # ELOOP: a symlink; ENOTDIR: a file
                    raise IntegrityError(
                        f"refusing to restore through '{'/'.join(parts[: depth + 1])}' in "
                        f"'{self.root}': it is not a directory ({exc.strerror}); the manifest "
                        "was altered or the target is being tampered with"
                    ) from None
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise


def run_parallel(func: Callable[..., T], tasks: Sequence[tuple[object, ...]], jobs: int) -> list[T]:
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


class ProgressReader(Generic[S]):
    """Reports bytes read from a stream to a progress callback."""

    def __init__(self, stream: S, progress: ByteCounter | None) -> None:
        self.stream = stream
        self.progress = progress

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        if self.progress and data:
            self.progress(len(data))
        return data

    def readinto(self: ProgressReader[ReadableInto], buffer: bytearray) -> int:
        count = self.stream.readinto(buffer)
        if self.progress and count:
            self.progress(count)
        return count
