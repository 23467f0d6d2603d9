"""Point-in-time restore the manual way, as an operator does it without catchup:
`catchup restore` of the base backup into a dir, a stock server started on it, and
the archived log replayed onto it with the server's own tools:

- MariaDB: `mariadb-binlog --start-position=<backup GTID> --stop-datetime=T FILES |
  mariadb`, into a server started with the restored data dir;
- PostgreSQL: `restore_command = 'cp DIR/%f %p'` and `recovery_target_time = T`
  (promote), until the server leaves recovery.

The log files are the ones catchup's restore replays (the same pieces of the same
archive), put in a local directory beforehand and not timed: the operator is given
the benefit of already having them. Timed: the restore, the start, the replay, until
the server serves; the restored tables are then compared with the source's at T."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from archive_parts.rig import Rig
from catchup.engines import LogTarget
from catchup.engines.environment import child_environment
from catchup.engines.mariadb.server import MariaDBServer, ServerFiles
from catchup.engines.mariadb.verify import table_checksums as mariadb_checksums
from catchup.engines.postgres.lsn import WAL_SEGMENT
from catchup.engines.postgres.restore import write_recovery
from catchup.engines.postgres.server import (
    PostgresFiles,
    PostgresServer,
    find_binaries,
    give_to_server_user,
    select_value,
)
from catchup.engines.postgres.verify import table_checksums as postgres_checksums
from catchup.engines.relay import free_port
from catchup.pitr import reached
from catchup.repository.archive import pieces_for_replay


def log_files(rig: Rig, backup_id: str, target: datetime, into: Path) -> tuple[list[Path], int]:
    """The archived files a replay from the backup to `target` needs, in a directory."""
    [manifest] = [
        m
        for m in rig.repository.backups(rig.shard.keyspace, rig.shard.shard)
        if m.backup_id == backup_id
    ]
    index = rig.repository.archive_index(rig.shard.keyspace, rig.shard.shard)
    records = pieces_for_replay(
        index,
        rig.engine.compare_positions,
        manifest.position,
        reached(rig.engine, LogTarget(time=target)),
    )
    rig.repository.restore_log(index, records, into, rig.config.jobs)
    files = sorted(p for p in into.iterdir() if p.is_file())
    return files, sum(r.size for r in records)


def catchup_restore(rig: Rig, backup_id: str, data_dir: Path) -> None:
    subprocess.run(
        [
            str(Path(sys.executable).with_name("catchup")),
            "restore",
            rig.shard.name,
            backup_id,
            "--target-dir",
            str(data_dir),
            "--config",
            str(rig.config_path),
        ],
        check=True,
        capture_output=True,
    )


def manual_restore(
    rig: Rig, backup_id: str, target: datetime, expected: dict[str, Any]
) -> dict[str, Any]:
    root = rig.root / "pitr-manual"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    root.chmod(0o755)
    logs = root / "log"
    files, log_bytes = log_files(rig, backup_id, target, logs)
    if rig.source.engine == "mariadb":
        seconds, checksums = mariadb_manual(rig, backup_id, target, root, files)
    else:
        seconds, checksums = postgres_manual(rig, backup_id, target, root, logs)
    return {
        "seconds": seconds,
        "log_files": len(files),
        "log_bytes": log_bytes,
        "equal_to_source": checksums == expected,
    }


def mariadb_manual(
    rig: Rig, backup_id: str, target: datetime, root: Path, files: list[Path]
) -> tuple[float, dict[str, Any]]:
    [base] = [
        m
        for m in rig.repository.backups(rig.shard.keyspace, rig.shard.shard)
        if m.backup_id == backup_id
    ]
    server = MariaDBServer(ServerFiles(root / "server"), 9, ["--skip-slave-start"])
    started = time.monotonic()
    catchup_restore(rig, backup_id, server.files.data_dir)
    server.start()
    try:
        # The binlog's times are whole seconds, in the tool's local zone: the target
        # lies in a quiet spell, so its second stops the replay at the right event.
        stop = target.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        client = f"mariadb --defaults-file={server.files.client_config}"
        binlog = (
            f"mariadb-binlog --start-position={base.position} --stop-datetime='{stop}' "
            + " ".join(str(f) for f in files)
        )
        subprocess.run(
            ["bash", "-o", "pipefail", "-c", f"{binlog} | {client}"],
            check=True,
            capture_output=True,
            env={**child_environment(), "TZ": "UTC"},
        )
        seconds = time.monotonic() - started
        with server.connect() as conn, conn.cursor() as cursor:
            checksums = mariadb_checksums(cursor)
    finally:
        server.stop()
    return seconds, checksums


def postgres_manual(
    rig: Rig, backup_id: str, target: datetime, root: Path, logs: Path
) -> tuple[float, dict[str, Any]]:
    # The archive's last segment is pg_receivewal's `.partial`, its settled bytes only:
    # an operator renames it and pads it to a whole segment, as pg_receivewal's own is.
    for partial in logs.glob("*.partial"):
        partial.rename(partial.with_suffix(""))
    for segment in logs.iterdir():
        if len(segment.name) == 24 and segment.stat().st_size < WAL_SEGMENT:
            os.truncate(segment, WAL_SEGMENT)
    give_to_server_user(logs)
    for path in logs.iterdir():
        give_to_server_user(path)
    files = PostgresFiles(root / "server")
    files.root.mkdir()
    server = PostgresServer(files, find_binaries(15), free_port(), settings={})
    started = time.monotonic()
    catchup_restore(rig, backup_id, files.data_dir)
    write_recovery(
        files.data_dir,
        f"restore_command = 'cp {logs}/%f %p'\n"
        f"recovery_target_time = '{target.isoformat()}'\n"
        "recovery_target_action = 'promote'\n",
    )
    server.write_config({})
    server.start()
    try:
        server.wait_ready(timeout=600)
        while True:
            with server.connect() as conn:
                if not select_value(conn, "SELECT pg_is_in_recovery()"):
                    break
            time.sleep(0.05)
        seconds = time.monotonic() - started
        with server.connect() as conn:
            checksums = postgres_checksums(conn)
    finally:
        server.stop()
    return seconds, checksums
