"""Instance directories under the work dir, for every engine.

Each ephemeral instance lives in `work_dir/instances/<label>.<random>/` with an
owner record (pid and start time of the catchup process, and the server's pid
file and data dir). A directory whose owner is gone is an orphan of a killed
run: the next run kills its server, if any still runs, and removes it.

Instance dirs are 0700: other local users cannot list them, read their data or
reach their sockets. `instances/` itself is 0700, or 0711 when catchup runs as
root, so that a server dropped to its own OS user (PostgreSQL's `postgres`, which
then owns its instance dir) can traverse it without listing it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path


def _process_start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


@contextlib.contextmanager
def instance_dir(work_dir: Path, label: str) -> Iterator[Path]:
    """A fresh private directory, removed however the block ends."""
    instances = work_dir / "instances"
    instances.mkdir(parents=True, exist_ok=True)
    instances.chmod(0o711 if os.geteuid() == 0 else 0o700)  # an older one may be 0755
    reap_orphans(instances)
    root = instances / f"{label}.{secrets.token_hex(4)}"
    root.mkdir(mode=0o700)
    root.chmod(0o700)  # mkdir's mode is masked by the umask, never widened: make it exact
    pid = os.getpid()
    (root / "owner.json").write_text(
        json.dumps({"pid": pid, "start_time": _process_start_time(pid)})
    )
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def record_server(root: Path, pid_file: Path, data_dir: Path) -> None:
    """Tell the reaper which server belongs to this directory."""
    owner = json.loads((root / "owner.json").read_text())
    owner.update(pid_file=str(pid_file), data_dir=str(data_dir))
    (root / "owner.json").write_text(json.dumps(owner))


def reap_orphans(instances: Path) -> list[Path]:
    reaped = []
    for root in instances.iterdir():
        try:
            owner = json.loads((root / "owner.json").read_text())
        except (OSError, ValueError):
            continue  # being created right now, or not ours
        if _process_start_time(owner["pid"]) == owner["start_time"]:
            continue
        if "pid_file" in owner:
            kill_server(Path(owner["pid_file"]), owner["data_dir"])
        shutil.rmtree(root, ignore_errors=True)
        reaped.append(root)
    return reaped


def kill_server(pid_file: Path, data_dir: str) -> None:
    """SIGKILL the server named in `pid_file`, if it still runs on `data_dir`."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int(pid_file.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        if data_dir.encode() in cmdline:  # never an unrelated process
            os.kill(pid, signal.SIGKILL)
