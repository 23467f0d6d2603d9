"""Shared fixtures. Integration tests start their own mariadbd servers on
private ports, sockets and temp dirs, and stop them afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp dir with a short path: Unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="cu-", dir="/tmp"))
    path.chmod(0o755)  # the postgres OS user runs the PostgreSQL servers below it
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    """Run the real `catchup` command in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "catchup", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=REPO,
    )
