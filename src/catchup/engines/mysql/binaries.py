"""Finding the MySQL programs: the configured directory, else the private server that
`make` installs under the project (tools/install-mysql), else PATH.

Debian's MariaDB packages install `mysqld`, `mysql`, `mysqldump` and `mysqlbinlog` as
links to MariaDB's programs, so a program found on PATH is asked for its version and
refused when it is MariaDB's.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

from catchup.engines.environment import child_environment
from catchup.engines.mariadb.binaries import configured_binary
from catchup.errors import ConfigError

PROJECT_BINARIES = Path(__file__).resolve().parents[4] / ".cache" / "mysql" / "bin"
SEARCH_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")
INSTALL_HINT = (
    "set mysql.binaries to a directory of MySQL's programs (mysqld, mysql, mysqldump, "
    "mysqlbinlog), or run `make deps ENGINE=mysql`, which installs a private MySQL server "
    "under .cache/mysql"
)


def find_binary(name: str, configured_dir: Path | None = None) -> str:
    if configured_dir is not None:
        holding = "mysqld, mysql, mysqldump and mysqlbinlog"
        return configured_binary(name, configured_dir, "mysql.binaries", holding)
    private = PROJECT_BINARIES / name
    if os.access(private, os.X_OK):
        return str(private)
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(SEARCH_DIRS))
    if found is None:
        raise ConfigError(f"{name} (MySQL) is not installed; {INSTALL_HINT}")
    if "mariadb" in _version(found).lower():
        raise ConfigError(f"{found} is MariaDB's, not MySQL's; {INSTALL_HINT}")
    return found


@functools.cache
def _version(program: str) -> str:
    try:
        result = subprocess.run(
            [program, "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env=child_environment(),
        )
    except OSError as exc:
        raise ConfigError(f"{program} does not run ({exc.strerror}); {INSTALL_HINT}") from None
    return result.stdout + result.stderr


def version_numbers(version: str) -> tuple[int, ...]:
    """(9, 7, 4) of "9.7.4-2": for comparing versions."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("-")[0])[:3])


def program_version(program: str) -> str:
    """`mysqld --version`'s version number, e.g. 9.7.4."""
    words = _version(program).split()
    for previous, word in itertools.pairwise(words):
        if previous == "Ver":
            return word.split("-")[0]
    return ""
