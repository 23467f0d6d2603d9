"""The sandbox MariaDB source of the run, kept in the work dir between runs: loading
2 GB takes minutes, so a pristine copy of the loaded data dir (`base/`) is made once
and every workload starts from a copy of it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from benchlib import MIB, dir_bytes, say
from catchup.demo.mariadb import MariaDBSandbox
from catchup.engines.mariadb.instance import shrink_redo_and_stop
from dedup_parts.files import REDO_LOG_BYTES
from impact.sources import Bench
from impact.workload import settle


def base_dir(work: Path) -> Path:
    return work / "base"


def ensure_base(work: Path, size_gb: float) -> Path:
    """The loaded, cleanly stopped data dir of the demo schema at `size_gb`: loaded
    once (by the impact bench's Bench), then reused by every later run."""
    base = base_dir(work)
    if (base / "data").is_dir():
        if (base / "data" / "ib_logfile0").stat().st_size != REDO_LOG_BYTES:
            say(f"shrinking the base's redo log to {REDO_LOG_BYTES // MIB} MiB, as catchup does")
            source = open_source(base)
            source.start()
            stop_for_archive(source)
        return base
    shutil.rmtree(work / "load", ignore_errors=True)
    (work / "load").mkdir(parents=True)
    say(f"loading {size_gb:g} GB of the demo schema into a sandbox MariaDB (minutes)")
    bench = Bench(work / "load")
    source = bench.add_mariadb(size_gb * 1024)
    settle(source)
    stop_for_archive(source)
    (work / "load" / "src-0").rename(base)
    shutil.rmtree(work / "load", ignore_errors=True)
    say(f"base data dir: {dir_bytes(base / 'data') / MIB:.0f} MiB")
    return base


def copy_tree(source: Path, target: Path) -> None:
    """A plain copy (cp -a, not a reflink: the measured files must be real ones)."""
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)


def open_source(root: Path) -> MariaDBSandbox:
    """The sandbox over the existing files at `root` (a copy of base/), not started."""
    return MariaDBSandbox(root, 1)


def start(source: MariaDBSandbox) -> None:
    source.start()
    # As the impact bench: production fleets log rows (the sandbox default is MIXED,
    # and a SET GLOBAL does not survive the restart of every cycle).
    source.execute("SET GLOBAL binlog_format = 'ROW'")


def data_dir(source: MariaDBSandbox) -> Path:
    return source.server.files.data_dir


def stop_for_archive(source: MariaDBSandbox) -> None:
    """The clean shutdown catchup ends an archived cycle with: its redo log shrunk to
    `mariadb.archive_redo_log_mb` (catchup's own shrink_redo_and_stop: a restart with
    the smaller size, then the stop). The next start runs with the sandbox's usual
    redo log again (the shrink appends its option to the server's options: dropped)."""
    options = list(source.server.options)
    source.server.options = list(options)  # a copy: the sandbox shares SOURCE_OPTIONS
    try:
        shrink_redo_and_stop(source.server, "innodb_log_file_size", REDO_LOG_BYTES)
    finally:
        source.server.options = options
