"""The first backup of a shard: a consistent logical dump of the source, loaded
straight into a fresh ephemeral instance.

`mariadb-dump --single-transaction --gtid --master-data=1` takes a consistent
snapshot with its GTID position and no global read lock; the dump sets
`gtid_slave_pos` itself. Accounts are carried (`--system=users`): the fresh
instance's own accounts are dropped first, so afterwards it has exactly the
source's accounts, and a later GRANT or ALTER USER on the source replicates
cleanly instead of stopping catch-up with error 1133.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from catchup.cancel import CancelToken
from catchup.engines import StepProgress
from catchup.engines.environment import child_environment
from catchup.engines.mariadb.server import ADMIN_USER, MariaDBServer, option_file
from catchup.engines.mariadb.source import MariaDBSource
from catchup.errors import SourceError
from catchup.files import write_private

DUMP_OPTIONS = [
    "--single-transaction",
    "--gtid",
    "--master-data=1",
    "--routines",
    "--events",
    "--triggers",
    "--hex-blob",
    "--system=users",
    "--max-allowed-packet=1G",
    "--protocol=TCP",
]


def bootstrap(
    server: MariaDBServer, source: MariaDBSource, cancel: CancelToken, progress: StepProgress
) -> None:
    """Install a fresh data dir, start it, and load a consistent dump of the source."""
    server.install()
    server.start(cancel=cancel)
    drop_local_accounts(server)
    estimate = max(1, source.estimated_data_bytes())
    load_dump(
        server,
        source.relay.port,
        source.session.user,
        source.password,
        source.session.user_databases(),
        cancel,
        lambda: progress(min(source.bytes_sent, estimate), estimate),
    )


def drop_local_accounts(server: MariaDBServer) -> None:
    """Leave only catchup's admin account, so the dump's CREATE USERs all succeed."""
    with server.connect() as conn, conn.cursor() as cursor:
        cursor.execute("SELECT user, host FROM mysql.global_priv WHERE user <> %s", (ADMIN_USER,))
        for user, host in cursor.fetchall():
            cursor.execute("DROP USER %s@%s", (user, host))
        # mariadb-install-db also leaves PROXY rows for hosts that have no account.
        cursor.execute("DELETE FROM mysql.proxies_priv WHERE User <> %s", (ADMIN_USER,))
        cursor.execute("FLUSH PRIVILEGES")


def load_dump(
    server: MariaDBServer,
    relay_port: int,
    user: str,
    password: str | None,
    databases: list[str],
    cancel: CancelToken,
    on_progress: Callable[[], None] | None = None,
    programs: tuple[str, str] = ("mariadb-dump", "mariadb"),
    options: list[str] = DUMP_OPTIONS,
) -> None:
    """Pipe the dump program (through the relay) into the client of `server`: `programs`
    names the two (MySQL's are mysqldump and mysql), `options` the dump's."""
    root = server.files.root
    source_config = root / "source.cnf"
    write_private(
        source_config,
        option_file(
            "client", user=user, password=password or "", host="127.0.0.1", port=str(relay_port)
        ),
    )
    selection = ["--databases", *databases] if databases else ["--no-data", "--databases", "mysql"]
    dump_program, client_program = programs
    dump_cmd = [
        server.program(dump_program),
        f"--defaults-extra-file={source_config}",
        *options,
        *selection,
    ]
    load_cmd = [
        server.program(client_program),
        f"--defaults-extra-file={server.files.client_config}",
        "--binary-mode",
        "--max-allowed-packet=1G",
    ]
    dump_log, load_log = root / "dump.err", root / "load.err"
    try:
        with open(dump_log, "wb") as dump_err, open(load_log, "wb") as load_err:
            env = child_environment()
            dump = subprocess.Popen(dump_cmd, stdout=subprocess.PIPE, stderr=dump_err, env=env)
            load = subprocess.Popen(load_cmd, stdin=dump.stdout, stderr=load_err, env=env)
            assert dump.stdout is not None
            dump.stdout.close()  # the loader owns the pipe now
            _wait_both(dump, load, cancel, on_progress)
    finally:
        source_config.unlink(missing_ok=True)
    # A loader that fails first leaves the dump with a broken pipe (errno 32), which says
    # nothing: then the loader's error is the one to show.
    load_failed_first = load.returncode != 0 and "errno 32" in _tail(dump_log)
    if dump.returncode != 0 and not load_failed_first:
        raise SourceError(f"{dump_program} of the source failed: {_tail(dump_log)}")
    if load.returncode != 0:
        raise SourceError(f"loading the dump into the ephemeral instance failed: {_tail(load_log)}")


def _wait_both(
    dump: subprocess.Popen[bytes],
    load: subprocess.Popen[bytes],
    cancel: CancelToken,
    on_progress: Callable[[], None] | None,
) -> None:
    try:
        while load.poll() is None or dump.poll() is None:
            cancel.check()
            if dump.poll() not in (None, 0) and load.poll() is None:
                load.kill()  # the dump failed: stop loading a truncated stream
            if on_progress:
                on_progress()
            cancel.sleep(0.2)
    except BaseException:
        for process in (dump, load):
            process.kill()
            process.wait()
        raise


def _tail(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "(no error output)"
