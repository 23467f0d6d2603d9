"""Measuring what a backup costs the source: CPU seconds and bytes read from disk
of the server's process tree (sampled from /proc, so short-lived backends count),
with cold page caches, and the wall time."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def process_counters(pid: int) -> tuple[float, int] | None:
    """CPU seconds (user + system) and bytes read from storage, or None if gone."""
    try:
        fields = (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1]).split()
        io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, int(io["read_bytes"])


class SourceMeter:
    """Samples a server's process tree, so short-lived backends (walsenders) count too."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.first: dict[int, tuple[float, int]] = {}
        self.last: dict[int, tuple[float, int]] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, baseline: bool) -> None:
        for pid in descendants(self.pid):
            counters = process_counters(pid)
            if counters is None:
                continue
            self.first.setdefault(pid, counters if baseline else (0.0, 0))
            self.last[pid] = counters

    def _run(self) -> None:
        while not self.done.wait(self.interval):
            self._sample(baseline=False)

    def __enter__(self) -> SourceMeter:
        self._sample(baseline=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        self._sample(baseline=False)

    @property
    def cpu_seconds(self) -> float:
        return sum(self.last[p][0] - self.first[p][0] for p in self.last)

    @property
    def read_bytes(self) -> int:
        return sum(self.last[p][1] - self.first[p][1] for p in self.last)


def drop_caches() -> None:
    """Cold page cache, so bytes read from disk mean something."""
    os.sync()
    with contextlib.suppress(OSError):  # not root: caches stay warm
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


@dataclass
class Cost:
    method: str
    source_bytes: int  # over the network from the source (or leaving its host)
    source_cpu_seconds: float
    source_read_bytes: int
    wall_seconds: float
    backup_bytes: int
    extra: dict[str, float] = field(default_factory=dict)


@contextmanager
def metered(pid: int) -> Iterator[tuple[SourceMeter, dict[str, float]]]:
    drop_caches()
    clock: dict[str, float] = {}
    with SourceMeter(pid) as meter:
        started = time.monotonic()
        yield meter, clock
        clock["wall"] = time.monotonic() - started


def children_usage() -> tuple[float, int]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_inblock * 512


def shell(command: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        check=True,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
