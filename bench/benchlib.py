"""What every benchmark script shares: the repository's paths (and `src/` on the
import path, so a script runs from a checkout: its name sorts before `catchup`, so
its import comes first), sizes, the machine line of a report, and writing a
report's section into docs/benchmarks.md between its markers.
"""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "src") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "src"))

MIB = 1 << 20
DOC = REPO_ROOT / "docs" / "benchmarks.md"
IMG = REPO_ROOT / "docs" / "img"


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def machine() -> str:
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"


def say(text: str) -> None:
    """Progress, on stderr: stdout carries the report or the JSON."""
    print(f"» {text}", file=sys.stderr, flush=True)


def write_section(begin: str, end: str, section: str) -> None:
    """Put `section` between the `begin` and `end` markers of docs/benchmarks.md,
    replacing what was there, or append it with its markers."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    body = section.strip("\n")
    block = f"{begin}\n{body}\n{end}"
    if begin in text:
        head, _, rest = text.partition(begin)
        text = head + block + rest.partition(end)[2]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text)
