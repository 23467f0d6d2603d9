"""A private postgres process: its files, start, readiness or exit, stop, kill.

postgres refuses to run as root; when catchup runs as root, the server and its
tools run as the `postgres` OS user (Debian's package creates it) and the
instance dir belongs to that user.

Nobody else gets in: the instance and socket directories are 0700 and the
socket itself too, there is no TCP listener unless asked for, and local logins
use `peer` authentication mapped (pg_ident.conf) from exactly catchup's and the
server's OS users to the roles catchup needs (`trust` only when catchup's uid has
no name to map, behind the same 0700 directories). Children get a scrubbed
environment, so a superuser session (`COPY … TO PROGRAM 'env'`) finds no secret.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from catchup.cancel import NEVER, CancelToken
from catchup.engines.environment import child_environment
from catchup.engines.serverprocess import ServerProcess, log_tail, short_socket_path
from catchup.errors import ConfigError, InstanceError

SERVER_USER = "postgres"


def client_uids() -> frozenset[int]:
    """Who may reach the source through catchup's relay: catchup itself and, when it is
    root, the OS user its PostgreSQL servers (and their walreceivers) run as."""
    uids = {os.geteuid()}
    if os.geteuid() == 0:
        with contextlib.suppress(KeyError):
            uids.add(pwd.getpwnam(SERVER_USER).pw_uid)
    return frozenset(uids)


SOCKET_PATH_LIMIT = 90  # the socket file name is appended to the directory


def find_binaries(major: int, configured: Path | None = None) -> Path:
    """The bin directory of PostgreSQL `major`: the ephemeral server must match the source."""
    candidates = [configured] if configured else [Path(f"/usr/lib/postgresql/{major}/bin")]
    for directory in candidates:
        if directory and (directory / "postgres").exists():
            return directory
    where = f"postgres.binaries = '{configured}'" if configured else f"/usr/lib/postgresql/{major}"
    raise ConfigError(
        f"PostgreSQL {major} server binaries are not in {where}; install the Debian package "
        f"postgresql-{major} or set postgres.binaries"
    )


def run_as(die_with_parent: bool = False) -> list[str]:
    """A command prefix that drops root to the postgres OS user, and optionally has the
    kernel kill the command when catchup dies.

    Both must be one setpriv call: the kernel clears a parent-death signal when the
    uid changes, so setting it in an outer setpriv would not survive an inner one.
    """
    death = ["--pdeathsig", "KILL"] if die_with_parent else []
    if os.geteuid() != 0:
        return ["setpriv", *death] if death else []
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise ConfigError(
            "running as root needs the OS user 'postgres' for the ephemeral servers; install "
            "the Debian package postgresql or run catchup as a non-root user"
        ) from None
    drop = [f"--reuid={SERVER_USER}", f"--regid={SERVER_USER}", "--init-groups"]
    return ["setpriv", *death, *drop]


def config_string(value: str) -> str:
    """A postgresql.conf string: quoted, with `'` doubled and `\\` escaped (the file's
    parser reads C-style backslash escapes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def server_os_user() -> str:
    """The OS user the server and its tools run as (root drops to SERVER_USER)."""
    return SERVER_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name


def run_tool(command: list[str]) -> subprocess.CompletedProcess[str]:
    """A client tool to completion, with the scrubbed environment; output captured."""
    return subprocess.run(
        command, capture_output=True, text=True, check=False, env=child_environment()
    )


def give_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SERVER_USER)
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.lchown(name, entry.pw_uid, entry.pw_gid)


@dataclass
class PostgresFiles:
    root: Path
    sockets: Path = field(init=False)

    def __post_init__(self) -> None:
        self.sockets = short_socket_path(self.root / "run", "catchup-pg", SOCKET_PATH_LIMIT)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "postgresql.conf"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"


