"""A private mysqld process: MariaDB's server process (mariadb/server.py: files,
start, readiness, clean stop, kill) with MySQL's programs, data dir creation,
accounts and options.

Every start is a fresh server identity: mysqld writes a new `auto.cnf` (server_uuid)
when there is none, and catchup removes it before each start, so an ephemeral
instance never takes the uuid a data dir came with (two servers with one uuid
break each other's replication).
"""

from __future__ import annotations

import subprocess
from typing import Any

from catchup.cancel import NEVER, CancelToken
from catchup.engines.environment import child_environment
from catchup.engines.mariadb.server import (
    ADMIN_USER,
    MariaDBServer,
    ServerFiles,
    option_file,
    select_row,
    select_value,
)
from catchup.engines.mysql.binaries import find_binary
from catchup.errors import InstanceError

__all__ = [
    "ADMIN_USER",
    "MySQLServer",
    "ServerFiles",
    "option_file",
    "select_row",
    "select_value",
]

MYSQL_OPTIONS = [
    "--gtid-mode=ON",
    "--enforce-gtid-consistency=ON",
    # The X protocol would listen on 33060 and /tmp/mysqlx.sock: shared by every instance.
    "--mysqlx=OFF",
    "--secure-file-priv=NULL",  # no server-side file import or export
]


class MySQLServer(MariaDBServer):
    name = "mysqld"

    def __init__(
        self, files: ServerFiles, server_id: int, options: list[str], **kwargs: Any
    ) -> None:
        super().__init__(files, server_id, [*MYSQL_OPTIONS, *options], **kwargs)

    def program(self, name: str) -> str:
        return find_binary(name, self.binaries)

    def install(self) -> None:
        """Create a fresh data dir with the system tables (`mysqld --initialize-insecure`:
        root@localhost without a password, reachable only through catchup's private socket,
        and dropped by every bootstrap)."""
        self.files.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.files.tmp_dir.mkdir(parents=True, exist_ok=True)
        command = [
            self.program("mysqld"),
            "--no-defaults",
            "--initialize-insecure",
            f"--datadir={self.files.data_dir}",
            f"--tmpdir={self.files.tmp_dir}",
            f"--log-error={self.files.error_log}",
            *self._run_as_user(),
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, check=False, env=child_environment()
        )
        if result.returncode != 0:
            raise InstanceError(f"mysqld --initialize-insecure failed: {self.log_tail()}")

    def start(self, timeout: float = 120, cancel: CancelToken = NEVER) -> None:
        (self.files.data_dir / "auto.cnf").unlink(missing_ok=True)  # a fresh server_uuid
        super().start(timeout, cancel)

    def _init_sql(self) -> str:
        # Not binlogged and no GTID: a sandbox source must not ship this account to its
        # replicas, and a replica's GTID set must stay its source's.
        user = f"'{self.admin_user}'@'localhost'"
        return (
            "SET sql_log_bin=0;\n"
            f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY '{self.admin_password}';\n"
            f"ALTER USER {user} IDENTIFIED BY '{self.admin_password}' ACCOUNT UNLOCK;\n"
            f"GRANT ALL PRIVILEGES ON *.* TO {user} WITH GRANT OPTION;\n"
            # Copying a source's accounts includes root's PROXY grant, which only a holder
            # of PROXY WITH GRANT OPTION may give.
            f"GRANT PROXY ON ''@'' TO {user} WITH GRANT OPTION;\n"
        )
