"""A base backup of the source, unpacked into the instance with its tablespaces inside.

pg_basebackup in plain format writes each user tablespace to the source's absolute
path, on the catchup host; `--tablespace-mapping` helps only for tablespaces known
before it starts. In tar format it writes one archive per tablespace into its
target directory and nothing anywhere else, so catchup asks for tar and unpacks:

- base.tar into the data dir, without its `tablespace_map` (whose absolute paths
  recovery would turn into symlinks);
- pg_wal.tar into pg_wal;
- <oid>.tar into pg_tblspc/<oid>, a real directory: an "in-place" tablespace,
  which PostgreSQL 15 runs from when `allow_in_place_tablespaces` is on.

So a backup stores a tablespace's files under pg_tblspc/<oid>/ like any other,
and a restore brings them back there.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

from catchup.errors import SourceError

TABLESPACE_ARCHIVE = re.compile(r"(\d+)\.tar")


def unpack(archives: Path, data_dir: Path) -> list[str]:
    """Unpack pg_basebackup's tar output into `data_dir`, removing each archive once done;
    returns the tablespace oids found."""
    data_dir.mkdir(mode=0o700, exist_ok=True)
    _extract(archives / "base.tar", data_dir)
    (data_dir / "tablespace_map").unlink(missing_ok=True)
    _extract(archives / "pg_wal.tar", data_dir / "pg_wal")
    oids = []
    for archive in sorted(archives.iterdir()):
        found = TABLESPACE_ARCHIVE.fullmatch(archive.name)
        if found:
            oids.append(found.group(1))
            target = data_dir / "pg_tblspc" / found.group(1)
            target.mkdir(mode=0o700, parents=True, exist_ok=False)
            _extract(archive, target)
    return oids


def _extract(archive: Path, target: Path) -> None:
    """The 'data' filter refuses absolute names, `..`, links leaving `target` and device
    files, and clears setuid bits: the source cannot write outside the instance."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise SourceError(f"cannot unpack the source's base backup {archive.name}: {exc}") from exc
    archive.unlink()


def tablespace_dirs(data_dir: Path) -> dict[str, bool]:
    """Entries of pg_tblspc: oid → True for an in-place directory, False for a symlink
    (one that recovery made from an absolute path)."""
    tblspc = data_dir / "pg_tblspc"
    if not tblspc.is_dir():
        return {}
    return {entry.name: not entry.is_symlink() for entry in tblspc.iterdir()}
