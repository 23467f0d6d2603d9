"""Small file helpers shared across layers."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from catchup.errors import ConfigError


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read: for passwords and keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as stream:
        stream.write(text)


def read_private(path: Path, setting: str) -> str:
    """The text of a key, password or token file, refused when others could read it.

    The mode is checked on the open file, so it is the file that was read. OSError
    (missing, unreadable) is left to the caller, which knows what to advise.
    """
    with open(path, encoding="utf-8") as stream:
        check_private(os.fstat(stream.fileno()), path, setting)
        return stream.read()


def check_private(info: os.stat_result, path: Path, setting: str) -> None:
    """Refuse a secret file that users other than its reader can read or change.

    A file of the reader's own must be 0600 or stricter, as ssh demands of a private
    key. A file root owns may also be readable by its group (0640): that is how root
    hands a secret to a service's group, and how Kubernetes mounts a Secret volume
    (owned by root, group fsGroup, mode at least 0440), as PostgreSQL allows for its
    server key. A file another user owns could be replaced by that user: refused.
    """
    mode = stat.S_IMODE(info.st_mode)
    reader = os.geteuid()
    if info.st_uid not in (reader, 0):
        raise ConfigError(
            f"{setting} = '{path}': owned by uid {info.st_uid}, neither you (uid {reader}) "
            f"nor root, who could change it; run `chown {reader} {path}` and `chmod 600 {path}`"
        )
    forbidden = 0o077 if info.st_uid == reader else 0o037
    if mode & forbidden:
        raise ConfigError(
            f"{setting} = '{path}': mode {mode:04o} lets other users read or change it; "
            f"run `chmod 600 {path}`"
        )
