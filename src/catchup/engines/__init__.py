"""Database engines behind one small interface.

The cycle talks to a `Source` (the production server; read-only questions and
the log stream) and a `Replica` (the ephemeral server it builds the next backup
in, provisioned for that source); verification to an `Instance` (an ephemeral
server on a restored backup). All SQL and server-binary detail lives below this
package, one package per engine with the same files (see docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Protocol, TypeVar

from catchup.cancel import CancelToken
from catchup.config import Config, Shard

StepProgress = Callable[[int, int], None]  # done, total (units depend on the step)
S = TypeVar("S", bound="Source")


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


@dataclass(frozen=True)
class LogMark:
    """How far a prefix of a log file goes, in the engine's terms."""

    position: str  # the engine's position after the last whole transaction in it, or ""
    time: datetime | None  # that transaction's commit time (UTC), if it has one


@dataclass(frozen=True)
class LogTarget:
    """Where a point-in-time restore stops: at a commit time or at a position (one is set).

    Both are inclusive: a time target replays every transaction committed at or before
    `time`; a position target replays up to and including the transaction at `position`.
    """

    time: datetime | None = None
    position: str | None = None

    def describe(self) -> str:
        return self.time.isoformat() if self.time else f"position {self.position}"


class LogStream(Protocol):
    """The source's log as the server's own tool writes it into a local spool directory.

    File names are unique within a shard's whole log history (the engine makes them so,
    e.g. with the timeline or the source's server id); each file only grows, and its
    bytes, once settled, never change. The archiver uploads what is new in each file.
    """

    @property
    def start(self) -> str:
        """The position the stream began at: the end of the archive when the engine could
        resume exactly there, else a later one (the archiver records a gap between)."""
        ...

    def poll(self) -> list[tuple[str, int]]:
        """(name, settled length) of every spool file, in log order. Raises LogStreamError
        with the tool's own words when it has exited."""
        ...

    def path(self, name: str) -> Path:
        """Where the spool file `name` is on disk now."""
        ...

    def mark(self, name: str, length: int) -> LogMark:
        """The position and commit time after the last whole transaction in the first
        `length` bytes of file `name` (every earlier file included)."""
        ...

    def forget(self, name: str) -> None:
        """The file is archived and the tool writes a later one: remove it from the spool."""
        ...


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

    def release(self, position: str) -> None:
        """Release what the source held for the backup at `position`: call it only once
        that backup is committed."""
        ...


class Instance(Protocol):
    """An ephemeral server on a data dir; destroyed when its context exits."""

    @property
    def data_dir(self) -> Path: ...

    def server_version(self) -> str: ...

    def open_for_checks(self, position: str, cancel: CancelToken) -> None:
        """Start a restored backup so it can be queried, standing exactly at `position`."""
        ...

    def verify(self, expected_position: str) -> list[Finding]:
        """Check an instance opened for checks: position and every table."""
        ...

    def table_checksums(self) -> dict[str, int | None]:
        """A checksum of every user table, to compare with the source."""
        ...

    def replay_log(
        self, position: str, log_dir: Path, target: LogTarget, cancel: CancelToken
    ) -> str:
        """On a restored backup standing at `position`, replay the archived log files in
        `log_dir` (restored by name, in full) up to exactly `target`; leave the server
        running and open for checks; return the position reached."""
        ...

    def stop_for_restore(self) -> str:
        """Shut down cleanly, so that a stock server starts on the data dir as it is;
        returns how to start it, for the operator."""
        ...


class Replica(Protocol):
    """A cycle's ephemeral instance, tied to the source it copies: it builds the next
    backup. Destroyed when its context exits."""

    @property
    def data_dir(self) -> Path: ...

    def bootstrap(self, cancel: CancelToken, progress: StepProgress) -> None:
        """Fill a fresh data dir from a consistent copy of the source, and start."""
        ...

    def start(self, cancel: CancelToken) -> None:
        """Start the server on the restored data dir, isolated from clients."""
        ...

    def catch_up(
        self,
        checkpoint: str,
        cancel: CancelToken,
        progress: StepProgress,
        archived: Path | None = None,
    ) -> str:
        """Replay the source's log up to `checkpoint`, or raise; returns the position the
        data now stands at (the checkpoint itself, unless the engine can only stop past it).
        `archived`: a dir of log files from the archive (whole, by name) that cover the
        backup's position onwards: replay them first, so the source sends only the rest."""
        ...

    def stop_for_archive(self) -> None:
        """Forget the source, make the files compact, and shut down cleanly."""
        ...

    def server_version(self) -> str: ...

    def is_archived(self, relative_path: str) -> bool:
        """Whether a file of the stopped data dir belongs in the backup."""
        ...


class Engine(Protocol[S]):
    """One database engine. `S` is its own Source type: only a source the engine
    opened can feed its replicas."""

    name: str

    def open_source(self, config: Config, shard: Shard) -> AbstractContextManager[S]: ...

    def provision(self, config: Config, shard: Shard, source: S) -> AbstractContextManager[Replica]:
        """An ephemeral replica of `source`, able to run its server version."""
        ...

    def provision_for_checks(
        self, config: Config, shard: Shard, server_version: str
    ) -> AbstractContextManager[Instance]:
        """An ephemeral instance able to run a backup's data of `server_version`."""
        ...

    def prepare_restored(self, data_dir: Path, position: str) -> str:
        """Make a restored data dir start on a stock server at exactly `position`;
        returns how to start it, for the operator."""
        ...

    def stream_log(
        self, config: Config, shard: Shard, spool: Path, resume: str | None
    ) -> AbstractContextManager[LogStream]:
        """Stream the source's log into `spool` with the server's own tool, from `resume`
        (the end of the archive; None: from the source's current position), under this
        archiver's own replication identity (server id, slot). Stops the tool on exit."""
        ...

    def compare_positions(self, a: str, b: str) -> int | None:
        """-1, 0 or 1 as `a` is before, at or after `b` in one history; None when neither
        contains the other (different histories)."""
        ...

    def parse_position(self, text: str) -> str:
        """A position typed by an operator (`--to-position`), normalised; ValueError with
        the expected form if it is not one."""
        ...
