"""Point-in-time restore: the newest backup at or before a target, restored on an
ephemeral instance, the archived log replayed onto it up to exactly the target.

    choose the backup → choose the log pieces → restore both → replay → check or hand over

A target the archive cannot reach (before the oldest backup, inside a gap,
after the newest archived position) is refused before anything is restored,
with the window that is covered.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from catchup.cancel import CancelToken
from catchup.config import Config, Shard
from catchup.engines import Engine, Finding, Instance, LogTarget
from catchup.engines.registry import engine_for
from catchup.engines.workdir import instance_dir
from catchup.errors import ArchiveGapError, TargetNotEmptyError, UsageError
from catchup.repository import Manifest, Repository
from catchup.repository.archive import ArchiveIndex, Mark, covered, pieces_for_replay
from catchup.repository.retention import future_dated


def parse_target(engine: Engine[Any], to_time: str | None, to_position: str | None) -> LogTarget:
    """The target an operator typed: exactly one of a time (ISO 8601 with a zone) or a
    position in the engine's own form."""
    if (to_time is None) == (to_position is None):
        raise UsageError("give exactly one of --to-time or --to-position")
    if to_time is not None:
        try:
            when = datetime.fromisoformat(to_time.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(
                f"--to-time {to_time!r} is not a time; use ISO 8601 with a zone, e.g. "
                "2026-12-03T10:14:00Z"
            ) from None
        if when.tzinfo is None:
            raise UsageError(f"--to-time {to_time!r} has no zone; add one, e.g. Z for UTC")
        return LogTarget(time=when.astimezone(UTC))
    assert to_position is not None
    try:
        return LogTarget(position=engine.parse_position(to_position))
    except ValueError as exc:
        raise UsageError(f"--to-position {to_position!r}: {exc}") from None


def reached(engine: Engine[Any], target: LogTarget) -> Callable[[Mark], bool]:
    """Whether a piece ending at a mark holds the target (or lies past it): the last
    piece a replay needs. A time target needs the first piece committed after it, as
    more transactions of the target's own second may follow in it."""
    if target.time is not None:
        when = target.time
        return lambda end: end.time is not None and end.time > when
    position = target.position or ""
    return lambda end: at_or_before(engine, position, end.position)


def at_or_before(engine: Engine[Any], a: str, b: str) -> bool:
    """`a` is at or before `b` in one history (False across histories)."""
    order = engine.compare_positions(a, b)
    return order is not None and order <= 0


def choose_backup(
    engine: Engine[Any], backups: list[Manifest], target: LogTarget, now: datetime
) -> Manifest:
    """The newest backup at or before the target. By time, a backup counts from its
    commit time (its data stands at a checkpoint taken before that)."""
    usable = [m for m in backups if not future_dated(m, now)]
    if target.time is not None:
        when = target.time
        before = [m for m in usable if m.created_at <= when]
    else:
        position = target.position or ""
        before = [m for m in usable if at_or_before(engine, m.position, position)]
    if before:
        return before[-1]
    oldest = (
        f"the oldest backup is {usable[0].backup_id} at {usable[0].position} "
        f"({usable[0].created_at:%Y-%m-%dT%H:%M:%SZ})"
        if usable
        else "the shard has no backup"
    )
    raise ArchiveGapError(f"no backup at or before {target.describe()}: {oldest}")


@dataclass
class Replayed:
    """What a point-in-time restore restored and where it stands."""

    shard: str
    backup_id: str
    target: LogTarget
    position: str = ""
    log_files: int = 0
    log_bytes: int = 0
    findings: list[Finding] = field(default_factory=list)
    checksums: dict[str, int | None] | None = None
    hint: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "shard": self.shard,
            "backup_id": self.backup_id,
            "to_time": self.target.time.isoformat() if self.target.time else None,
            "to_position": self.target.position,
            "position": self.position,
            "log_files": self.log_files,
            "log_bytes": self.log_bytes,
            "verified": all(f.ok for f in self.findings),
            "findings": [f.__dict__ for f in self.findings],
        }


