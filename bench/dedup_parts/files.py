"""The file set every measurement of bench/dedup.py backs up: what catchup's own
archive of a MariaDB data dir holds (the backup step, format 2, `tar` all read it).

catchup archives its ephemeral replica's data dir, which has no binary logs (the
replica runs --skip-log-bin) and whose redo log is shrunk to
`mariadb.archive_redo_log_mb` (8 MiB) before the clean shutdown. The bench's data dir
is a sandbox *source*'s, with binlogs: left out here, and its redo log is shrunk the
same way by source.stop_for_archive().
"""

from __future__ import annotations

import re
from pathlib import Path

import benchlib  # noqa: F401  (puts src/ on the import path)
from catchup.config.engines import MariaDBSettings
from catchup.engines.mariadb.instance import MariaDBReplica
from catchup.repository.transfer import DataDirListing, scan_data_dir

# The sandbox's --log-bin=binlog (catchup.demo.mariadb.SOURCE_OPTIONS): its binlogs,
# their index and the GTID state file written beside them.
BINLOG = re.compile(r"^binlog\.(\d+|index|state)$")
REDO_LOG_BYTES = MariaDBSettings().archive_redo_log_mb << 20


def archived(relative_path: str) -> bool:
    """True for a file catchup's archive would hold. MariaDBReplica.is_archived is
    catchup's own rule (it does not use its instance)."""
    return MariaDBReplica.is_archived(None, relative_path) and not BINLOG.match(  # type: ignore[arg-type]
        relative_path
    )


def listing(data_dir: Path) -> DataDirListing:
    """The backed-up directories and files, as catchup's backup step scans them."""
    return scan_data_dir(data_dir, lambda rel: not archived(rel))


def tar_list(data_dir: Path, path: Path) -> Path:
    """A NUL-separated list for `tar -c --null --no-recursion -T`: the same entries."""
    found = listing(data_dir)
    names = [*found.directories, *(name for name, _, _ in found.files)]
    path.write_bytes(b"".join(name.encode() + b"\0" for name in names))
    return path


def tar_command(data_dir: Path, work: Path, tarball: Path) -> str:
    """`tar -c | zstd -1 -T0` of exactly the backed-up files."""
    names = tar_list(data_dir, work / "tar-files.list")
    return f"tar -c -C {data_dir} --null --no-recursion -T {names} | zstd -1 -T0 -q > {tarball}"


def same_files(data_dir: Path, restored: Path) -> bool:
    """The restored tree holds exactly the backed-up files, byte for byte."""
    want, got = listing(data_dir), scan_data_dir(restored, lambda _rel: False)
    if sorted(n for n, _, _ in want.files) != sorted(n for n, _, _ in got.files):
        return False
    for name, _, _ in want.files:
        a, b = data_dir / name, restored / name
        with a.open("rb") as x, b.open("rb") as y:
            while True:
                block = x.read(1 << 20)
                if block != y.read(1 << 20):
                    return False
                if not block:
                    break
    return True


def file_set(data_dir: Path) -> dict:
    """What was backed up and what was left out, for the report."""
    found = listing(data_dir)
    kept = {name for name, _, _ in found.files}
    left = sorted(
        str(p.relative_to(data_dir))
        for p in data_dir.iterdir()
        if p.is_file() and p.name not in kept
    )
    redo = data_dir / "ib_logfile0"
    return {
        "files": len(found.files),
        "bytes": found.total_bytes,
        "left_out": left,
        "left_out_bytes": sum((data_dir / n).stat().st_size for n in left),
        "redo_log_bytes": redo.stat().st_size if redo.exists() else 0,
    }
