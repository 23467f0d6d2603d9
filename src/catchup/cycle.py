"""One backup cycle of one shard, step by step.

    precheck → provision → restore (or bootstrap) → start → checkpoint →
    restore log → catch up → stop → back up → destroy

The cycle knows no SQL and no bucket: it drives an engine's `Source`, the
`Replica` the engine provisions for that source, and the `Repository`.
Whatever fails, the instance is destroyed, the previous backups are untouched
and nothing half-written becomes visible.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from catchup.archived import archived_after, wait_for_archive
from catchup.cancel import CancelToken
from catchup.codec import CodecSettings
from catchup.config import Config, Shard
from catchup.engines import Coverage, Engine, Replica, Source
from catchup.engines.registry import engine_for
from catchup.engines.workdir import instance_dir
from catchup.errors import (
    CatchupError,
    DivergedError,
    KeyUnavailableError,
    LogsPurgedError,
    SourceError,
)
from catchup.repository import BackupHeader, Manifest, Repository
from catchup.repository.archive import ArchiveIndex, ArchiveRecord
from catchup.repository.manifest import SourceInfo

log = logging.getLogger("catchup.cycle")


class Reporter(Protocol):
    """Where a cycle tells what it is doing (a progress display, logs, metrics)."""

    def step(self, shard: str, step: str) -> None: ...

    def progress(self, shard: str, done: int, total: int) -> None: ...

    def warn(self, shard: str, message: str) -> None: ...


class LogReporter:
    def step(self, shard: str, step: str) -> None:
        log.info("shard=%s step=%s", shard, step)

    def progress(self, shard: str, done: int, total: int) -> None:
        pass

    def warn(self, shard: str, message: str) -> None:
        log.warning("shard=%s %s", shard, message)


@dataclass(frozen=True)
class CycleOptions:
    rebootstrap: bool = True  # bootstrap again, loudly, when the source purged the needed log
    force_bootstrap: bool = False


@dataclass(frozen=True)
class Plan:
    parent: Manifest | None  # the backup to restore and catch up; None: bootstrap
    rebootstrap_reason: str | None
    # The log archive's pieces after the parent: replayed first, so the source sends only
    # the rest (and a source that purged them needs no new chain).
    archived: list[ArchiveRecord] = field(default_factory=list)
    index: ArchiveIndex | None = None


@dataclass
class StepClock:
    """Times each step and reports it as it starts. A cancelled cycle (a signal, a
    deadline) stops before its next step; cleanup steps run regardless."""

    shard: str
    reporter: Reporter
    cancel: CancelToken
    durations: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, step: str, cleanup: bool = False) -> Iterator[None]:
        if not cleanup:
            self.cancel.check()
        self.reporter.step(self.shard, step)
        started = time.monotonic()
        try:
            yield
        finally:
            self.durations[step] = round(time.monotonic() - started, 3)

    def progress(self, done: int, total: int) -> None:
        self.reporter.progress(self.shard, done, total)


def run_cycle(
    config: Config,
    shard: Shard,
    repository: Repository,
    options: CycleOptions,
    reporter: Reporter,
    cancel: CancelToken,
    confirm: Callable[[], None] = lambda: None,
) -> Manifest:
    """Produce the shard's next complete backup, or raise and leave everything as it was.

    `confirm` raises unless the shard's lease is still held; it runs right before the
    manifest is stored, so a runner that lost the shard never commits.
    """
    engine = engine_for(shard.engine)
    clock = StepClock(shard.name, reporter, cancel)
    started_at = datetime.now(UTC)
    with engine.open_source(config, shard) as source:
        with clock("precheck"):
            plan = precheck(repository, source, shard, options, reporter, config.on_source_change)
        with (
            provisioned(engine, config, shard, source, clock) as instance,
            contextlib.ExitStack() as logs,
        ):
            if plan.parent is None:
                bootstrap(instance, clock, cancel)
            else:
                restore_previous(repository, plan.parent, instance, config, clock)
                start(instance, clock, cancel)
            checkpoint = take_checkpoint(source, clock)
            archived = restore_log(repository, shard, plan, checkpoint, logs, config, clock)
            position = catch_up(instance, checkpoint, clock, cancel, archived)
            server_version = instance.server_version()
            stop(instance, clock)
            header = backup_header(shard, plan, position, server_version, source, started_at, clock)
            manifest = back_up(repository, instance, header, config, clock, confirm)
        release_source(source, manifest)
        return manifest


def precheck(
    repository: Repository,
    source: Source,
    shard: Shard,
    options: CycleOptions,
    reporter: Reporter,
    on_source_change: str = "warn",
) -> Plan:
    """Decide between catching up the newest backup and bootstrapping a new chain."""
    repository.check_encryption()  # before the catch-up, not after it
    source.require_ready()  # before an instance is provisioned for nothing
    catalog = repository.catalog(shard.keyspace, shard.shard)
    latest = catalog.latest(shard.keyspace, shard.shard, datetime.now(UTC))
    # A newer backup that only lacks its key (a key file dropped from the config, a lost
    # kms:Decrypt) is a configuration mistake: building on an older one or bootstrapping
    # (a full copy from the source, every cycle) would hide it. --bootstrap overrides.
    locked_out = catalog.key_unavailable(
        shard.keyspace, shard.shard, latest.backup_id if latest else None
    )
    if locked_out and not options.force_bootstrap:
        raise KeyUnavailableError(
            f"shard {shard.name}: refusing to back up: newest backup {locked_out[0].backup_id} "
            f"cannot be opened, its key is unavailable ({locked_out[0].reason}); fix the key "
            "configuration, or start a new chain with `catchup backup --bootstrap` if that "
            "key is gone for good"
        )
    # Only what was passed over: a damaged backup older than the one used changes nothing.
    skipped = catalog.skipped(
        shard.keyspace, shard.shard, datetime.now(UTC), latest.backup_id if latest else None
    )
    if skipped:
        then = (
            f"building on the newest intact backup {latest.backup_id}"
            if latest
            else "no usable backup is left, so bootstrapping a new chain"
        )
        reporter.warn(
            shard.name,
            f"SKIPPING {'; '.join(skipped)}; {then}. Investigate, then remove what is not "
            "yours (docs/operations.md, 'Damaged and future-dated backups')",
        )
    if latest is None:
        return Plan(None, "every earlier backup is damaged or future-dated" if skipped else None)
    if options.force_bootstrap:
        return Plan(None, "a new chain was requested (--bootstrap)")
    if latest.engine != shard.engine:
        raise SourceError(
            f"shard {shard.name}: newest backup {latest.backup_id} is a {latest.engine} backup "
            f"but the config says {shard.engine}; fix the config or use another keyspace"
        )
    check_source_identity(latest, source, shard, on_source_change, reporter)
    index, archived = archived_after(repository, shard, latest)
    verdict = source.judge(latest.position)
    if verdict.coverage in (Coverage.PURGED, Coverage.COSTLY) and archived:
        # The archive holds the log after the backup: the source need only cover its end.
        end = archived[-1].end.position
        if source.judge(end).coverage is Coverage.COVERED:
            return Plan(latest, None, archived, index)
    if verdict.coverage is Coverage.COVERED:
        return Plan(latest, None, archived, index)
    if verdict.coverage is Coverage.COSTLY:
        if not options.rebootstrap:
            return Plan(latest, None)  # still possible, only dearer: --no-rebootstrap allows it
        reporter.warn(shard.name, f"bootstrapping again: {verdict.reason}")
        return Plan(None, verdict.reason)
    if verdict.coverage is Coverage.PURGED:
        reason = f"newest backup {latest.backup_id} cannot be caught up: {verdict.reason}"
        if not options.rebootstrap:
            raise LogsPurgedError(
                f"shard {shard.name}: {reason}; run without --no-rebootstrap to bootstrap a "
                "new chain from the source"
            )
        reporter.warn(shard.name, f"BOOTSTRAPPING AGAIN: {reason}")
        return Plan(None, reason)
    raise DivergedError(
        f"shard {shard.name}: refusing to back up: newest backup {latest.backup_id} at "
        f"{latest.position} does not belong to this source ({verdict.reason}); was the source "
        "replaced or restored? Check it, then start a new chain with `catchup backup --bootstrap`"
    )


def check_source_identity(
    latest: Manifest, source: Source, shard: Shard, on_source_change: str, reporter: Reporter
) -> None:
    """Another server behind the shard's endpoint since the newest backup (a failover) may
    lack a transaction the backup chain has, or have one it never replicated: catching up
    from it would hide that. Say so loudly, or refuse, and say how to start a new chain."""
    was, now = latest.source.identity, source.identity()
    if was is None or was == now:
        return  # a backup from before identities were recorded, or the same server
    message = (
        f"shard {shard.name}: the source is another server than at newest backup "
        f"{latest.backup_id} (then {was} at {latest.source.endpoint}, now {now} at "
        f"{shard.endpoint}); a failover can hide transactions that only one of them has. "
        f"Check the new source, then start a new chain with `catchup backup --bootstrap "
        f"{shard.name}`"
    )
    if on_source_change == "refuse":
        raise DivergedError(f'{message} (on_source_change = "refuse")')
    reporter.warn(shard.name, f"SOURCE CHANGED: {message}")


@contextmanager
def provisioned(
    engine: Engine[Any], config: Config, shard: Shard, source: Source, clock: StepClock
) -> Iterator[Replica]:
    """An ephemeral replica of the source that is destroyed however the block ends."""
    with clock("provision"):
        context = engine.provision(config, shard, source)
        instance = context.__enter__()
    try:
        yield instance
    except BaseException as exc:
        with clock("destroy", cleanup=True):
            context.__exit__(type(exc), exc, exc.__traceback__)
        raise
    with clock("destroy", cleanup=True):
        context.__exit__(None, None, None)


def bootstrap(instance: Replica, clock: StepClock, cancel: CancelToken) -> None:
    with clock("bootstrap"):
        instance.bootstrap(cancel, clock.progress)


def restore_previous(
    repository: Repository, parent: Manifest, instance: Replica, config: Config, clock: StepClock
) -> None:
    with clock("restore"):
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            clock.progress(done, parent.data_bytes if parent.chunked else parent.stored_bytes)

        repository.restore(parent, instance.data_dir, config.jobs, advance)


def restore_log(
    repository: Repository,
    shard: Shard,
    plan: Plan,
    checkpoint: str,
    logs: contextlib.ExitStack,
    config: Config,
    clock: StepClock,
) -> Path | None:
    """The archived log after the parent, as whole files, for the catch-up: once a live
    archiver has stored the checkpoint (a few flushes at most), the source sends nothing.
    The files go to a private dir that `logs` removes with the instance."""
    if plan.parent is None or plan.index is None:
        return None
    with clock("restore log"):
        index = wait_for_archive(repository, shard, plan.index, checkpoint, config, clock.cancel)
        records = archived_after(repository, shard, plan.parent, index)[1] or plan.archived
        if not records:
            return None
        label = f"log-{shard.keyspace}.{shard.shard}"
        target = logs.enter_context(instance_dir(config.work_dir, label)) / "log"
        repository.restore_log(index, records, target, config.jobs)
    return target


def start(instance: Replica, clock: StepClock, cancel: CancelToken) -> None:
    with clock("start"):
        instance.start(cancel)


def take_checkpoint(source: Source, clock: StepClock) -> str:
    with clock("checkpoint"):
        return source.checkpoint()


def catch_up(
    instance: Replica,
    checkpoint: str,
    clock: StepClock,
    cancel: CancelToken,
    archived: Path | None = None,
) -> str:
    with clock("catch up"):
        return instance.catch_up(checkpoint, cancel, clock.progress, archived)


def stop(instance: Replica, clock: StepClock) -> None:
    with clock("stop"):
        instance.stop_for_archive()


def release_source(source: Source, manifest: Manifest) -> None:
    """Only now, with the new backup committed, may the source drop what it held for it.

    The backup is listed whatever happens here, so a failure does not fail the cycle:
    the source merely holds its log longer, and the next cycle releases it."""
    try:
        source.release(manifest.position)
    except CatchupError as exc:
        log.warning(
            "shard=%s/%s backup %s is committed, but the source could not release what it "
            "held for it (the next cycle retries): %s",
            manifest.keyspace,
            manifest.shard,
            manifest.backup_id,
            exc,
        )


def backup_header(
    shard: Shard,
    plan: Plan,
    position: str,
    server_version: str,
    source: Source,
    started_at: datetime,
    clock: StepClock,
) -> BackupHeader:
    """What the cycle knows of its backup before the upload; the repository adds the rest."""
    return BackupHeader(
        keyspace=shard.keyspace,
        shard=shard.shard,
        engine=shard.engine,
        server_version=server_version,
        kind="bootstrap" if plan.parent is None else "catchup",
        parent=plan.parent.backup_id if plan.parent else None,
        rebootstrap_reason=plan.rebootstrap_reason,
        position=position,
        source=SourceInfo(endpoint=shard.endpoint, role=shard.role, identity=source.identity()),
        started_at=started_at,
        bytes_from_source=source.bytes_sent,
        durations=dict(clock.durations),
    )


def back_up(
    repository: Repository,
    instance: Replica,
    header: BackupHeader,
    config: Config,
    clock: StepClock,
    confirm: Callable[[], None],
) -> Manifest:
    with clock("back up"):
        listing = repository.scan(instance.data_dir, lambda rel: not instance.is_archived(rel))
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            clock.progress(done, listing.total_bytes)

        codec = CodecSettings(config.compression.level, config.compression.threads)
        return repository.write_backup(
            header, instance.data_dir, listing, codec, config.jobs, advance, confirm=confirm
        )
