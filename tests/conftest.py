"""Shared fixtures. Integration tests start their own mariadbd servers on
private ports, sockets and temp dirs, and stop them afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from catchup.engines.relay import free_port

REPO = Path(__file__).resolve().parents[1]


def mysql_version() -> str:
    """The MySQL the integration tests run against: it moves with Debian unstable
    (tools/install-mysql takes what it has), so every run says which it was."""
    from catchup.engines.mysql.binaries import find_binary, program_version
    from catchup.errors import ConfigError

    try:
        mysqld = find_binary("mysqld")
        return f"MySQL {program_version(mysqld)} ({mysqld})"
    except ConfigError as exc:
        return f"MySQL not installed ({exc})"


def pytest_report_header() -> list[str]:
    return [mysql_version()]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Also under -q, which hides the header.
    terminalreporter.write_line(f"tested against {mysql_version()}")


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


@contextlib.contextmanager
def serve_on_loopback(command: Callable[[int], list[str]], what: str) -> Iterator[int]:
    """Start `command(port)` on a free loopback port, wait until it accepts, stop it after."""
    port = free_port()
    server = subprocess.Popen(command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, f"{what} did not start"
            time.sleep(0.1)
    try:
        yield port
    finally:
        server.terminate()
        server.wait(10)


def wait_until_ready(
    process: subprocess.Popen, client: httpx.Client, output: Callable[[], str]
) -> None:
    """Return once the daemon `process` answers /readyz through `client`; fail with its
    `output()` if it exits first, or after 30 s."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, output()
        assert time.monotonic() < deadline, "the daemon did not become ready"
        time.sleep(0.1)
