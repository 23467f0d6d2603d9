"""Backing up a selection of shards: N cycles under a concurrency limit, no
coordinator, each shard under its own lock. One shard's failure never stops
the others.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from catchup.cancel import CancelToken
from catchup.config import Config, Shard
from catchup.cycle import CycleOptions, Reporter, run_cycle
from catchup.errors import (
    Cancelled,
    CatchupError,
    CatchUpStalledError,
    ExitCode,
    ShardBusyError,
)
from catchup.fleet.lock import shard_lock
from catchup.repository import Manifest, Repository

log = logging.getLogger("catchup.fleet")
RESULT_PREFIX = "CATCHUP_RESULT "


def shard_message(shard: str, error: Exception | str) -> str:
    """`error` as a line that starts with its shard, once: many errors name it already."""
    text = str(error)
    if text.startswith(f"shard {shard} "):  # e.g. "shard X is already being backed up"
        return text
    return f"shard {shard}: {shard_reason(shard, text)}"


def shard_reason(shard: str, error: Exception | str) -> str:
    """`error` without its leading "shard X: ", to be wrapped in a message of its own."""
    return str(error).removeprefix(f"shard {shard}: ")


@dataclass
class ShardResult:
    shard: str
    ok: bool
    seconds: float
    kind: str | None = None
    backup_id: str | None = None
    parent: str | None = None
    position: str | None = None
    bytes_from_source: int = 0
    data_bytes: int = 0
    stored_bytes: int = 0
    new_stored_bytes: int | None = None  # format 3: what the backup added to the store
    durations: dict[str, float] = field(default_factory=dict)
    rebootstrap_reason: str | None = None
    error: str | None = None
    busy: bool = False
    stalled: bool = False  # catch-up made no progress for the stall timeout
    cancelled: bool = False

    @classmethod
    def success(cls, manifest: Manifest, seconds: float) -> ShardResult:
        return cls(
            shard=manifest.shard_name,
            ok=True,
            seconds=round(seconds, 3),
            kind=manifest.kind,
            backup_id=manifest.backup_id,
            parent=manifest.parent,
            position=manifest.position,
            bytes_from_source=manifest.bytes_from_source,
            data_bytes=manifest.data_bytes,
            stored_bytes=manifest.stored_bytes,
            new_stored_bytes=manifest.new_stored_bytes,
            durations=manifest.durations,
            rebootstrap_reason=manifest.rebootstrap_reason,
        )

    @classmethod
    def failure(cls, shard: str, started: float, error: Exception | str) -> ShardResult:
        """A failed cycle of `shard` that began at monotonic time `started`."""
        return cls(
            shard,
            ok=False,
            seconds=round(time.monotonic() - started, 3),
            error=shard_message(shard, error),
            busy=isinstance(error, ShardBusyError),
            stalled=isinstance(error, CatchUpStalledError),
            cancelled=isinstance(error, Cancelled),
        )

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    def result_line(self) -> str:
        """One log line a supervisor (the Kubernetes executor) reads the result from."""
        return RESULT_PREFIX + json.dumps(self.to_json(), separators=(",", ":"))

    @classmethod
    def from_result_line(cls, line: str) -> ShardResult | None:
        if not line.startswith(RESULT_PREFIX):
            return None
        try:
            return cls(**json.loads(line.removeprefix(RESULT_PREFIX)))
        except (ValueError, TypeError):
            return None


def backup_shard(
    config: Config,
    shard: Shard,
    repository: Repository,
    options: CycleOptions,
    reporter: Reporter,
    cancel: CancelToken,
) -> ShardResult:
    started = time.monotonic()
    try:
        with shard_lock(
            config.work_dir,
            repository.store,
            shard.keyspace,
            shard.shard,
            config.lock.lease_seconds,
            cancel,
        ) as held:
            manifest = run_cycle(
                config, shard, repository, options, reporter, held.cancel, confirm=held.confirm
            )
        return ShardResult.success(manifest, time.monotonic() - started)
    except CatchupError as exc:
        reporter.step(shard.name, "failed")
        result = ShardResult.failure(shard.name, started, exc)
        log.error("%s", result.error)
        return result
    except Exception as exc:
        reporter.step(shard.name, "failed")
        result = ShardResult.failure(shard.name, started, f"unexpected {type(exc).__name__}: {exc}")
        log.exception("%s", result.error)
        return result


def backup_fleet(
    config: Config,
    shards: list[Shard],
    repository: Repository,
    options: CycleOptions,
    reporter: Reporter,
    cancel: CancelToken,
    parallel: int | None = None,
) -> list[ShardResult]:
    workers = max(1, min(parallel or config.parallel, len(shards)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cycle") as pool:
        futures = [
            pool.submit(backup_shard, config, shard, repository, options, reporter, cancel)
            for shard in shards
        ]
        return [future.result() for future in futures]


def exit_code(results: list[ShardResult], cancel: CancelToken) -> ExitCode:
    if cancel.cancelled:
        return ExitCode.INTERRUPTED
    failed = [r for r in results if not r.ok]
    if not failed:
        return ExitCode.OK
    if all(r.busy for r in failed):
        return ExitCode.BUSY
    return ExitCode.FAILED
