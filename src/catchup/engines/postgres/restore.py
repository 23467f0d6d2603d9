"""A restored PostgreSQL data dir: made to recover exactly to its backup's
position and promote, on a stock server (`catchup restore`) or on an ephemeral
instance opened for checks (`catchup verify`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from catchup.cancel import CancelToken
from catchup.engines.postgres import autoconf, basebackup
from catchup.engines.postgres.lsn import format_lsn, split_position
from catchup.engines.postgres.server import PostgresServer, select_value
from catchup.errors import InstanceError

OURS = ("# Written by catchup", "# Tablespaces are directories")


def prepare_recovery(data_dir: Path, position: str) -> None:
    """Make a restored data dir recover exactly to `position` on its own and then promote,
    with nothing more to fetch: what `catchup restore` hands to a stock postgres."""
    lsn, _ = split_position(position)
    write_recovery(
        data_dir,
        "# Written by catchup restore: recover to the backup's position, then promote.\n"
        "restore_command = 'false'\n"
        f"recovery_target_lsn = '{format_lsn(lsn)}'\n"
        "recovery_target_action = 'promote'\n",
    )


def write_recovery(data_dir: Path, settings: str | None) -> None:
    """Replace catchup's recovery settings in postgresql.auto.conf with `settings` and
    ask for archive recovery (recovery.signal); None: remove them, and the signal."""
    (data_dir / "standby.signal").unlink(missing_ok=True)
    if settings is None:
        (data_dir / "recovery.signal").unlink(missing_ok=True)
    else:
        (data_dir / "recovery.signal").touch()
    auto = data_dir / "postgresql.auto.conf"
    existing = auto.read_text() if auto.exists() else ""
    # Our block is always last: drop it before the sanitizer would take our recovery
    # settings for the source's. Backups of older versions may still carry the
    # source's upstream settings: the sanitizer drops those.
    lines = existing.splitlines()
    ours = next((n for n, line in enumerate(lines) if line.startswith(OURS)), len(lines))
    kept = "".join(line + "\n" for line in lines[:ours])
    clean, _ = autoconf.sanitize(kept)
    fd = os.open(auto, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(
            clean
            + (settings or "")
            + "# Tablespaces are directories in pg_tblspc (in-place): needed to recover them.\n"
            "allow_in_place_tablespaces = on\n"
        )


def prepare_restored(data_dir: Path, position: str) -> str:
    """Prepare a data dir `catchup restore` wrote; returns how to start it."""
    prepare_recovery(data_dir, position)
    data_dir.chmod(0o700)
    has_tablespaces = bool(basebackup.tablespace_dirs(data_dir))
    return (
        f"Start it with: postgres -D {data_dir} (chown -R postgres: it first). It replays "
        f"its WAL to exactly {position.partition('@')[0]} and promotes itself; "
        "postgresql.auto.conf holds the recovery settings, remove them afterwards. "
        "postgresql.conf, if the source kept it in its data dir, still has the source's "
        "port, listen_addresses and unix_socket_directories: set them for this host "
        "(or pass -c port=… -c unix_socket_directories=…). Replication, archiving and "
        "preload settings of the source's postgresql.auto.conf were left out (see its "
        "comments)."
        + (
            " Tablespaces are directories under pg_tblspc/: keep allow_in_place_tablespaces"
            " = on while they are; to move one elsewhere, stop the server, move the "
            "directory and leave a symlink in its place."
            if has_tablespaces
            else ""
        )
    )


def open_for_checks(server: PostgresServer, user: str, position: str, cancel: CancelToken) -> None:
    """Recover exactly to the backup's position, promote, and accept connections."""
    prepare_recovery(server.files.data_dir, position)
    server.write_config({"recovery_target_action": "'promote'"})
    server.start()
    server.wait_ready(cancel=cancel)
    deadline = time.monotonic() + 120
    while _in_recovery(server, user):
        cancel.check()
        if time.monotonic() > deadline:
            raise InstanceError("the restored backup did not finish recovery in 120 s")
        time.sleep(0.1)


def _in_recovery(server: PostgresServer, user: str) -> bool:
    with server.connect(superuser(server, user)) as conn:
        return bool(select_value(conn, "SELECT pg_is_in_recovery()"))


def superuser(server: PostgresServer, user: str) -> str:
    """A superuser role of the restored data, let in over the private socket."""
    with server.connect(user) as conn:
        name = str(
            select_value(conn, "SELECT rolname FROM pg_roles WHERE rolsuper ORDER BY oid LIMIT 1")
        )
    server.allow_role(name)
    return name
