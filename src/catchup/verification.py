"""Proving a backup good: restore it into an ephemeral instance (every file's
hash checked on the way), start it, and check its position and every table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from catchup.cancel import CancelToken
from catchup.config import Config, Shard
from catchup.engines import Finding
from catchup.engines.registry import engine_for
from catchup.errors import IntegrityError
from catchup.repository import Manifest, Repository


@dataclass
class VerifyReport:
    shard: str
    backup_id: str
    position: str
    findings: list[Finding] = field(default_factory=list)
    checksums: dict[str, int | None] | None = None

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    def to_json(self) -> dict[str, object]:
        return {
            "shard": self.shard,
            "backup_id": self.backup_id,
            "position": self.position,
            "verified": self.ok,
            "findings": [f.__dict__ for f in self.findings],
        }


def verify_backup(
    config: Config,
    shard: Shard,
    repository: Repository,
    manifest: Manifest,
    cancel: CancelToken,
    with_checksums: bool = False,
) -> VerifyReport:
    report = VerifyReport(shard.name, manifest.backup_id, manifest.position)
    engine = engine_for(manifest.engine)
    with engine.provision_for_checks(config, shard, manifest.server_version) as instance:
        repository.restore(manifest, instance.data_dir, config.jobs)
        report.findings.append(
            Finding("file hashes", True, f"{len(manifest.files)} files match their hashes")
        )
        instance.open_for_checks(manifest.position, cancel)
        report.findings.extend(instance.verify(manifest.position))
        if with_checksums:
            report.checksums = instance.table_checksums()
    return report


def check_stored_objects(
    config: Config, shard: Shard, repository: Repository, manifest: Manifest
) -> VerifyReport:
    """`verify --deep`: every object re-read from the store, authenticated and hashed."""
    return check_stored_backups(config, shard, repository, [manifest])


def check_stored_backups(
    config: Config, shard: Shard, repository: Repository, manifests: list[Manifest]
) -> VerifyReport:
    """`verify --deep` of one backup or of all a shard's: format 2 objects re-read and
    hashed; format 3 chunks re-read once each, however many backups share them."""
    newest = manifests[-1]
    report = VerifyReport(shard.name, newest.backup_id, newest.position)
    encrypted = "authenticated and " if newest.encryption else ""
    try:
        objects = [f for m in manifests if not m.chunked for f in m.object_files()]
        for manifest in manifests:
            if not manifest.chunked:
                repository.check_objects(manifest, config.jobs)
        chunks, chunk_bytes = repository.check_chunks(manifests, config.jobs)
    except IntegrityError as exc:
        report.findings.append(Finding("stored objects", False, str(exc)))
        return report
    if objects:
        stored = sum(f.stored_size for f in objects)
        report.findings.append(
            Finding(
                "stored objects",
                True,
                f"{len(objects)} objects ({stored} bytes) re-read, {encrypted}hashed",
            )
        )
    if any(m.chunked for m in manifests):
        tables = sum(1 for m in manifests if m.chunked)
        report.findings.append(
            Finding(
                "stored chunks",
                True,
                f"{chunks} chunks ({chunk_bytes} bytes) of {tables} backups re-read once "
                f"each, {encrypted}checked against their ids",
            )
        )
    return report
    stored = sum(f.stored_size for f in manifest.files)
    encrypted = "authenticated and " if manifest.encryption else ""
    report.findings.append(
        Finding(
            "stored objects",
            True,
            f"{len(manifest.files)} objects ({stored} bytes) re-read, {encrypted}hashed",
        )
    )
    return report
