"""A private postgres process: its files, start, readiness or exit, stop, kill.

postgres refuses to run as root; when catchup runs as root, the server and its
tools run as the `postgres` OS user (Debian's package creates it) and the
instance dir belongs to that user. Access is over a private Unix socket
directory with `trust`, which only the instance's owner can reach.
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

import psycopg

from catchup.cancel import NEVER, CancelToken
from catchup.engines.serverprocess import ServerProcess, log_tail, short_socket_path
from catchup.errors import ConfigError, InstanceError

SERVER_USER = "postgres"
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
    ) -> None:
        self.files = files
        self.binaries = binaries
        self.port = port
        self.settings = settings
        self.listen = listen
        self.die_with_parent = die_with_parent
        super().__init__()

    def tool(self, name: str) -> list[str]:
        return [*run_as(), str(self.binaries / name)]

    def write_config(self, extra: dict[str, str]) -> None:
        """Our own config, hba and ident files: nothing from the source's applies."""
        hba = self.files.root / "pg_hba.conf"
        ident = self.files.root / "pg_ident.conf"
        hba.write_text(
            "local all all trust\nlocal replication all trust\n"
            + (
                "host all all 127.0.0.1/32 scram-sha-256\nhost replication all 127.0.0.1/32 "
                "scram-sha-256\n"
                if self.listen
                else ""
            )
        )
        ident.write_text("")
        values = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'" if self.listen else "''",
            "unix_socket_directories": f"'{self.files.sockets}'",
            "hba_file": f"'{hba}'",
            "ident_file": f"'{ident}'",
            "logging_collector": "off",
            **self.settings,
            **extra,
        }
        self.files.config.write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
        self.files.sockets.mkdir(parents=True, exist_ok=True)
        give_to_server_user(self.files.root)
        give_to_server_user(self.files.sockets)
        os.chmod(self.files.data_dir, 0o700)

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
                self.connect(timeout=2).close()
                return
            if time.monotonic() > deadline:
                raise InstanceError(f"postgres did not become ready in {timeout:.0f}s")
            time.sleep(0.05)

    def connect(self, user: str = SERVER_USER, dbname: str = "postgres", timeout: float = 10):  # noqa: ANN201
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
        result = subprocess.run(
            [*self.tool("pg_controldata"), str(self.files.data_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise InstanceError(f"pg_controldata failed: {result.stderr.strip()}")
        pairs = (line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
        return {key.strip(): value.strip() for key, value in pairs}
