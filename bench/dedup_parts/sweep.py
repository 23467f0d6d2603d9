"""Phase 1 of bench/dedup.py (`--sweep`): which chunking makes a 1 % change cost
the fewest new bytes. On a copy of the base data dir: a snapshot of every chunking;
one skewed round, a snapshot; one uniform round (on top of the skewed state), a
snapshot. Each snapshot's new bytes are against the one before it."""

from __future__ import annotations

from pathlib import Path

from benchlib import MIB, say
from dedup_parts.chunking import SWEEP, Chunking, Snapshot, snapshot
from dedup_parts.source import copy_tree, data_dir, open_source, start, stop_for_archive
from dedup_parts.workloads import run_workload

TOP_FILES_OF = "fixed 256 KiB"


def snapshots(directory: Path, previous: dict[str, Snapshot] | None) -> dict[str, Snapshot]:
    shots = {}
    for chunking in SWEEP:
        shots[chunking.name] = snapshot(directory, chunking, previous and previous[chunking.name])
        say(f"  {chunking.name}: {shots[chunking.name].mib_per_second:.0f} MiB/s")
    return shots


def run_sweep(base: Path, work: Path, fraction: float) -> dict:
    root = work / "sweep"
    copy_tree(base, root)
    source = open_source(root)
    say("snapshots of the base data dir")
    shots = {"base": snapshots(data_dir(source), None)}
    previous = shots["base"]
    rounds = {}
    for round_, workload in enumerate(("skewed", "uniform"), start=1):
        start(source)
        say(f"{workload} workload, {fraction:.0%} of the rows")
        rounds[workload] = run_workload(source, workload, fraction, round_)
        stop_for_archive(source)
        say(f"snapshots after the {workload} round")
        shots[workload] = previous = snapshots(data_dir(source), previous)
    return summarize(shots, rounds)


def summarize(shots: dict[str, dict[str, Snapshot]], rounds: dict[str, int]) -> dict:
    rows = []
    for chunking in SWEEP:
        base = shots["base"][chunking.name]
        row = {
            "chunking": chunking.name,
            "chunks": base.chunks,
            "distinct_chunks": len(base.digests),
            "hash_mib_s": base.mib_per_second,
            "data_bytes": base.data_bytes,
        }
        for workload in ("skewed", "uniform"):
            shot = shots[workload][chunking.name]
            row |= {
                f"{workload}_new_bytes": shot.new_bytes,
                f"{workload}_new_ratio": shot.new_bytes / shot.data_bytes,
                f"{workload}_new_zstd_ratio": shot.new_zstd_bytes / shot.data_bytes,
                f"{workload}_top_files": shot.new_by_file.most_common(5),
            }
        rows.append(row)
    return {"rows": rows, "transactions": rounds}


def sweep_markdown(result: dict, fraction: float, chunking: Chunking | None = None) -> str:
    rows = result["rows"]
    data = rows[0]["data_bytes"]
    lines = [
        f"Data dir: {data / MIB:.0f} MiB (after the base; stopped cleanly). Each workload "
        f"changes {fraction:.0%} of the rows; uniform runs on top of the skewed state.",
        "New = bytes of distinct chunks whose BLAKE3 hash the previous snapshot lacks, "
        "÷ data dir bytes (raw; and zstd -1 of those chunks). Hash MiB/s: one thread, "
        "cut + BLAKE3, page cache warm. FastCDC: the `fastcdc` package, installed only to "
        "measure it (`.venv/bin/pip install fastcdc`).",
        "",
        "| chunking | chunks | distinct | hash MiB/s | skewed new | skewed new (zstd) "
        "| uniform new | uniform new (zstd) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['chunking']} | {r['chunks']:,} | {r['distinct_chunks']:,} | "
            f"{r['hash_mib_s']:.0f} | {r['skewed_new_ratio']:.4f} | "
            f"{r['skewed_new_zstd_ratio']:.4f} | {r['uniform_new_ratio']:.4f} | "
            f"{r['uniform_new_zstd_ratio']:.4f} |"
        )
    top = next(r for r in rows if r["chunking"] == TOP_FILES_OF)
    for workload in ("skewed", "uniform"):
        lines += ["", f"Top 5 files by new bytes, {TOP_FILES_OF}, {workload}:", ""]
        lines += [f"- {name}: {n / MIB:.1f} MiB" for name, n in top[f"{workload}_top_files"]]
    return "\n".join(lines)
