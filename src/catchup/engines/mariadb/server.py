"""A private mariadbd process: its files, start, readiness, clean stop, kill.

Used for the ephemeral instances of a cycle and for sandbox sources (demo and
tests). Access is through an admin account that an init file (mode 0600)
creates at each start with a random password, so the password never appears in
a process list and the accounts a backup carries cannot lock catchup out.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors

from catchup.cancel import NEVER, CancelToken
from catchup.engines.environment import child_environment
from catchup.engines.mariadb.binaries import find_binary
from catchup.engines.serverprocess import (
    ServerProcess,
    log_tail,
    private_directory,
    short_socket_path,
)
from catchup.engines.workdir import kill_server
from catchup.errors import InstanceError
from catchup.files import write_private

ADMIN_USER = "catchup_admin"
SOCKET_PATH_LIMIT = 100  # sun_path is 108 bytes on Linux
SOCKET_NAME = "mariadbd.sock"


@dataclass
class ServerFiles:
    """Everything a server owns lives under `root`, but for a deep root its socket
    directory, which is then a private one under /tmp."""

    root: Path
    socket: Path = field(init=False)

    def __post_init__(self) -> None:
        # In a mode-0700 directory: mariadbd makes its socket world-writable, and any
        # local user who reached it could try the accounts a backup carries.
        directory = short_socket_path(
            self.root / "run", "catchup", SOCKET_PATH_LIMIT - len(SOCKET_NAME) - 1
        )
        self.socket = directory / SOCKET_NAME

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def tmp_dir(self) -> Path:
        # Private: concurrent mariadb-install-db runs sharing /tmp collide on temp tables.
        return self.root / "tmp"

    @property
    def pid_file(self) -> Path:
        return self.root / "mariadbd.pid"

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"

    @property
    def init_file(self) -> Path:
        return self.root / "init.sql"

    @property
    def client_config(self) -> Path:
        return self.root / "admin.cnf"


class MariaDBServer(ServerProcess):
    name = "mariadbd"

    def __init__(
        self,
        files: ServerFiles,
        server_id: int,
        options: list[str],
        binaries: Path | None = None,
        port: int | None = None,
        die_with_parent: bool = True,
        admin_user: str = ADMIN_USER,
    ) -> None:
        self.files = files
        self.server_id = server_id
        self.options = options
        self.binaries = binaries
        self.port = port
        self.die_with_parent = die_with_parent
        self.admin_user = admin_user
        self.admin_password = secrets.token_urlsafe(24)
        super().__init__()

    # --- lifecycle -------------------------------------------------------------

    def program(self, name: str) -> str:
        """The path of one of this server's programs (`mariadbd`, `mariadb-dump`, …)."""
        return find_binary(name, self.binaries)

    def install(self) -> None:
        """Create a fresh, empty data dir with the system tables."""
        self.files.data_dir.mkdir(parents=True, exist_ok=True)
        self.files.tmp_dir.mkdir(exist_ok=True)
        command = [
            self.program("mariadb-install-db"),
            "--no-defaults",
            f"--datadir={self.files.data_dir}",
            f"--tmpdir={self.files.tmp_dir}",
            "--auth-root-authentication-method=socket",
            "--skip-test-db",
            *self._run_as_user(),
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, check=False, env=child_environment()
        )
        if result.returncode != 0:
            raise InstanceError(f"mariadb-install-db failed: {_first_error(result.stderr)}")

    def start(self, timeout: float = 120, cancel: CancelToken = NEVER) -> None:
        self.files.tmp_dir.mkdir(exist_ok=True)
        private_directory(self.files.socket.parent)
        write_private(self.files.init_file, self._init_sql())
        write_private(
            self.files.client_config,
            option_file(
                "client",
                user=self.admin_user,
                password=self.admin_password,
                socket=str(self.files.socket),
            ),
        )
        command = [self.program(self.name), "--no-defaults", *self._arguments()]
        if self.die_with_parent and shutil.which("setpriv"):
            # If catchup itself is killed, the kernel takes the server down with it.
            command = ["setpriv", "--pdeathsig", "KILL", *command]
        self.launch(command, self.files.error_log)
        try:
            self._wait_ready(timeout, cancel)
        finally:
            self.files.init_file.unlink(missing_ok=True)

    def stop(self, timeout: float = 300) -> None:
        """Clean shutdown (SIGTERM is mariadbd's normal shutdown); wait for the exit."""
        self.stop_with(signal.SIGTERM, timeout, clean_exits=(0, -signal.SIGTERM))

    def set_server_id(self, server_id: int) -> None:
        """Change the running server's id (before it connects to a source)."""
        with self.connect() as conn, conn.cursor() as cursor:
            cursor.execute("SET GLOBAL server_id = %s", (server_id,))
        self.server_id = server_id

    # --- access ----------------------------------------------------------------

    def connect(self, database: str | None = None, timeout: float = 10) -> pymysql.Connection:
        return pymysql.connect(
            unix_socket=str(self.files.socket),
            user=self.admin_user,
            password=self.admin_password,
            database=database,
            autocommit=True,
            connect_timeout=timeout,
            charset="utf8mb4",
            cursorclass=pymysql.cursors.Cursor,
        )

    def log_tail(self) -> str:
        return log_tail(self.files.error_log, ("[ERROR]",))

    # --- details ---------------------------------------------------------------

    def _arguments(self) -> list[str]:
        networking = (
            [f"--port={self.port}", "--bind-address=127.0.0.1"]
            if self.port
            else ["--skip-networking"]
        )
        return [
            *self._run_as_user(),
            f"--datadir={self.files.data_dir}",
            f"--tmpdir={self.files.tmp_dir}",
            f"--socket={self.files.socket}",
            f"--pid-file={self.files.pid_file}",
            f"--log-error={self.files.error_log}",
            f"--server-id={self.server_id}",
            f"--init-file={self.files.init_file}",
            "--skip-name-resolve",
            "--max-allowed-packet=1G",
            *networking,
            *self.options,
        ]

    def _init_sql(self) -> str:
        # Not binlogged: a sandbox source must not ship this account to its replicas.
        return (
            "SET sql_log_bin=0;\n"
            f"CREATE OR REPLACE USER '{self.admin_user}'@'localhost' "
            f"IDENTIFIED BY '{self.admin_password}';\n"
            f"GRANT ALL PRIVILEGES ON *.* TO '{self.admin_user}'@'localhost' WITH GRANT OPTION;\n"
            # A dump of accounts includes root's PROXY grant, which only a holder of
            # PROXY WITH GRANT OPTION may give; an init file may not GRANT PROXY itself.
            "REPLACE INTO mysql.proxies_priv (Host, User, Proxied_host, Proxied_user, With_grant)"
            f" VALUES ('localhost', '{self.admin_user}', '', '', 1);\n"
            "FLUSH PRIVILEGES;\n"
        )

    def _wait_ready(self, timeout: float, cancel: CancelToken) -> None:
        deadline = time.monotonic() + timeout
        while True:
            cancel.check()
            if self.process is not None and not self.running:
                raise InstanceError(
                    f"{self.name} exited with code {self.exit_code} at startup: {self.log_tail()}"
                )
            with contextlib.suppress(pymysql.err.OperationalError):
                self.connect(timeout=2).close()
                return
            if time.monotonic() > deadline:
                self.kill()
                raise InstanceError(
                    f"{self.name} did not become ready within {timeout:.0f}s: {self.log_tail()}"
                )
            time.sleep(0.05)

    @staticmethod
    def _run_as_user() -> list[str]:
        # mariadbd refuses to run as root unless told to; elsewhere it runs as the caller.
        return [f"--user={getpass.getuser()}"] if os.geteuid() == 0 else []


