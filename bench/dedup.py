"""Deduplicated backups (repository format 3): what a 1 % change costs in new
stored bytes, how fast the backup step and the restore are, and storage over 14
cycles against format 2 and a mariadb-backup incremental chain.

Usage: .venv/bin/python bench/dedup.py --sweep [--size-gb 2] [--work /tmp/dedup-work]
       .venv/bin/python bench/dedup.py [--size-gb 2] [--cycles 14] [--json] [--no-report]
       .venv/bin/python bench/dedup.py --timing | --report-only   (after a run: redo
       only the timing part, or only the report, from --work's results.json)

A default run ends with the timing part (--timing-rounds 3). `--timing-rounds 0` leaves
it out; a later `--timing` adds it (each --timing plays one more workload round on the
run's server, numbered after the cycles and any earlier timing).

What is backed up (dedup_parts/files.py), by catchup's backup step, format 2 and tar
alike: what catchup's own archive of the data dir holds. The sandbox is a source with
binlogs; catchup's replica runs without them, so they are left out, with what
catchup's MariaDB instance never archives (MariaDBReplica.is_archived). Every clean
stop shrinks the redo log to mariadb.archive_redo_log_mb (16 MiB) with catchup's own
shrink_redo_and_stop, as an archived cycle does.

On a sandbox MariaDB loaded with the demo schema ("shop") at --size-gb, kept in
--work between runs (`base/`: loading takes minutes), every workload starts from
a copy of the base and changes 1 % of the rows per cycle (dedup_parts/workloads.py:
skewed = appends plus a hot set of recent rows; uniform = random rows everywhere).

--sweep (phase 1: choosing the chunking): file-level chunk hashes of the stopped
data dir for fixed page-aligned chunks of 16 KiB to 1 MiB and for FastCDC
(`pip install fastcdc` into the venv, for this measurement only; without it --sweep
stops with that one line), before and after one round of
each workload; reports each chunking's new bytes ÷ data dir bytes, its chunk count
and hashing throughput, and the files that dominate the new bytes.

Default (phase 2): per workload, --cycles cycles on a copy of the base: start the
server, one round of the workload, stop it cleanly, then catchup's backup step of the
stopped data dir into a local repository in format 3 (encrypted with a key file;
timed, with its peak RSS, in a child process: dedup_parts/step.py). Cycle 0 backs up
the base. Beside it: format 2's size (a full backup, measured at --format2-at cycles,
linear in between) and, on the skewed run, a mariadb-backup chain (a full, then an
--incremental per cycle, each | zstd -1). On the final data dir of each workload:
`tar -c | zstd -1 -T0` vs the backup step, and `zstd -d | tar -x` vs catchup's
restore (page cache warm for both); then (dedup_parts/timing.py) one more skewed
cycle on which they are timed --timing-rounds times back to back, in alternating
order, beside the restore of a format 2 backup of the same files (restore_vs_format2:
format 2's time ÷ format 3's, from the run's repository after all its cycles), also
with catchup's default 4 jobs: the ratios use the fastest of each. The report also
estimates, from the manifests, how much of the new stored bytes chunks.repack_below
re-stores (dedup_parts/repack.py). Results go into
docs/benchmarks.md (between the dedup markers) and docs/img/dedup-storage.png;
--json prints the headline figures.

The parts live in bench/dedup_parts/: source.py (the sandbox and its base copy),
files.py (the file set), workloads.py, chunking.py and sweep.py (phase 1), step.py,
cycles.py, timing.py, repack.py and report.py (phase 2). mariadb-backup is the Debian
package of that name.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

from benchlib import machine, today, write_section
from dedup_parts.cycles import key_file, run_cycles
from dedup_parts.repack import repack_estimate
from dedup_parts.report import BEGIN, END, headline, markdown, plot
from dedup_parts.source import ensure_base
from dedup_parts.sweep import run_sweep, sweep_markdown
from dedup_parts.timing import timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/dedup-work"))
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--sweep", action="store_true", help="phase 1: the chunk-size sweep")
    parser.add_argument("--out", type=Path, help="--sweep: also write the table here")
    parser.add_argument("--cycles", type=int, default=14)
    parser.add_argument(
        "--uniform-cycles", type=int, help="fewer uniform cycles (its rounds are slow)"
    )
    parser.add_argument("--chunk-kib", type=int, default=256)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--format2-at", default="0,7,14", help="cycles to measure format 2 at")
    parser.add_argument("--workloads", default="skewed,uniform")
    parser.add_argument("--json", action="store_true", help="one JSON line on stdout")
    parser.add_argument("--no-report", action="store_true", help="leave docs/ alone")
    parser.add_argument(
        "--report-only", action="store_true", help="report the last run's results.json again"
    )
    parser.add_argument("--timing-rounds", type=int, default=3)
    parser.add_argument(
        "--timing", action="store_true", help="only the timing part, after a run of the cycles"
    )
    args = parser.parse_args()
    if args.sweep and importlib.util.find_spec("fastcdc") is None:
        raise SystemExit(
            "--sweep measures FastCDC too: `.venv/bin/pip install fastcdc` first "
            "(for this measurement only; it is not a catchup dependency)"
        )
    args.work.mkdir(parents=True, exist_ok=True)
    if args.report_only or args.timing:
        results = json.loads((args.work / "results.json").read_text())
        if args.timing:
            add_timing(results, args)
        report(results, args)
        return
    base = ensure_base(args.work, args.size_gb)
    if args.sweep:
        result = run_sweep(base, args.work, args.fraction)
        (args.work / "sweep.json").write_text(json.dumps(result, indent=2))
        text = sweep_markdown(result, args.fraction)
        if args.out:
            args.out.write_text(text + "\n")
        print(json.dumps(result) if args.json else text)
        return
    started = time.monotonic()
    results: dict = {
        "date": today(),
        "machine": machine(),
        "chunk_kib": args.chunk_kib,
        "jobs": args.jobs,
    }
    format2_at = {min(int(c), args.cycles) for c in args.format2_at.split(",")}
    for workload in args.workloads.split(","):
        results[workload] = run_cycles(
            base,
            args.work,
            workload,
            args.uniform_cycles or args.cycles if workload == "uniform" else args.cycles,
            args.fraction,
            args.chunk_kib,
            args.jobs,
            format2_at if workload == "skewed" else set(),
            chain=workload == "skewed",
        )
    results["seconds"] = time.monotonic() - started
    (args.work / "results.json").write_text(json.dumps(results, indent=2))
    if args.timing_rounds:
        add_timing(results, args)
    report(results, args)


def add_timing(results: dict, args: argparse.Namespace) -> None:
    """The speed figures, repeated back to back on one more skewed cycle (timing.py)."""
    started = time.monotonic()
    # The run's server is one workload round past its last cycle per earlier timing.
    cycle = results.get("timing", {}).get("cycle", len(results["skewed"]["records"]) - 1) + 1
    spec = {"format": 3, "size_kib": results["chunk_kib"], "shard": "skewed", "jobs": args.jobs}
    results["timing"] = timing(args.work, "skewed", args.fraction, cycle, args.timing_rounds, spec)
    results["seconds"] += time.monotonic() - started
    (args.work / "results.json").write_text(json.dumps(results, indent=2))


def report(results: dict, args: argparse.Namespace) -> None:
    for workload in ("skewed", "uniform"):  # repack_below's share, from the manifests
        if (args.work / f"repo-{workload}").is_dir():
            results[workload]["repack"] = repack_estimate(
                args.work, workload, key_file(args.work), results["chunk_kib"]
            )
    sweep_path = args.work / "sweep.json"
    sweep = json.loads(sweep_path.read_text()) if sweep_path.exists() else None
    if sweep:
        results["sweep_rows"] = sweep["rows"]
    figures = headline(results)
    text = markdown(results, figures)
    if sweep:  # the measurement that chose the chunk size
        text += (
            "\n\n### Choosing the chunk size (`--sweep`)\n\nOn a load of its own of the "
            "same size, the same file set. " + sweep_markdown(sweep, args.fraction)
        )
    if not args.no_report:
        plot(results)
        write_section(BEGIN, END, text)
    print(json.dumps(figures) if args.json else text)


if __name__ == "__main__":
    main()
