"""`catchup check`: is the repository readable, and can each shard run its next cycle?

Each check is a `Finding`; the CLI only presents them. A failure is a finding with
`ok=False`, never an exception, so one bad shard does not hide the others.
"""

from __future__ import annotations

from datetime import UTC, datetime

from catchup.archived import archived_after
from catchup.config import Config, Shard
from catchup.engines import Coverage, Finding
from catchup.engines.registry import engine_for
from catchup.errors import CatchupError
from catchup.repository import Repository
from catchup.repository.retention import dated, future_dated


def check_fleet(
    config: Config, repository: Repository, shards: list[str] | None
) -> dict[str, list[Finding]]:
    """The repository's findings under "repository", then each selected shard's by name.

    Only a missing password raises (a usage mistake, before any shard is contacted).
    """
    report: dict[str, list[Finding]] = {"repository": check_repository(repository)}
    selected = config.select(shards)
    config.require_passwords(selected)
    for shard in selected:
        report[shard.name] = check_shard(config, shard, repository)
    return report


def check_repository(repository: Repository) -> list[Finding]:
    """The store answers, every backup's manifest opens with the configured keys, and
    none is dated in the future."""
    try:
        catalog = repository.catalog()
    except CatchupError as exc:
        return [Finding("repository", False, str(exc))]
    active = repository.keyring.active
    encryption = f"new backups encrypted with {active.key_id}" if active else "not encrypted"
    try:
        repository.check_encryption()
    except CatchupError as exc:
        return [Finding("repository", False, f"{repository.url}: {exc}")]
    findings = [
        Finding(
            "repository",
            True,
            f"{repository.url}: {len(catalog.backups)} complete backups; {encryption}",
        )
    ]
    for damaged in catalog.damaged:
        findings.append(
            Finding(
                "damaged backup",
                False,
                f"{damaged.shard_name} {damaged.backup_id}: {damaged.reason}",
            )
        )
    now = datetime.now(UTC)
    for manifest in catalog.backups:
        if future_dated(manifest, now):
            findings.append(
                Finding(
                    "future-dated backup",
                    False,
                    f"{manifest.shard_name} {manifest.backup_id} is dated "
                    f"{dated(manifest):%Y-%m-%d %H:%M:%S} UTC, ahead of this host's clock; "
                    "it is not used as latest",
                )
            )
    return findings


def check_shard(config: Config, shard: Shard, repository: Repository) -> list[Finding]:
    """The source's own checks (connectivity, privileges, settings), then whether its logs
    still cover the delta after the shard's newest backup."""
    try:
        with engine_for(shard.engine).open_source(config, shard) as source:
            findings: list[Finding] = source.check()
            latest = repository.latest(shard.keyspace, shard.shard)
            if latest is None:
                findings.append(Finding("newest backup", True, "none yet: next cycle bootstraps"))
                return findings
            try:
                verdict = source.judge(latest.position)
                detail = f"{latest.backup_id} at {latest.position}: {verdict.reason}"
                if verdict.coverage in (Coverage.PURGED, Coverage.COSTLY):
                    # As the precheck does: the archive may hold what the source lacks.
                    _, archived = archived_after(repository, shard, latest)
                    end = archived[-1].end.position if archived else None
                    covered = source.judge(end) if end else None
                    if covered and covered.coverage is Coverage.COVERED:
                        verdict = covered
                        detail += f"; the log archive holds it up to {end}, the source the rest"
                findings.append(
                    Finding("newest backup", verdict.coverage is Coverage.COVERED, detail)
                )
            except CatchupError as exc:
                findings.append(Finding("newest backup", False, str(exc)))
            return findings
    except CatchupError as exc:
        return [Finding("connect", False, str(exc))]