class PostgresServer(ServerProcess):
    name = "postgres"

    def __init__(
        self,
        files: PostgresFiles,
        binaries: Path,
        port: int,
        settings: dict[str, str],
        listen: bool = False,
        die_with_parent: bool = True,
        roles: tuple[str, ...] = (SERVER_USER,),
    ) -> None:
        self.files = files
        self.binaries = binaries
        self.port = port
        self.settings = settings
        self.listen = listen
        self.die_with_parent = die_with_parent
        self.roles = list(dict.fromkeys(roles))  # those local logins may use
        super().__init__()

    def tool(self, name: str) -> list[str]:
        return [*run_as(), str(self.binaries / name)]

    def write_config(self, extra: dict[str, str]) -> None:
        """Our own config, hba and ident files: nothing from the source's applies."""
        hba = self.files.root / "pg_hba.conf"
        local = "peer map=catchup" if self._write_ident() else "trust"
        hba.write_text(
            f"local all all {local}\nlocal replication all {local}\n"
            + (
                "host all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 "
                "scram-sha-256\n"
                if self.listen
                else ""
            )
        )
        values = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'" if self.listen else "''",
            "unix_socket_directories": f"'{self.files.sockets}'",
            "unix_socket_permissions": "0700",
            "hba_file": f"'{hba}'",
            "ident_file": f"'{self._ident}'",
            "logging_collector": "off",
            **self.settings,
            **extra,
        }
        # Created 0600: it may hold the replication password (primary_conninfo).
        fd = os.open(self.files.config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as stream:
            stream.write("".join(f"{k} = {v}\n" for k, v in values.items()))
        os.chmod(self.files.config, 0o600)  # an existing file keeps its mode through O_TRUNC
        self.files.sockets.mkdir(mode=0o700, parents=True, exist_ok=True)
        give_to_server_user(self.files.root)
        give_to_server_user(self.files.sockets)
        os.chmod(self.files.sockets, 0o700)
        os.chmod(self.files.data_dir, 0o700)

    @property
    def _ident(self) -> Path:
        return self.files.root / "pg_ident.conf"

    def _write_ident(self) -> bool:
        """Local logins: only catchup's own OS user and the server's, as `self.roles`.

        False when catchup's uid has no name (a container run with an arbitrary uid):
        peer authentication cannot work then, and the 0700 socket directory and
        socket, owned by that uid, are what keeps other users out."""
        try:
            own = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            self._ident.write_text("")
            return False
        os_users = dict.fromkeys([own, server_os_user()])
        for name in [*os_users, *self.roles]:
            if not name or any(c in name for c in '"\n\r'):
                raise InstanceError(f"cannot map the name {name!r} in pg_ident.conf")
        lines = [f'catchup "{os_user}" "{role}"\n' for os_user in os_users for role in self.roles]
        self._ident.write_text("".join(lines))
        return True

    def allow_role(self, role: str, timeout: float = 10) -> None:
        """Let local logins use `role` too, on the running server (a reload)."""
        if role in self.roles:
            return
        self.roles.append(role)
        self._write_ident()
        give_to_server_user(self._ident)
        if self.running and self.pid:
            os.kill(self.pid, signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.connect(role, timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise InstanceError(
                        f"postgres did not accept local logins as {role!r} after a reload: "
                        f"{self.log_tail()}"
                    ) from None
                time.sleep(0.05)

    def start(self) -> None:
        # If catchup itself dies, the kernel kills the server with it.
        command = [
            *run_as(self.die_with_parent and shutil.which("setpriv") is not None),
            str(self.binaries / "postgres"),
            "-D",
            str(self.files.data_dir),
            "-c",
            f"config_file={self.files.config}",
        ]
        self.launch(command, self.files.log)

    def wait_ready(self, timeout: float = 120, cancel: CancelToken = NEVER) -> None:
        deadline = time.monotonic() + timeout
        while True:
            cancel.check()
            if not self.running:
                raise InstanceError(f"postgres exited at startup: {self.log_tail()}")
            with contextlib.suppress(psycopg.OperationalError):
                self.connect(self.roles[0], timeout=2).close()
                return
            if time.monotonic() > deadline:
                raise InstanceError(f"postgres did not become ready in {timeout:.0f}s")
            time.sleep(0.05)

    def connect(
        self, user: str = SERVER_USER, dbname: str = "postgres", timeout: float = 10
    ) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(
            host=str(self.files.sockets),
            port=self.port,
            user=user,
            dbname=dbname,
            connect_timeout=int(timeout),
            autocommit=True,
        )

    def stop(self, timeout: float = 300) -> None:
        """Fast shutdown (SIGINT): clean, with a checkpoint or restartpoint."""
        self.stop_with(signal.SIGINT, timeout, clean_exits=(0,))

    def log_tail(self) -> str:
        return log_tail(self.files.log, ("FATAL", "ERROR"))

    def controldata(self) -> dict[str, str]:
        result = run_tool([*self.tool("pg_controldata"), str(self.files.data_dir)])
        if result.returncode != 0:
            raise InstanceError(f"pg_controldata failed: {result.stderr.strip()}")
        pairs = (line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
        return {key.strip(): value.strip() for key, value in pairs}


def read_text(path: Path) -> str:
    """A log's text; empty when the server has not written it (yet)."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def select_row(
    conn: psycopg.Connection[tuple[Any, ...]], sql: str, args: tuple[object, ...] = ()
) -> tuple[Any, ...]:
    """The single row that `sql` (a SELECT of functions or aggregates) returns."""
    row = conn.execute(sql, args).fetchone()
    if row is None:
        raise InstanceError(f"the server returned no row for {sql!r}")
    return row


def select_value(
    conn: psycopg.Connection[tuple[Any, ...]], sql: str, args: tuple[object, ...] = ()
) -> object:
    """The first column of `select_row`."""
    return select_row(conn, sql, args)[0]
