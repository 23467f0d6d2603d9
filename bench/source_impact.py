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
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

from catchup.cancel import CancelToken  # noqa: E402
from catchup.config import Config, parse_config  # noqa: E402
from catchup.cycle import CycleOptions, LogReporter  # noqa: E402
from catchup.demo.mariadb import MariaDBSandbox  # noqa: E402
from catchup.demo.postgres import PostgresSandbox  # noqa: E402
from catchup.demo.run import demo_config  # noqa: E402
from catchup.demo.shop import DATABASE  # noqa: E402
from catchup.engines.relay import CountingRelay  # noqa: E402
from catchup.files import write_private  # noqa: E402
from catchup.fleet.run import ShardResult, backup_fleet  # noqa: E402
from catchup.repository import open_repository  # noqa: E402

MIB = 1 << 20
DOC = REPO_ROOT / "docs" / "benchmarks.md"
IMG = REPO_ROOT / "docs" / "img"
BEGIN, END = "<!-- source-impact:begin -->", "<!-- source-impact:end -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BENCH_USER, BENCH_PASSWORD = "bench", "bench-only-not-a-secret"
# (table, primary key column, rows per key, SET clause): what the workload changes.
CHANGES = [
    (
        "orders",
        "id",
        1,
        "total = total + 1, status = ELT(1 + MOD(id + {round}, 4), "
        "'new', 'paid', 'shipped', 'cancelled')",
    ),
    ("order_items", "order_id", 3, "qty = qty + 1"),
    ("customers", "id", 1, "order_count = order_count + 1"),
    ("documents", "id", 1, "body = RANDOM_BYTES(1024)"),
]
TXN_ROWS = 20  # rows per transaction of the write workload
CLIENTS = 4  # its connections


# --- measuring the source --------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def process_counters(pid: int) -> tuple[float, int] | None:
    """CPU seconds (user + system) and bytes read from storage, or None if gone."""
    try:
        fields = (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1]).split()
        io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, int(io["read_bytes"])


class SourceMeter:
    """Samples a server's process tree, so short-lived backends (walsenders) count too."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.first: dict[int, tuple[float, int]] = {}
        self.last: dict[int, tuple[float, int]] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, baseline: bool) -> None:
        for pid in descendants(self.pid):
            counters = process_counters(pid)
            if counters is None:
                continue
            self.first.setdefault(pid, counters if baseline else (0.0, 0))
            self.last[pid] = counters

    def _run(self) -> None:
        while not self.done.wait(self.interval):
            self._sample(baseline=False)

    def __enter__(self) -> SourceMeter:
        self._sample(baseline=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
        self._sample(baseline=False)

    @property
    def cpu_seconds(self) -> float:
        return sum(self.last[p][0] - self.first[p][0] for p in self.last)

    @property
    def read_bytes(self) -> int:
        return sum(self.last[p][1] - self.first[p][1] for p in self.last)


def drop_caches() -> None:
    """Cold page cache, so bytes read from disk mean something."""
    os.sync()
    with contextlib.suppress(OSError):  # not root: caches stay warm
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


@dataclass
class Cost:
    method: str
    source_bytes: int  # over the network from the source (or leaving its host)
    source_cpu_seconds: float
    source_read_bytes: int
    wall_seconds: float
    backup_bytes: int
    extra: dict[str, float] = field(default_factory=dict)


@contextmanager
def metered(pid: int) -> Iterator[tuple[SourceMeter, dict[str, float]]]:
    drop_caches()
    clock: dict[str, float] = {}
    with SourceMeter(pid) as meter:
        started = time.monotonic()
        yield meter, clock
        clock["wall"] = time.monotonic() - started


def children_usage() -> tuple[float, int]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_inblock * 512


def shell(command: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        check=True,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --- sources and catchup -----------------------------------------------------------------


class Bench:
    """Sandbox sources, a catchup config over them, and one repository."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sources: list[MariaDBSandbox | PostgresSandbox] = []  # running
        self.names: dict[int, str] = {}  # id(source) -> shard name, unique over the run

    def _named(self, make: Callable[[Path, int], Any]) -> Any:
        index = len(self.names)
        source = make(self.root / f"src-{index}", index + 1)
        self.names[id(source)] = f"s{index}"
        self.sources.append(source)
        return source

    def add_mariadb(self, size_mb: float) -> MariaDBSandbox:
        source = self._named(lambda root, server_id: MariaDBSandbox(root, server_id))
        source.start()
        # Production fleets (and Vitess) log rows; the sandbox default is MIXED.
        source.execute("SET GLOBAL binlog_format = 'ROW'")
        source.execute(f"CREATE USER '{BENCH_USER}'@'%' IDENTIFIED BY '{BENCH_PASSWORD}'")
        source.execute(f"GRANT ALL ON *.* TO '{BENCH_USER}'@'%'")
        source.load_demo_data(size_mb)
        return source

    def add_postgres(self, size_mb: float) -> PostgresSandbox:
        source = self._named(lambda root, server_id: PostgresSandbox(root))
        source.start()
        source.load_demo_data(size_mb)
        return source

    def config(self, sources: list) -> Config:
        path = self.root / f"catchup-{len(sources)}.toml"
        path.write_text(
            demo_config(self.root, sources, len(sources), repository=str(self.root / "repo"))
        )
        config = parse_config(tomllib.loads(path.read_text()), str(path))
        # demo_config names shards by position: give each source its own name.
        shards = [
            shard.model_copy(update={"shard": self.names[id(source)]})
            for shard, source in zip(config.shards, sources, strict=True)
        ]
        return config.model_copy(update={"shards": shards})

    def backup(self, sources: list) -> list[ShardResult]:
        config = self.config(sources)
        results = backup_fleet(
            config,
            config.shards,
            open_repository(config),
            CycleOptions(),
            LogReporter(),
            CancelToken(),
            parallel=len(sources),
        )
        failed = [r.error for r in results if not r.ok]
        if failed:
            raise RuntimeError(f"catchup failed: {failed}")
        return results

    def stop(self) -> None:
        for source in self.sources:
            try:
                source.stop()
            except Exception:
                source.kill()
        self.sources.clear()


