"""What a backup costs the source: catchup's cycles vs the tools operators run today.

Usage: .venv/bin/python bench/source_impact.py [--size-gb 2] [--json] [--skip-postgres]
(`make bench-source-impact` installs mydumper first.)

On one sandbox MariaDB source of --size-gb (the demo schema, ROW binlogs), in one run:

1. catchup bootstrap (a consistent dump loaded into an ephemeral server);
2. for each changed fraction (0.1 %, 1 %, 5 %, 20 % of the rows of every large
   table, changed by 4 clients in 20-row transactions): the write workload, then
   a catchup steady-state cycle (catch-up from the previous backup);
3. the full-backup tools, once (their cost does not depend on the fraction):
   `mariadb-dump --single-transaction | zstd -1`, `mydumper -t 2 -c`, and
   `mariadb-backup --backup --stream=xbstream | zstd -1` run on the source host.

Per method: bytes the source sent over the network (a counting relay between
source and client; for mariadb-backup, the compressed stream that must leave the
host), source CPU seconds and bytes read from disk (sampled from /proc for the
server's process tree; for mariadb-backup plus the tool's own, since it runs on
the source host), wall time, backup size. Page caches are dropped before each.

Then: a zero-delta cycle on a --zero-delta-mb shard; 1, 2, 4 and 8 shards
backed up at once (aggregate throughput and per-shard time); and a PostgreSQL
source: catchup vs `pg_basebackup -X stream`. Results go into
docs/benchmarks.md (between the source-impact markers) and docs/img/.

The parts live in bench/impact/: measure.py (the source's CPU, reads, wall time),
sources.py (sandbox sources, catchup's cycles), workload.py (the writes between
backups), competitors.py (the other tools), scenarios.py, report.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from benchlib import machine, today, write_section
from impact.report import BEGIN, END, headline, plot, report_markdown
from impact.scenarios import (
    main_scenario,
    parallel_scenario,
    postgres_scenario,
    zero_delta_scenario,
)
from impact.sources import Bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--fractions", default="0.001,0.01,0.05,0.2")
    parser.add_argument("--zero-delta-mb", type=float, default=200)
    parser.add_argument("--parallel", default="1,2,4,8")
    parser.add_argument("--parallel-mb", type=float, default=100)
    parser.add_argument("--postgres-mb", type=float, default=500)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/catchup-bench-source"))
    parser.add_argument("--json", action="store_true", help="print the headline figures")
    parser.add_argument("--no-report", action="store_true", help="leave docs/ alone")
    args = parser.parse_args()

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    args.workdir.chmod(0o755)  # PostgreSQL sandboxes run as the postgres OS user
    bench = Bench(args.workdir)
    try:
        results = {
            "date": today(),
            "machine": machine(),
            "main": main_scenario(
                bench, args.size_gb, [float(f) for f in args.fractions.split(",")]
            ),
        }
        bench.stop()
        results["zero_delta"] = zero_delta_scenario(bench, args.zero_delta_mb)
        results["parallel"] = parallel_scenario(
            bench, [int(n) for n in args.parallel.split(",")], args.parallel_mb
        )
        bench.stop()
        if not args.skip_postgres:
            results["postgres"] = postgres_scenario(bench, args.postgres_mb, 0.01)
    finally:
        bench.stop()
    figures = headline(results)
    (args.workdir / "results.json").write_text(json.dumps(results, indent=2))
    if not args.no_report:
        plot(results)
        write_section(BEGIN, END, report_markdown(results, figures))
    if args.json:
        print(json.dumps(figures))
    else:
        print(report_markdown(results, figures))


if __name__ == "__main__":
    main()
