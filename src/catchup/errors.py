"""Errors a user can act on, and the exit codes a scheduler sees.

Every error raised for a user mistake or an environmental condition is a
`CatchupError`: the CLI prints its one-line message and exits with its code,
never a traceback.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # at least one shard's cycle failed; retry later
    USAGE = 2  # bad config or arguments; a human must fix something
    BUSY = 3  # another run holds a shard's lock; retry later
    INTERRUPTED = 130


class CatchupError(Exception):
    """An error with a message meant for the operator."""

    exit_code = ExitCode.FAILED


class ConfigError(CatchupError):
    exit_code = ExitCode.USAGE


class UsageError(CatchupError):
    exit_code = ExitCode.USAGE


class ShardBusyError(CatchupError):
    exit_code = ExitCode.BUSY


class SourceError(CatchupError):
    """The source cannot serve this cycle (unreachable, privileges, purged logs...)."""


class LogsPurgedError(SourceError):
    """The source no longer holds the log since the newest backup: bootstrap again."""


class DivergedError(SourceError):
    """The backup's position is ahead of, or foreign to, the source."""


class CatchUpFailedError(CatchupError):
    """Replication stopped with an error, stalled, or ended at the wrong position."""


class CatchUpStalledError(CatchUpFailedError):
    """Replication made no progress for the stall timeout."""


class InstanceError(CatchupError):
    """The ephemeral server could not be started, reached or stopped."""


class IntegrityError(CatchupError):
    """Stored data does not match what its manifest promises."""


class KeyUnavailableError(IntegrityError):
    """A backup's key is not configured, or the KMS refuses to let catchup use it: a
    configuration or permission problem, not damage, so a cycle must not bootstrap over it."""


class NotFoundError(CatchupError):
    """No backup (or shard) by the name given."""

    exit_code = ExitCode.USAGE


class TargetNotEmptyError(UsageError):
    """A restore's target exists and is not an empty directory: restore never overwrites."""


class Cancelled(CatchupError):
    exit_code = ExitCode.INTERRUPTED


class LogStreamError(CatchupError):
    """The tool streaming a source's log stopped (the archiver restarts it with backoff)."""


class ArchiveGapError(CatchupError):
    """The archive does not reach what was asked (a gap, or outside its window): the
    operator must pick another target."""

    exit_code = ExitCode.USAGE