def server_pid(source: MariaDBSandbox | PostgresSandbox) -> int:
    assert source.server.process is not None
    return source.server.process.pid


def catchup_cycle(bench: Bench, source: MariaDBSandbox | PostgresSandbox, name: str) -> Cost:
    with metered(server_pid(source)) as (meter, clock):
        [result] = bench.backup([source])
    return Cost(
        name,
        result.bytes_from_source,
        meter.cpu_seconds,
        meter.read_bytes,
        clock["wall"],
        result.stored_bytes,
        {"catch_up_seconds": result.durations.get("catch up", 0.0), "cycle": result.seconds},
    )


# --- the workload -------------------------------------------------------------------------


def binlog_bytes(source: MariaDBSandbox) -> int:
    with source.connect() as conn, conn.cursor() as cursor:
        cursor.execute("SHOW BINARY LOGS")
        return sum(int(row[1]) for row in cursor.fetchall())


def change_rows(source: MariaDBSandbox, fraction: float, round_: int) -> dict[str, float]:
    """Change `fraction` of every large table's rows: OLTP-style, CLIENTS connections
    each committing TXN_ROWS-row transactions."""
    ranges = []  # (table, key, assignment, first key, last key) of each transaction
    with source.connect() as conn, conn.cursor() as cursor:
        cursor.execute(f"USE {DATABASE}")
        for table, key, per_key, assignment in CHANGES:
            cursor.execute(f"SELECT MIN({key}), MAX({key}) FROM {table}")
            low, high = cursor.fetchone()
            keys = high - low + 1
            todo = max(1, int(keys * fraction))  # keys; a key holds `per_key` rows
            start = low + (round_ * 7919) % keys
            step = max(1, TXN_ROWS // per_key)
            for offset in range(0, todo, step):
                first = low + (start - low + offset) % keys
                last = min(first + min(step, todo - offset) - 1, high)
                ranges.append((table, key, assignment.format(round=round_), first, last))

    def client(mine: list[tuple[str, str, str, int, int]]) -> int:
        changed = 0
        with source.connect() as conn, conn.cursor() as cursor:
            cursor.execute(f"USE {DATABASE}")
            for table, key, assignment, first, last in mine:
                cursor.execute(
                    f"UPDATE {table} SET {assignment} WHERE {key} BETWEEN %s AND %s",
                    (first, last),
                )
                changed += cursor.rowcount
                conn.commit()
        return changed

    before = binlog_bytes(source)
    started = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        changed = sum(pool.map(client, [ranges[i::CLIENTS] for i in range(CLIENTS)]))
    seconds = time.monotonic() - started
    delta = binlog_bytes(source) - before
    settle(source)
    return {"rows": changed, "seconds": seconds, "binlog_bytes": delta, "rate": delta / seconds}


def settle(source: MariaDBSandbox, timeout: float = 600) -> None:
    """Wait until InnoDB has purged and flushed the workload, so its background
    I/O is not counted against the next backup."""
    source.execute("SET GLOBAL innodb_max_dirty_pages_pct = 0")
    deadline = time.monotonic() + timeout
    try:
        with source.connect() as conn, conn.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'")
                dirty = int(cursor.fetchone()[1])
                cursor.execute("SHOW ENGINE INNODB STATUS")
                status = cursor.fetchone()[2]
                history = int(status.split("History list length", 1)[1].split()[0])
                if dirty == 0 and history < 100:
                    return
                time.sleep(0.5)
    finally:
        source.execute("SET GLOBAL innodb_max_dirty_pages_pct = 90")


# --- the full-backup tools ---------------------------------------------------------------


def client_config(bench: Bench) -> Path:
    path = bench.root / "bench-client.cnf"
    write_private(
        path,
        f"[client]\nuser={BENCH_USER}\npassword={BENCH_PASSWORD}\n"
        f"[mydumper]\nuser={BENCH_USER}\npassword={BENCH_PASSWORD}\n",
    )
    return path


def relayed_tool(source: MariaDBSandbox, name: str, command: Callable[[int], str]) -> Cost:
    """A tool that pulls everything over the network, through a counting relay."""
    with (
        CountingRelay("127.0.0.1", source.port, None) as relay,
        metered(server_pid(source)) as (meter, clock),
    ):
        output = command(relay.port)
    return Cost(
        name,
        relay.bytes_from_source,
        meter.cpu_seconds,
        meter.read_bytes,
        clock["wall"],
        dir_bytes(Path(output)) if Path(output).is_dir() else Path(output).stat().st_size,
    )


def mariadb_dump(bench: Bench, source: MariaDBSandbox) -> Cost:
    out = bench.root / "dump.sql.zst"
    cnf = client_config(bench)

    def run(port: int) -> str:
        shell(
            f"mariadb-dump --defaults-extra-file={cnf} -h 127.0.0.1 -P {port} "
            "--single-transaction --all-databases --routines --events --triggers "
            f"| zstd -1 -T0 -q > {out}"
        )
        return str(out)

    return relayed_tool(source, "mariadb-dump --single-transaction | zstd -1", run)


def mydumper(bench: Bench, source: MariaDBSandbox) -> Cost:
    out = bench.root / "mydumper"
    shutil.rmtree(out, ignore_errors=True)
    cnf = client_config(bench)

    def run(port: int) -> str:
        shell(
            f"mydumper --defaults-file={cnf} -h 127.0.0.1 -P {port} -t 2 -c "
            f"--trx-consistency-only -o {out}"
        )
        return str(out)

    return relayed_tool(source, "mydumper -t 2 -c", run)


def mariadb_backup(bench: Bench, source: MariaDBSandbox) -> Cost:
    """Run on the source host: its own CPU and reads count as the source's."""
    out = bench.root / "backup.xb.zst"
    scratch = bench.root / "xb-tmp"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    cnf = client_config(bench)
    cpu_before, read_before = children_usage()
    with metered(server_pid(source)) as (meter, clock):
        shell(
            f"mariadb-backup --defaults-extra-file={cnf} --socket={source.server.files.socket} "
            f"--backup --stream=xbstream --target-dir={scratch} | zstd -1 -T0 -q > {out}"
        )
    cpu_after, read_after = children_usage()
    size = out.stat().st_size
    return Cost(
        "mariadb-backup --stream | zstd -1 (on the source host)",
        size,  # to be a backup, the stream must leave the host
        meter.cpu_seconds + cpu_after - cpu_before,
        meter.read_bytes + read_after - read_before,
        clock["wall"],
        size,
        {"tool_cpu_seconds": cpu_after - cpu_before},
    )


def pg_basebackup(bench: Bench, source: PostgresSandbox) -> Cost:
    out = bench.root / "basebackup"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(mode=0o700)
    shutil.chown(out, "postgres", "postgres")  # the client runs as postgres when we are root
    password = source.password_file.read_text().strip()

    def run(port: int) -> str:
        command = [
            *source.server.tool("pg_basebackup"),
            "-h", "127.0.0.1", "-p", str(port), "-U", "catchup",
            "-D", str(out), "-X", "stream", "-c", "fast", "--no-sync",
        ]  # fmt: skip
        subprocess.run(
            command, check=True, env={**os.environ, "PGPASSWORD": password}, capture_output=True
        )
        return str(out)

    return relayed_tool(source, "pg_basebackup -X stream", run)  # type: ignore[arg-type]


# --- scenarios ------------------------------------------------------------------------------


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


# --- report -----------------------------------------------------------------------------------


def say(text: str) -> None:
    print(f"» {text}", file=sys.stderr, flush=True)


def headline(r: dict) -> dict:
    steady = {c["extra"]["fraction"]: c for c in r["main"]["steady"]}
    one = steady.get(0.01) or next(iter(steady.values()))
    dump = next(c for c in r["main"]["full"] if c["method"].startswith("mariadb-dump"))
    parallel = {row["shards"]: row for row in r["parallel"]["rows"]}
    top = parallel[max(parallel)]
    return {
        "bytes_ratio_vs_binlog": round(one["extra"]["bytes_vs_binlog"], 3),
        "cpu_ratio_vs_dump": round(one["source_cpu_seconds"] / dump["source_cpu_seconds"], 4),
        "zero_delta_seconds": round(r["zero_delta"]["seconds"], 2),
        "apply_rate_ratio": round(one["extra"]["apply_rate_ratio"], 2),
        f"parallel{top['shards']}_speedup": round(top["speedup"], 2),
        "parallel8_speedup": round(parallel.get(8, top)["speedup"], 2),
    }


def plot(r: dict) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steady = r["main"]["steady"]
    fractions = [c["extra"]["fraction"] * 100 for c in steady]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in (
        (axes[0], "source_bytes", "bytes the source sent"),
        (axes[1], "source_cpu_seconds", "source CPU seconds"),
    ):
        ax.plot(fractions, [c[key] for c in steady], "o-", lw=2.5, label="catchup cycle")
        flat = [r["main"]["bootstrap"], *r["main"]["full"]]
        for cost in flat:
            ax.plot(fractions, [cost[key]] * len(fractions), "--", label=cost["method"])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("rows changed since the last backup (%)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7, loc="center right")
    size = r["main"]["data_bytes"] / (1 << 30)
    fig.suptitle(f"What one backup costs a {size:.1f} GiB MariaDB source")
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / "source-impact.png"
    fig.savefig(path, dpi=110)
    return path


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def cost_rows(costs: list[dict], reference: dict) -> list[str]:
    rows = []
    for c in costs:
        ratio_bytes = c["source_bytes"] / max(1, reference["source_bytes"])
        ratio_cpu = c["source_cpu_seconds"] / max(1e-9, reference["source_cpu_seconds"])
        rows.append(
            f"| {c['method']} | {fmt_bytes(c['source_bytes'])} | {c['source_cpu_seconds']:.2f} "
            f"| {fmt_bytes(c['source_read_bytes'])} | {c['wall_seconds']:.1f} "
            f"| {fmt_bytes(c['backup_bytes'])} | {ratio_bytes:,.1f} | {ratio_cpu:,.1f} |"
        )
    return rows


HEADER = [
    "| method | source sent | source CPU s | source disk reads | wall s | backup size "
    "| bytes ÷ catchup | CPU ÷ catchup |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
]


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    met = value >= target if higher_is_better else value <= target
    return "met" if met else "**missed**"


def report_markdown(r: dict, h: dict) -> str:
    main = r["main"]
    steady = main["steady"]
    one = next((c for c in steady if c["extra"]["fraction"] == 0.01), steady[0])
    lines = [
        f"## Source impact (`bench/source_impact.py`, {r['date']})",
        "",
        f"Machine: {r['machine']}. Source: one sandbox {main['server_version']} primary, "
        f"{fmt_bytes(main['data_bytes'])} of tables (the demo schema), ROW binlogs, "
        f"`slave_compressed_protocol` on the ephemeral replica. Page caches dropped before "
        "each measurement; the source's CPU and disk reads are sampled from /proc for its "
        "process tree. Bytes sent are counted by a relay between the source and the client.",
        "",
        "### Every method at 1 % of rows changed",
        "",
        *HEADER,
        *cost_rows([one, main["bootstrap"], *main["full"]], one),
        "",
        "The full-backup tools were measured once: what they cost does not depend on how "
        "much changed. mariadb-backup runs on the source host, so its own CPU and reads "
        "count, and its compressed stream is what must leave the host.",
        "",
        "### catchup's steady state by changed fraction",
        "",
        "| rows changed | binlog of the delta | source sent | sent ÷ binlog | source CPU s "
        "| CPU ÷ dump | catch-up apply rate ÷ write rate | cycle s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    dump = next(c for c in main["full"] if c["method"].startswith("mariadb-dump"))
    for c in steady:
        e = c["extra"]
        cpu_vs_dump = c["source_cpu_seconds"] / dump["source_cpu_seconds"]
        lines.append(
            f"| {e['fraction']:.1%} ({e['rows_changed']:,.0f} rows) "
            f"| {fmt_bytes(e['binlog_bytes'])} | {fmt_bytes(c['source_bytes'])} "
            f"| {e['bytes_vs_binlog']:.2f} | {c['source_cpu_seconds']:.2f} | {cpu_vs_dump:.1%} "
            f"| {e['apply_rate_ratio']:.1f} | {e['cycle']:.1f} |"
        )
    z = r["zero_delta"]
    lines += [
        "",
        "![Source bytes and CPU per backup vs changed fraction](img/source-impact.png)",
        "",
        f"Zero-delta cycle on a {z['size_mb']:g} MB shard ({fmt_bytes(z['data_bytes'])} data "
        f"dir): median {z['seconds']:.1f} s of {len(z['all_seconds'])} "
        f"({', '.join(f'{s:.1f}' for s in z['all_seconds'])}), "
        f"{fmt_bytes(z['bytes_from_source'])} from the source. Steps: "
        + ", ".join(f"{k} {v:.2f}" for k, v in z["durations"].items())
        + ".",
        "",
        f"### Shards at once ({r['parallel']['size_mb']:g} MB each, 1 % changed)",
        "",
        "| shards | wall s | per-shard s | aggregate MiB/s of backups | speedup vs 1 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in r["parallel"]["rows"]:
        lines.append(
            f"| {row['shards']} | {row['wall_seconds']:.1f} | {row['per_shard_seconds']:.1f} "
            f"| {row['throughput_mib_s']:.1f} | {row['speedup']:.2f} |"
        )
    if r.get("postgres"):
        pg = r["postgres"]
        steady_pg = pg["costs"][1]
        lines += [
            "",
            f"### PostgreSQL ({pg['size_mb']:g} MB of pgbench data, `wal_compression=zstd`)",
            "",
            *HEADER,
            *cost_rows(pg["costs"], steady_pg),
        ]
    lines += [
        "",
        "### Targets",
        "",
        "| target | measured | |",
        "| --- | --- | --- |",
        f"| bytes sent per steady cycle ≤ 0.8 x binlog of the delta (1 %) "
        f"| {h['bytes_ratio_vs_binlog']:.2f} | {verdict(h['bytes_ratio_vs_binlog'], 0.8, False)} |",
        f"| source CPU per catch-up ≤ 5 % of a full mariadb-dump's (1 %) "
        f"| {h['cpu_ratio_vs_dump']:.1%} | {verdict(h['cpu_ratio_vs_dump'], 0.05, False)} |",
        f"| zero-delta cycle on a 200 MB shard ≤ 10 s | {h['zero_delta_seconds']:.1f} s "
        f"| {verdict(h['zero_delta_seconds'], 10, False)} |",
        f"| catch-up apply rate ≥ 3 x the workload's write rate (1 %) "
        f"| {h['apply_rate_ratio']:.1f} | {verdict(h['apply_rate_ratio'], 3, True)} |",
        f"| 8 shards at once ≥ 1.6 x one shard's throughput | {h['parallel8_speedup']:.2f} "
        f"| {verdict(h['parallel8_speedup'], 1.6, True)} |",
    ]
    return "\n".join(lines) + "\n"


def write_report(section: str) -> None:
    text = DOC.read_text()
    block = f"{BEGIN}\n{section}{END}"
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text)


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
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, "
            f"Python {platform.python_version()}",
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
        write_report(report_markdown(results, figures))
    if args.json:
        print(json.dumps(figures))
    else:
        print(report_markdown(results, figures))


if __name__ == "__main__":
    main()