def replay_to(
    config: Config,
    shard: Shard,
    repository: Repository,
    target: LogTarget,
    cancel: CancelToken,
    finish: Callable[[Instance, Replayed], None],
) -> Replayed:
    """Restore the newest backup before `target` and replay the archive onto it up to
    `target`; `finish` then checks the instance or hands its data dir over, before the
    instance is destroyed."""
    engine = engine_for(shard.engine)
    index = repository.archive_index(shard.keyspace, shard.shard)
    backups = repository.backups(shard.keyspace, shard.shard)
    try:
        manifest = choose_backup(engine, backups, target, datetime.now(UTC))
        records = pieces_for_replay(
            index, engine.compare_positions, manifest.position, reached(engine, target)
        )
    except ArchiveGapError as exc:
        raise ArchiveGapError(
            f"cannot restore {shard.name} to {target.describe()}: {exc}. Restorable: "
            f"{describe_window(engine, backups, index)}"
        ) from None
    result = Replayed(shard.name, manifest.backup_id, target)
    label = f"pitr-{shard.keyspace}.{shard.shard}"
    with (
        instance_dir(config.work_dir, label) as logs,
        engine.provision_for_checks(config, shard, manifest.server_version) as instance,
    ):
        repository.restore(manifest, instance.data_dir, config.jobs)
        log_dir = logs / "log"
        repository.restore_log(index, records, log_dir, config.jobs)
        result.log_files = len({r.file for r in records})
        result.log_bytes = sum(r.size for r in records)
        result.position = instance.replay_log(manifest.position, log_dir, target, cancel)
        finish(instance, result)
    return result


def window_members(
    engine: Engine[Any], backups: list[Manifest], index: ArchiveIndex
) -> list[tuple[dict[str, Any], list[Manifest]]]:
    """The stretches a point-in-time restore can reach, oldest first, each with the
    backups inside it: from its oldest such backup to the end of its archive run."""
    stretches = []
    for run in index.runs():
        inside = [
            m
            for m in backups
            if at_or_before(engine, run.start.position, m.position)
            and at_or_before(engine, m.position, run.end.position)
        ]
        if inside:
            first = inside[0]
            stretch = {
                "from_time": first.created_at.isoformat(),
                "from_position": first.position,
                "to_time": run.end.time.isoformat() if run.end.time else None,
                "to_position": run.end.position,
            }
            stretches.append((stretch, inside))
    return stretches


def restorable_windows(
    repository: Repository, backups: list[Manifest]
) -> dict[str, dict[str, Any] | None]:
    """Per backup id, the stretch of the log archive it can be rolled forward through
    (None without an archive reaching it)."""
    found: dict[str, dict[str, Any] | None] = {}
    shards = sorted({(m.keyspace, m.shard, m.engine) for m in backups})
    for keyspace, shard, engine_name in shards:
        index = repository.archive_index(keyspace, shard)
        if not index.records:
            continue
        engine = engine_for(engine_name)
        mine = [m for m in backups if (m.keyspace, m.shard) == (keyspace, shard)]
        for stretch, members in window_members(engine, mine, index):
            for manifest in members:
                found[manifest.backup_id] = stretch
    return found


def hand_over(target_dir: Path) -> Callable[[Instance, Replayed], None]:
    """A `finish` that stops the instance cleanly and moves its data dir to `target_dir`."""
    if target_dir.exists() and (not target_dir.is_dir() or any(target_dir.iterdir())):
        raise TargetNotEmptyError(
            f"target dir '{target_dir}' is not empty; give an empty or new dir"
        )

    def finish(instance: Instance, result: Replayed) -> None:
        result.hint = instance.stop_for_restore()
        if target_dir.exists():
            target_dir.rmdir()
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(instance.data_dir, target_dir)
        except OSError:  # another file system
            shutil.copytree(instance.data_dir, target_dir, symlinks=True)
        target_dir.chmod(0o700)

    return finish


def check_instance(with_checksums: bool) -> Callable[[Instance, Replayed], None]:
    """A `finish` for `verify --to-…`: the engine's checks at the position reached."""

    def finish(instance: Instance, result: Replayed) -> None:
        result.findings.extend(instance.verify(result.position))
        if with_checksums:
            result.checksums = instance.table_checksums()

    return finish


def describe_window(engine: Engine[Any], backups: list[Manifest], index: ArchiveIndex) -> str:
    """The covered window, for an error or a status line."""
    stretches = [stretch for stretch, _ in window_members(engine, backups, index)]
    if not stretches:
        return f"no point-in-time window yet (the archive holds {covered(index)})"
    return "; ".join(f"{s['from_time']} to {s['to_time'] or s['to_position']}" for s in stretches)
