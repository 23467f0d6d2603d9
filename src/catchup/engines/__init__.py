"""Database engines behind one small interface.

The cycle talks to a `Source` (the production server; read-only questions and
the log stream) and an `Instance` (the ephemeral server it builds the next
backup in). All SQL and server-binary detail lives below this package.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

from catchup.cancel import CancelToken
from catchup.config import Config, Shard

StepProgress = Callable[[int, int], None]  # done, total (units depend on the step)
Progress = StepProgress  # its old name, until engines/* say StepProgress (issue 13)


class Coverage(Enum):
    COVERED = "covered"  # the source still holds the log since the backup
    PURGED = "purged"  # it does not: bootstrap again
    COSTLY = "costly"  # it does, but a fresh bootstrap costs the source less
    AHEAD = "ahead"  # the backup has transactions the source never had: refuse
    FOREIGN = "foreign"  # the backup comes from another history: refuse


@dataclass(frozen=True)
class Verdict:
    coverage: Coverage
    reason: str


@dataclass(frozen=True)
class Finding:
    """One line of `catchup check`."""

    check: str
    ok: bool
    detail: str


class Source(Protocol):
    """The shard's production server, as seen by one cycle."""

    @property
    def bytes_sent(self) -> int:
        """Bytes the source has sent to this cycle so far, measured on the wire."""
        ...

    def server_version(self) -> str: ...

    def require_ready(self) -> None:
        """Raise a SourceError if the source cannot serve a cycle at all (no log to replicate
        from, say): checked in the precheck, before any instance is provisioned."""
        ...

    def identity(self) -> str:
        """Which server answers: it changes when another server (a promoted replica, a
        replacement) takes the endpoint's place. Recorded in every manifest."""
        ...

    def checkpoint(self) -> str:
        """The source's current position; this cycle's backup will stand exactly there."""
        ...

    def judge(self, backup_position: str) -> Verdict:
        """Can the source send everything after `backup_position`?"""
        ...

    def check(self) -> list[Finding]:
        """Connectivity, settings and privileges, for `catchup check`."""
        ...

    def estimated_data_bytes(self) -> int: ...

    def committed(self, position: str) -> None:
        """The backup at `position` is committed: the source may release what it held for it."""
        ...


class Instance(Protocol):
    """An ephemeral server for one cycle; destroyed when its context exits."""

    @property
    def data_dir(self) -> Path: ...

    def bootstrap(self, source: Source, cancel: CancelToken, progress: Progress) -> None:
        """Fill a fresh data dir from a consistent copy of the source, and start."""
        ...

    def start(self, cancel: CancelToken) -> None:
        """Start the server on the restored data dir, isolated from clients."""
        ...

    def catch_up(
        self, source: Source, checkpoint: str, cancel: CancelToken, progress: Progress
    ) -> str:
        """Replay the source's log up to `checkpoint`, or raise; returns the position the
        data now stands at (the checkpoint itself, unless the engine can only stop past it)."""
        ...

    def stop_for_archive(self) -> None:
        """Forget the source, make the files compact, and shut down cleanly."""
        ...

    def server_version(self) -> str: ...

    def is_archived(self, relative_path: str) -> bool:
        """Whether a file of the stopped data dir belongs in the backup."""
        ...

    def open_for_checks(self, position: str, cancel: CancelToken) -> None:
        """Start a restored backup so it can be queried, standing exactly at `position`."""
        ...

    def verify(self, expected_position: str) -> list[Finding]:
        """Check an instance opened for checks: position and every table."""
        ...

    def table_checksums(self) -> dict[str, int | None]:
        """A checksum of every user table, to compare with the source."""
        ...


class Engine(Protocol):
    name: str

    def open_source(self, config: Config, shard: Shard) -> AbstractContextManager[Source]: ...

    def provision(
        self, config: Config, shard: Shard, server_version: str
    ) -> AbstractContextManager[Instance]:
        """An ephemeral instance able to run data of `server_version` (the source's or backup's)."""
        ...

    def prepare_restored(self, data_dir: Path, position: str) -> str:
        """Make a restored data dir start on a stock server at exactly `position`;
        returns how to start it, for the operator."""
        ...


def engine_for(name: str) -> Engine:
    if name == "mariadb":
        from catchup.engines.mariadb import MariaDBEngine

        return MariaDBEngine()
    if name == "postgres":
        from catchup.engines.postgres import PostgresEngine

        return PostgresEngine()
    raise ValueError(f"unknown engine {name!r}")
