"""The environment every child process of an engine gets.

catchup's own environment holds secrets (cloud credentials, the API token, a
source password variable). A server or client tool started with it would hand
them to anyone who can read its /proc/PID/environ or its logs, and a database
user could read them through the server (`COPY … FROM PROGRAM 'env'`). Children
therefore get only what locates programs and formats text, plus what the caller
passes on purpose.
"""

from __future__ import annotations

import os

KEPT = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR")


def child_environment(**extra: str) -> dict[str, str]:
    """A minimal environment: locale, time zone, PATH, and `extra` as given."""
    kept = {
        name: value for name, value in os.environ.items() if name in KEPT or name.startswith("LC_")
    }
    kept.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin")
    return {**kept, **extra}
