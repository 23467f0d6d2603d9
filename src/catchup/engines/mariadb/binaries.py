"""Finding the MariaDB programs this machine has."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from catchup.errors import ConfigError

SEARCH_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin")


def configured_binary(name: str, configured_dir: Path, setting: str, holding: str) -> str:
    """`name` in the directory a config key (`setting`) names, or a ConfigError that says
    what the directory should hold."""
    candidate = configured_dir / name
    if os.access(candidate, os.X_OK):
        return str(candidate)
    raise ConfigError(
        f"{setting} = '{configured_dir}': {name} is not there; point it at the directory "
        f"holding {holding}"
    )


def find_binary(name: str, configured_dir: Path | None = None) -> str:
    if configured_dir is not None:
        holding = "mariadbd, mariadb-dump and mariadb-install-db"
        return configured_binary(name, configured_dir, "mariadb.binaries", holding)
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(SEARCH_DIRS))
    if found is None:
        raise ConfigError(
            f"{name} is not installed; install the Debian packages mariadb-server and "
            "mariadb-client (`make deps` does) or set mariadb.binaries"
        )
    return found
