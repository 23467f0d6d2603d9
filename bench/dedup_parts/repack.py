"""How much of each format 3 backup's new stored bytes is `chunks.repack_below` at
work rather than changed data, estimated from the manifests alone.

A backup reuses none of its parent's chunks that lie in a pack the parent uses less
than repack_below (0.5) of: the ones it still needs are stored again, densely. So a
backup re-stores at most the bytes its parent used of those sparse packs (at most:
some of them were changed by the workload, and would be new anyway).
"""

from __future__ import annotations

import itertools
from pathlib import Path

from catchup.config.repository import ChunkSettings
from dedup_parts.step import KEYSPACE, repository


def repack_estimate(work: Path, workload: str, key: Path, size_kib: int) -> list[dict]:
    repo = repository(
        {"repo": str(work / f"repo-{workload}"), "key": str(key), "format": 3, "size_kib": size_kib}
    )
    below = ChunkSettings().repack_below
    manifests = repo.backups(KEYSPACE, workload)
    out = []
    for parent, child in itertools.pairwise(manifests):
        sparse = [u for u in parent.packs or [] if u.size == 0 or u.used < below * u.size]
        out.append(
            {
                "new_stored_bytes": child.new_stored_bytes,
                "repacked_at_most": sum(u.used for u in sparse),
                "sparse_packs": len(sparse),
                "parent_packs": len(parent.packs or []),
            }
        )
    return out
