"""catchup's part of a cycle, run in a child process of its own so that its time and
peak RSS are its own: `python bench/dedup_parts/step.py '<json>'` prints one JSON line.

{"op": "backup", "repo", "key", "format", "size_kib", "data_dir", "shard", "jobs"}:
  back up the stopped data dir (the parent: the shard's latest backup);
{"op": "restore", "repo", "key", "shard", "target", "jobs"}: restore its latest backup.
The repository is a local directory; the key file makes encryption on, as in production.
"""

from __future__ import annotations

import inspect
import json
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for benchlib

import benchlib  # noqa: F401  (puts src/ on the import path)
from catchup.codec import CodecSettings
from catchup.codec.keys import Keyring
from catchup.repository import BackupHeader, Repository
from catchup.repository.manifest import SourceInfo
from catchup.storage import open_store
from dedup_parts.files import archived

KEYSPACE = "bench"


def repository(spec: dict) -> Repository:
    keyring = Keyring.from_files([Path(spec["key"])])
    options = {}
    if "chunks" in inspect.signature(Repository).parameters:  # format 3 is there
        from catchup.config.repository import ChunkSettings

        options["chunks"] = ChunkSettings(format=spec["format"], size_kib=spec["size_kib"])
    elif spec["format"] != 2:
        raise SystemExit("this checkout's Repository has no chunks= (format 3) yet")
    return Repository(open_store(spec["repo"]), keyring, **options)


def header(shard: str, parent: str | None) -> BackupHeader:
    return BackupHeader(
        keyspace=KEYSPACE,
        shard=shard,
        engine="mariadb",
        server_version="bench",
        kind="catchup" if parent else "bootstrap",
        parent=parent,
        position="0-1-1",
        source=SourceInfo(endpoint="127.0.0.1:3306", role="primary"),
        started_at=datetime.now(UTC),
        bytes_from_source=0,
        durations={},
    )


def backup(spec: dict) -> dict:
    repo = repository(spec)
    parent = repo.latest(KEYSPACE, spec["shard"])
    data_dir = Path(spec["data_dir"])
    started = time.perf_counter()
    listing = repo.scan(data_dir, lambda rel: not archived(rel))  # catchup's file set
    options = {}
    if "parent" in inspect.signature(repo.write_backup).parameters:
        options["parent"] = parent
    manifest = repo.write_backup(
        header(spec["shard"], parent.backup_id if parent else None),
        data_dir,
        listing,
        CodecSettings(level=1),
        spec["jobs"],
        **options,
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "data_bytes": manifest.data_bytes,
        "stored_bytes": manifest.stored_bytes,
        "new_stored_bytes": getattr(manifest, "new_stored_bytes", None),
        "backup_id": manifest.backup_id,
    }


def restore(spec: dict) -> dict:
    repo = repository(spec)
    manifest = repo.latest(KEYSPACE, spec["shard"])
    started = time.perf_counter()
    repo.restore(manifest, Path(spec["target"]), spec["jobs"])
    return {"seconds": time.perf_counter() - started, "backup_id": manifest.backup_id}


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = {"backup": backup, "restore": restore}[spec["op"]](spec)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main()
