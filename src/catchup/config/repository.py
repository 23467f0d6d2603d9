"""Settings of the repository: its store, compression, encryption, retention and lease."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, field_validator, model_validator

from catchup.config.base import HttpUrl, Strict


class Retention(Strict):
    min_count: Annotated[int, Field(ge=1)] = 7
    min_age_days: Annotated[float, Field(ge=0)] = 7.0
    # An incomplete prefix younger than this is never removed, even with the shard's lease
    # held: a writer that does not take the lease (an older catchup) may still be uploading.
    incomplete_grace_hours: Annotated[float, Field(ge=0)] = 6.0
    # The log archive is kept from the oldest retained backup on; this keeps it (and so the
    # point-in-time window) at least this many days back, older backups included.
    pitr_days: Annotated[float, Field(ge=0)] = 0.0


class ArchiveSettings(Strict):
    """The continuous log archive (fleet/archiver.py)."""

    # `catchup serve` runs an archiver for every shard (a shard may set archive = false).
    enabled: bool = False
    # The segment being written is stored at least this often: the RPO is this plus one upload.
    flush_seconds: Annotated[float, Field(ge=0.2, le=3600)] = 5.0
    # A stopped archiver is restarted after 1 s, doubling up to this.
    restart_max_seconds: Annotated[float, Field(ge=1, le=3600)] = 60.0


class LockSettings(Strict):
    """The shard lease in the repository (fleet/lease.py), renewed every third of it."""

    lease_seconds: Annotated[float, Field(ge=3, le=3600)] = 120.0


class ChunkSettings(Strict):
    """How backups are stored (docs/repository-format.md). Format 3 cuts files into chunks
    that a shard's backups share, so a backup stores only the chunks its shard lacks."""

    format: Literal[2, 3] = 3
    # Fixed, page-aligned chunks: measured on demo-schema data dirs (docs/benchmarks.md,
    # "Deduplicated backups"); a multiple of InnoDB's 16 KiB and PostgreSQL's 8 KiB pages.
    size_kib: Annotated[int, Field(ge=16, le=16384)] = 256
    # Chunks are bundled into pack objects of about this size: a bucket of 10^9 objects
    # is a real cost, and one ranged read fetches many chunks.
    pack_mb: Annotated[int, Field(ge=1, le=4096)] = 64
    # A pack whose chunks the previous backup uses for less than this fraction of its bytes
    # is not reused: the next backup stores those chunks again, densely, and the sparse
    # pack is collected once no backup names it (lazy repack; no backup is rewritten).
    repack_below: Annotated[float, Field(ge=0, le=1)] = 0.5
    # An unreferenced pack younger than this is never collected: a backup being written
    # (or retried after a failure) may reuse the chunks it holds.
    gc_window_minutes: Annotated[float, Field(ge=0)] = 360.0

    @field_validator("size_kib")
    @classmethod
    def _page_multiple(cls, value: int) -> int:
        if value % 16:
            raise ValueError(
                f"{value} is not a multiple of 16: chunks must hold whole 16 KiB InnoDB "
                "pages (and 8 KiB PostgreSQL pages); use e.g. 256"
            )
        return value


class Compression(Strict):
    # Level 1: compression is the pipeline's bottleneck (docs/benchmarks.md); higher
    # levels shrink InnoDB files little for much more CPU. Negative levels are zstd's
    # fast ones: level -1 measured 1.15x the speed for 14% more storage.
    level: Annotated[int, Field(ge=-7, le=22)] = 1
    threads: Annotated[int, Field(ge=0, le=64)] = 0


class StorageSettings(Strict):
    """Options of object-store repositories (s3://, gs://, az://)."""

    endpoint: HttpUrl | None = None  # an S3-compatible endpoint; default: the cloud's own
    region: str | None = None
    path_style: bool = False
    server_side_encryption: Literal["AES256", "aws:kms", "aws:kms:dsse"] | None = None
    kms_key_id: str | None = None
    part_size_mb: Annotated[int, Field(ge=5, le=512)] = 16
    upload_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    download_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    max_retries: Annotated[int, Field(ge=0, le=100)] = 10
    retry_timeout_seconds: Annotated[float, Field(gt=0)] = 180.0
    request_timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    connect_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0


class EncryptionSettings(Strict):
    """Key-encryption keys. New backups use `kms_key` when set, else the first key
    file; every listed key file, `kms_key` and `kms_previous_keys` open older backups."""

    key_files: list[Path] = []
    kms_key: str | None = None  # a KMS key id, ARN or alias/…
    # KMS keys (id, ARN or alias/…) that older backups may be wrapped with, e.g. the key an
    # alias named before it was pointed at a new one. No other KMS key is ever used.
    kms_previous_keys: list[str] = []
    kms_region: str | None = None
    kms_endpoint: HttpUrl | None = None  # e.g. a VPC endpoint; default: the region's own
    # With keys configured, a manifest that is not encrypted is refused (anyone who may
    # write to the store could have planted it), unless its backup is dated before this:
    # the time encryption was turned on, so that older plain backups stay readable.
    read_unencrypted_before: AwareDatetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _replaced_settings(cls, data: Any) -> Any:
        if isinstance(data, dict) and "read_unencrypted_backups" in data:
            raise ValueError(
                "read_unencrypted_backups was replaced: remove it and set "
                "read_unencrypted_before = <the time encryption was turned on, RFC 3339, "
                "e.g. 2026-11-01T00:00:00Z> to read plain backups made before it"
            )
        return data

    @field_validator("read_unencrypted_before")
    @classmethod
    def _not_in_future(cls, value: datetime | None) -> datetime | None:
        # A cutoff ahead of now would let a planted plain manifest with a current id in.
        if value is not None and value > datetime.now(UTC):
            raise ValueError(
                "is in the future; set it to the time encryption was turned on, at the latest now"
            )
        return value

    @model_validator(mode="after")
    def _previous_keys_need_a_key(self) -> EncryptionSettings:
        if self.kms_previous_keys and not (self.kms_key or self.key_files):
            raise ValueError(
                "kms_previous_keys is set but neither kms_key nor key_files: it only opens "
                "older backups and cannot encrypt new ones (catchup would then refuse its own "
                "plain backups); set kms_key to the current KMS key, or remove kms_previous_keys"
            )
        return self
