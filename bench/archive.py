"""The continuous log archive, measured: lag, source load, catch-up bytes, PITR time.

Usage: .venv/bin/python bench/archive.py [--engines mariadb,postgres] [--size-mb 100]
       [--window 60] [--ref-window 30] [--rate 50] [--fraction 0.01] [--json]

For each engine, on one sandbox source of --size-mb (catchup.demo), in one run:

1. archive lag at the defaults (flush_seconds = 5, a local-directory repository):
   a steady writer (--rate small transactions a second, one a second a marker whose
   commit time is noted); a marker's lag is when the archiver first holds its
   position minus its commit time; p50/p99/max over --window seconds, then the same
   at flush_seconds = 1 over --ref-window;
2. the source's CPU (its process tree) over the same load with the archiver
   streaming, with one idle replica streaming instead, and with nothing: the ratio
   (archiver - nothing) ÷ (replica - nothing);
3. source bytes of a cycle after a delta of --fraction of the rows with the archiver
   running, against the delta's log bytes, and the same without an archiver;
4. `catchup restore --to-time T` against the manual way (restore the backup, start a
   stock server, replay the archived log with the server's tools), as a ratio.

The parts live in bench/archive_parts/. Results go into docs/benchmarks.md (between
the archive markers) and docs/img/archive-lag.png; the raw numbers into
WORKDIR/results.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from archive_parts.report import BEGIN, END, figures, plot, report_markdown
from benchlib import machine, today, write_section


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="mariadb,postgres")
    parser.add_argument("--size-mb", type=float, default=100)
    parser.add_argument("--window", type=float, default=60, help="seconds per measured window")
    parser.add_argument("--ref-window", type=float, default=30, help="at flush_seconds = 1")
    parser.add_argument("--rate", type=float, default=50, help="transactions a second")
    parser.add_argument("--fraction", type=float, default=0.01, help="rows changed per delta")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/catchup-bench-archive"))
    parser.add_argument("--json", action="store_true", help="print the headline figures")
    parser.add_argument("--no-report", action="store_true", help="leave docs/ alone")
    parser.add_argument(
        "--report-only", action="store_true", help="render WORKDIR/results.json again"
    )
    args = parser.parse_args(argv)
    args.engines = [e for e in args.engines.split(",") if e]
    unknown = set(args.engines) - {"mariadb", "postgres"}
    if unknown:
        parser.error(f"unknown engines: {', '.join(sorted(unknown))}")
    return args


def main() -> None:
    args = parse_args()
    path = args.workdir / "results.json"
    if args.report_only:
        results = json.loads(path.read_text())
    else:
        from archive_parts.scenarios import run_engine

        args.workdir.mkdir(parents=True, exist_ok=True)
        args.workdir.chmod(0o755)  # PostgreSQL sandboxes run as the postgres OS user
        results = {"date": today(), "machine": machine(), "window": args.window, "engines": []}
        for engine in args.engines:
            found = run_engine(engine, args.workdir / engine, args)
            found["fraction"] = args.fraction
            results["engines"].append(found)
            path.write_text(json.dumps(results, indent=2, default=str))
    headline = {e["engine"]: figures(e) for e in results["engines"]}
    if not args.no_report:
        plot(results)
        write_section(BEGIN, END, report_markdown(results))
    if args.json:
        print(json.dumps(headline, default=str))
    else:
        print(report_markdown(results))


if __name__ == "__main__":
    main()
