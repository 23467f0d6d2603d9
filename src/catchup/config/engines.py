"""Settings of the ephemeral servers each engine runs (not of the sources)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from catchup.config.base import Strict


class MariaDBSettings(Strict):
    """Knobs for the ephemeral MariaDB servers (not the source)."""

    binaries: Path | None = None  # directory with mariadbd etc.; default: PATH and /usr/sbin
    buffer_pool_mb: Annotated[int, Field(ge=16)] = 256
    redo_log_mb: Annotated[int, Field(ge=16)] = 256  # during catch-up
    archive_redo_log_mb: Annotated[int, Field(ge=16)] = 16  # shrunk to this before archiving
    # zlib on the replication stream: the source spends a little CPU to send fewer bytes.
    compress_replication: bool = True
    # Optimistic parallel apply for hosts with cores to spare; no gain measured on 2 cores.
    replica_parallel_threads: Annotated[int, Field(ge=0, le=64)] = 0


class PostgresSettings(Strict):
    """Knobs for the ephemeral PostgreSQL servers (not the source)."""

    binaries: Path | None = None  # a bin dir; default: /usr/lib/postgresql/<source major>/bin
    shared_buffers_mb: Annotated[int, Field(ge=16)] = 256
    # Bootstrap again when the WAL since the last backup exceeds this x the database size:
    # a fresh base backup then costs the source less than streaming that WAL.
    rebootstrap_wal_ratio: Annotated[float, Field(gt=0)] = 1.0


class MySQLSettings(Strict):
    """Knobs for the ephemeral MySQL servers (not the source)."""

    # A directory with mysqld, mysql, mysqldump and mysqlbinlog (or wrappers of them), of the
    # source's version; default: the private server `make` installs under .cache/mysql, then PATH.
    binaries: Path | None = None
    # clone: CLONE INSTANCE FROM the source (physical; needs its clone plugin, BACKUP_ADMIN and
    # the same version); dump: mysqldump with its GTID set; auto: clone where the source allows.
    bootstrap: Literal["auto", "clone", "dump"] = "auto"
    buffer_pool_mb: Annotated[int, Field(ge=16)] = 256
    redo_log_mb: Annotated[int, Field(ge=8)] = 256  # innodb_redo_log_capacity during catch-up
    archive_redo_log_mb: Annotated[int, Field(ge=8)] = 8  # shrunk to this before archiving
    # zstd on the replication stream: the source spends a little CPU to send fewer bytes.
    compress_replication: bool = True
    replica_parallel_workers: Annotated[int, Field(ge=0, le=64)] = 0