# What MariaDB's option-file reader unescapes inside a quoted value (mysys/my_default.c).
OPTION_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b"}


def option_value(value: str) -> str:
    """`value` as the option-file reader gives it back exactly: double-quoted, so `#` is not
    a comment and spaces at either end stay, with backslash and quote escaped."""
    return '"' + "".join(OPTION_ESCAPES.get(char, char) for char in value) + '"'


def option_file(section: str, **values: str) -> str:
    """A MariaDB option file of one section; every value is quoted (passwords may hold
    anything)."""
    lines = [f"[{section}]", *(f"{key}={option_value(value)}" for key, value in values.items())]
    return "\n".join(lines) + "\n"


def _first_error(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line]
    return (errors or lines or ["(no output)"])[0]


def kill_server_in(root: Path) -> None:
    """SIGKILL a mariadbd left running under `root` by a process that is gone."""
    files = ServerFiles(root)
    kill_server(files.pid_file, f"--datadir={files.data_dir}")


def select_row(cursor: pymysql.cursors.Cursor, sql: str, args: object = None) -> tuple[Any, ...]:
    """The single row that `sql` returns (a SELECT of variables, functions or aggregates,
    CHECKSUM TABLE of one table)."""
    cursor.execute(sql, args)
    row = cursor.fetchone()
    if row is None:
        raise InstanceError(f"the server returned no row for {sql!r}")
    return row


def select_value(cursor: pymysql.cursors.Cursor, sql: str, args: object = None) -> object:
    """The first column of `select_row`."""
    return select_row(cursor, sql, args)[0]
