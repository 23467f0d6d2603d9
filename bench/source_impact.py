"""What a backup costs the source: catchup's cycles vs the tools operators run today.

Usage: .venv/bin/python bench/source_impact.py [--size-gb 2] [--json] [--skip-postgres]
       [--skip-mysql | --only mariadb | --only mysql [--mysql-mb 500]]
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

And a MySQL source of --mysql-mb, in a section of its own (its own markers, so
`--only mysql` reruns it alone and leaves the MariaDB/PostgreSQL one alone, and
`--only mariadb` or `--skip-mysql` the other way round): catchup bootstraps by
CLONE (`mysql.bootstrap = "clone"`) and by mysqldump (`"dump"`), each into a shard
of its own; 1 % of rows changed; a catch-up cycle of each shard; then
`mysqldump --single-transaction --set-gtid-purged=ON | zstd -1` through a counting
relay, and a raw `CLONE INSTANCE FROM` the source into a scratch mysqld.

The parts live in bench/impact/: measure.py (the source's CPU, reads, wall time),
sources.py (sandbox sources, catchup's cycles), workload.py (the writes between
backups), competitors.py (the other tools), scenarios.py, report.py.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from benchlib import machine, say, today, write_section
from impact.report import (
    BEGIN,
    END,
    MYSQL_BEGIN,
    MYSQL_END,
    headline,
    mysql_headline,
    mysql_markdown,
    plot,
    report_markdown,
)
from impact.scenarios import (
    main_scenario,
    mysql_missing,
    mysql_scenario,
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
    parser.add_argument("--mysql-mb", type=float, default=500)
    parser.add_argument("--skip-mysql", action="store_true")
    parser.add_argument(
        "--only",
        choices=("mariadb", "mysql"),
        help="one section only: mariadb (with PostgreSQL) or mysql; the other stays as it is",
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/catchup-bench-source"))
    parser.add_argument("--json", action="store_true", help="print the headline figures")
    parser.add_argument("--no-report", action="store_true", help="leave docs/ alone")
    args = parser.parse_args()
    run_mariadb = args.only != "mysql"
    run_mysql = args.only == "mysql" or (args.only is None and not args.skip_mysql)
    missing = mysql_missing() if run_mysql else None
    if missing and args.only == "mysql":
        parser.error(missing)
    if missing:
        say(f"the MySQL part is skipped: {missing}")
        run_mysql = False

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    args.workdir.chmod(0o755)  # PostgreSQL sandboxes run as the postgres OS user
    bench = Bench(args.workdir)
    results: dict = {"date": today(), "machine": machine()}
    try:
        if run_mariadb:
            results["main"] = main_scenario(
                bench, args.size_gb, [float(f) for f in args.fractions.split(",")]
            )
            bench.stop()
            results["zero_delta"] = zero_delta_scenario(bench, args.zero_delta_mb)
            results["parallel"] = parallel_scenario(
                bench, [int(n) for n in args.parallel.split(",")], args.parallel_mb
            )
            bench.stop()
            if not args.skip_postgres:
                results["postgres"] = postgres_scenario(bench, args.postgres_mb, 0.01)
            bench.stop()
        if run_mysql:
            results["mysql"] = mysql_scenario(bench, args.mysql_mb, 0.01)
    finally:
        bench.stop()
    (args.workdir / "results.json").write_text(json.dumps(results, indent=2))
    figures: dict = {}
    sections = []
    if run_mariadb:
        figures |= headline(results)
        sections.append((BEGIN, END, report_markdown(results, figures)))
    if run_mysql:
        figures |= mysql_headline(results["mysql"])
        sections.append((MYSQL_BEGIN, MYSQL_END, mysql_markdown(results, figures)))
    if not args.no_report:
        if run_mariadb:
            plot(results)
        for begin, end, text in sections:
            write_section(begin, end, text)
    if args.json:
        print(json.dumps(figures))
    else:
        print("\n".join(text for _, _, text in sections))


if __name__ == "__main__":
    main()
