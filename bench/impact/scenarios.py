"""The scenarios of one run: the main one (bootstrap, steady state by changed
fraction, the full-backup tools), a zero-delta cycle, shards at once, a PostgreSQL
source, and a MySQL source (bootstrap by CLONE vs by mysqldump)."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from dataclasses import asdict

from benchlib import MIB, dir_bytes, say
from catchup.demo.shop import DATABASE
from catchup.engines.mysql.binaries import find_binary
from catchup.errors import ConfigError
from impact.competitors import (
    mariadb_backup,
    mariadb_dump,
    mydumper,
    mysql_clone,
    mysqldump,
    pg_basebackup,
)
from impact.sources import Bench, catchup_cycle
from impact.workload import change_rows, settle


def main_scenario(bench: Bench, size_gb: float, fractions: list[float]) -> dict:
    say(f"loading {size_gb:g} GB into a MariaDB source")
    source = bench.add_mariadb(size_gb * 1024)
    settle(source)
    data_bytes = dir_bytes(source.server.files.data_dir / DATABASE)
    say("catchup bootstrap")
    bootstrap = catchup_cycle(bench, source, "catchup bootstrap")
    steady = []
    for round_, fraction in enumerate(fractions, start=1):
        say(f"workload: {fraction:.1%} of rows, then a catchup cycle")
        workload = change_rows(source, fraction, round_)
        cost = catchup_cycle(bench, source, f"catchup steady state ({fraction:.1%} changed)")
        cost.extra |= {
            "fraction": fraction,
            "binlog_bytes": workload["binlog_bytes"],
            "rows_changed": workload["rows"],
            "workload_seconds": workload["seconds"],
            "bytes_vs_binlog": cost.source_bytes / workload["binlog_bytes"],
            "apply_rate_ratio": (workload["binlog_bytes"] / cost.extra["catch_up_seconds"])
            / workload["rate"],
        }
        steady.append(cost)
    full = []
    for name, tool in (
        ("mariadb-dump", mariadb_dump),
        ("mydumper", mydumper),
        ("mariadb-backup", mariadb_backup),
    ):
        if name == "mydumper" and not shutil.which("mydumper"):
            say("mydumper is not installed: `make bench-source-impact` installs it; skipped")
            continue
        say(f"{name} of everything")
        full.append(tool(bench, source))
    return {
        "data_bytes": data_bytes,
        "server_version": source.server.connect().get_server_info(),
        "bootstrap": asdict(bootstrap),
        "steady": [asdict(c) for c in steady],
        "full": [asdict(c) for c in full],
    }


def zero_delta_scenario(bench: Bench, size_mb: float, runs: int = 3) -> dict:
    say(f"zero-delta cycles on a {size_mb:g} MB shard")
    source = bench.add_mariadb(size_mb)
    bench.backup([source])
    results = [bench.backup([source])[0] for _ in range(runs)]
    return {
        "size_mb": size_mb,
        "data_bytes": results[0].data_bytes,
        "seconds": statistics.median(r.seconds for r in results),
        "all_seconds": [r.seconds for r in results],
        "bytes_from_source": statistics.median(r.bytes_from_source for r in results),
        "durations": results[len(results) // 2].durations,
    }


def parallel_scenario(bench: Bench, counts: list[int], size_mb: float) -> dict:
    say(f"{max(counts)} sources of {size_mb:g} MB for the parallel scenario")
    sources = [bench.add_mariadb(size_mb) for _ in range(max(counts))]
    for i in range(0, len(sources), 2):
        bench.backup(sources[i : i + 2])  # bootstraps, not measured
    rows = []
    for round_, count in enumerate(counts, start=100):
        for source in sources[:count]:
            change_rows(source, 0.01, round_)
        say(f"{count} shard(s) at once")
        started = time.monotonic()
        results = bench.backup(sources[:count])
        wall = time.monotonic() - started
        rows.append(
            {
                "shards": count,
                "wall_seconds": wall,
                "per_shard_seconds": statistics.mean(r.seconds for r in results),
                "throughput_mib_s": sum(r.data_bytes for r in results) / wall / MIB,
                "bytes_from_source": sum(r.bytes_from_source for r in results),
            }
        )
    base = rows[0]["throughput_mib_s"]
    for row in rows:
        row["speedup"] = row["throughput_mib_s"] / base
    return {"size_mb": size_mb, "rows": rows}


def postgres_scenario(bench: Bench, size_mb: float, fraction: float) -> dict:
    say(f"PostgreSQL: {size_mb:g} MB of pgbench data")
    source = bench.add_postgres(size_mb)
    bootstrap = catchup_cycle(bench, source, "catchup bootstrap (pg_basebackup inside)")
    source.apply_workload(fraction)
    steady = catchup_cycle(bench, source, f"catchup steady state ({fraction:.0%} of accounts)")
    base = pg_basebackup(bench, source)
    return {"size_mb": size_mb, "costs": [asdict(c) for c in (bootstrap, steady, base)]}


def mysql_missing() -> str | None:
    """Why the MySQL part cannot run here (no MySQL programs), or None."""
    try:
        for program in ("mysqld", "mysqldump", "mysql"):
            find_binary(program)
    except ConfigError as exc:
        return str(exc)
    return None


def mysql_scenario(bench: Bench, size_mb: float, fraction: float) -> dict:
    """One MySQL source, two shards of it: one bootstrapped by CLONE, one by mysqldump;
    a workload; a catch-up cycle of each; then mysqldump and a raw CLONE of everything."""
    mysqld = find_binary("mysqld")
    version = subprocess.run([mysqld, "--version"], capture_output=True, text=True, check=True)
    say(f"MySQL: loading {size_mb:g} MB into a MySQL source")
    started = time.monotonic()
    source = bench.add_mysql(size_mb)
    settle(source)
    load_seconds = time.monotonic() - started
    data_dir = source.server.files.data_dir
    data_bytes = dir_bytes(data_dir / DATABASE)
    # What CLONE copies: every InnoDB file (system, undo, redo as it goes), not binlogs.
    binlogs = sum(p.stat().st_size for p in data_dir.glob("binlog.*"))
    innodb_bytes = dir_bytes(data_dir) - binlogs
    name = bench.names[id(source)]
    bootstrap, steady = [], []
    for method in ("clone", "dump"):
        say(f"catchup bootstrap by {method}")
        bootstrap.append(
            catchup_cycle(
                bench,
                source,
                f'catchup bootstrap, mysql.bootstrap = "{method}"',
                f"{name}-{method}",
                {"bootstrap": method},
            )
        )
    say(f"workload: {fraction:.1%} of rows, then a catchup cycle of each shard")
    workload = change_rows(source, fraction, 1)
    for method in ("clone", "dump"):
        cost = catchup_cycle(
            bench,
            source,
            f"catchup steady state ({fraction:.0%} changed; {method} bootstrap)",
            f"{name}-{method}",
            {"bootstrap": method},
        )
        cost.extra |= {
            "fraction": fraction,
            "binlog_bytes": workload["binlog_bytes"],
            "rows_changed": workload["rows"],
            "workload_seconds": workload["seconds"],
            "bytes_vs_binlog": cost.source_bytes / workload["binlog_bytes"],
        }
        steady.append(cost)
    say("mysqldump of everything")
    dump = mysqldump(bench, source)
    say("CLONE INSTANCE of everything")
    clone = mysql_clone(bench, source)
    return {
        "size_mb": size_mb,
        "data_bytes": data_bytes,
        "innodb_bytes": innodb_bytes,
        "load_seconds": load_seconds,
        "server_version": source.server.connect().get_server_info(),
        "mysqld_version": "mysqld " + version.stdout.split(None, 1)[1].strip(),
        "bootstrap": [asdict(c) for c in bootstrap],
        "steady": [asdict(c) for c in steady],
        "full": [asdict(c) for c in (dump, clone)],
    }
