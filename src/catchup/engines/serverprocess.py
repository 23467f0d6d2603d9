"""What every private database server process has in common: a short socket
path, a launch with its output in a log and a scrubbed environment, a stop by
signal, a kill, its state."""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
from pathlib import Path

from catchup.engines.environment import child_environment
from catchup.errors import InstanceError


def short_socket_path(preferred: Path, prefix: str, limit: int) -> Path:
    """`preferred`, unless a deep work dir would overflow sun_path (108 bytes on Linux):
    then a short private name under /tmp."""
    if len(str(preferred)) <= limit:
        return preferred
    return Path("/tmp") / f"{prefix}-{secrets.token_hex(6)}{preferred.suffix}"


def private_directory(path: Path) -> Path:
    """`path` as a directory only catchup's uid can enter (sockets live in one: a socket
    file's own mode is not honoured everywhere, its directory's is). One that someone
    else created first is refused."""
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise InstanceError(f"{path} exists and is not catchup's own directory; remove it")
    path.chmod(0o700)
    return path


def log_tail(log: Path, markers: tuple[str, ...], lines: int = 3) -> str:
    """The last lines of a server log that carry one of `markers`, else its last lines."""
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    relevant = [line for line in text if any(m in line for m in markers)] or text
    return " | ".join(relevant[-lines:]) or "(empty log)"


class ServerProcess:
    """A server started in its own session (Ctrl-C reaches catchup, which stops it)."""

    name = "server"

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self, command: list[str], log: Path) -> None:
        with open(log, "ab") as output:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
                env=child_environment(),  # catchup's secrets stay out of the server's reach
            )

    def stop_with(self, signal_number: int, timeout: float, clean_exits: tuple[int, ...]) -> None:
        """Ask for a clean shutdown with `signal_number`; wait; refuse an unclean exit."""
        if not self.running:
            return
        assert self.process is not None
        self.process.send_signal(signal_number)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise InstanceError(
                f"{self.name} (pid {self.process.pid}) did not shut down within {timeout:.0f}s"
            ) from None
        if self.process.returncode not in clean_exits:
            raise InstanceError(
                f"{self.name} exited with code {self.process.returncode} during shutdown: "
                f"{self.log_tail()}"
            )

    def log_tail(self) -> str:
        raise NotImplementedError

    def kill(self) -> None:
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def exit_code(self) -> int | None:
        return self.process.returncode if self.process else None
