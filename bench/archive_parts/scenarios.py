"""The scenarios of one engine's run, in the order they share a source:
source CPU with an idle replica, then with nothing, then the archiver's (with its
lag at the default flush), the lag at flush_seconds = 1, the source bytes of a
cycle with and without an archiver, and the point-in-time restores."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from archive_parts.manual import manual_restore
from archive_parts.rig import (
    Rig,
    Source,
    Writer,
    make_replica,
    make_source,
    server_pid,
    writing,
)
from benchlib import say
from catchup.demo.mariadb import MariaDBSandbox
from impact.measure import SourceMeter
from impact.workload import binlog_bytes

QUIET = 1.2  # seconds without writes either side of the restore target (binlog: whole s)


def log_bytes(source: Source) -> int:
    """How far the source's log has grown: binlog sizes, or the WAL insert LSN."""
    if isinstance(source, MariaDBSandbox):
        return binlog_bytes(source)
    with source.server.connect() as conn:
        row = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def lag_summary(lags: list[float], unarchived: int) -> dict[str, Any]:
    return {
        "markers": len(lags) + unarchived,
        "unarchived": unarchived,
        "p50": percentile(lags, 50),
        "p99": percentile(lags, 99),
        "max": max(lags) if lags else float("nan"),
        "mean": statistics.fmean(lags) if lags else float("nan"),
    }


def metered_window(source: Source, seconds: float, rate: float, **watch: Any) -> dict[str, Any]:
    with writing(source, rate, **watch) as writer:
        with SourceMeter(server_pid(source)) as meter:
            time.sleep(seconds)
        senders = sender_cpu(meter)  # while the streams still run
    result: dict[str, Any] = {
        "cpu_seconds": meter.cpu_seconds,
        "sender_cpu_seconds": senders,
        "commits": writer.commits,
        "seconds": seconds,
    }
    if watch:
        lags = [m.lag for m in writer.markers if m.lag is not None]
        start = writer.markers[0].committed if writer.markers else 0.0
        result["lag"] = lag_summary(lags, len(writer.markers) - len(lags))
        result["series"] = [
            (round(m.committed - start, 2), round(m.lag, 3))
            for m in writer.markers
            if m.lag is not None
        ]
    return result


def sender_cpu(meter: SourceMeter) -> float:
    """CPU seconds of PostgreSQL's walsender processes in the window: a stream's own
    cost, free of the baseline's noise (MariaDB's dump threads are not processes)."""
    total = 0.0
    for pid, (cpu, _) in meter.last.items():
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"walsender" in title:
            total += cpu - meter.first[pid][0]
    return total


def run_engine(engine: str, root: Path, args: Any) -> dict[str, Any]:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    root.chmod(0o755)  # PostgreSQL sandboxes run as the postgres OS user
    say(f"{engine}: a {args.size_mb:g} MB source")
    source = make_source(engine, root, args.size_mb)
    extra: list[Source] = []
    out: dict[str, Any] = {"engine": engine, "size_mb": args.size_mb, "rate": args.rate}
    try:
        replica = make_replica(source, root)
        extra.append(replica)
        rig = Rig(root, source)
        Writer(source).prepare()
        say(f"{engine}: source CPU over {args.window:g} s with an idle replica streaming")
        out["cpu_replica"] = metered_window(source, args.window, args.rate)
        replica.wait_replicated()
        replica.stop()
        extra.clear()
        say(f"{engine}: source CPU over {args.window:g} s with nothing streaming")
        out["cpu_none"] = metered_window(source, args.window, args.rate)
        say(f"{engine}: the first backup")
        out["bootstrap"] = rig.backup().seconds
        say(f"{engine}: the archiver at defaults (flush 5 s) for {args.window:g} s")
        with rig.archiving(5.0) as pool:
            out["cpu_archiver"] = metered_window(source, args.window, args.rate, rig=rig, pool=pool)
        say(f"{engine}: the archiver at flush 1 s for {args.ref_window:g} s")
        with rig.archiving(1.0) as pool:
            out["lag_flush1"] = metered_window(
                source, args.ref_window, args.rate, rig=rig, pool=pool
            )
        out |= catch_up_and_restore(rig, args)
    finally:
        for server in [*extra, source]:
            try:
                server.stop()
            except Exception:
                server.kill()
    return out


def catch_up_and_restore(rig: Rig, args: Any) -> dict[str, Any]:
    source, engine = rig.source, rig.source.engine
    out: dict[str, Any] = {}
    first = rig.repository.latest(rig.shard.keyspace, rig.shard.shard)
    assert first is not None and first.backup_id is not None
    with rig.archiving(5.0):
        # A restore target after the windows' writes (thousands of small transactions
        # since the first backup), before the next backup.
        early = quiet_moment(source)
        # The parent of the measured cycle, so its delta is exactly the workload's.
        parent = rig.backup()
        assert parent.backup_id is not None
        say(f"{engine}: a {args.fraction:.1%} delta with the archiver running, then a cycle")
        before = log_bytes(source)
        source.apply_workload(args.fraction)
        target = quiet_moment(source)
        delta = log_bytes(source) - before
        with writing(source, args.rate):
            time.sleep(2)  # something committed after the target, so the archive passes it
        result = rig.backup()
        out["with_archiver"] = {
            "delta_log_bytes": delta,
            "bytes_from_source": result.bytes_from_source,
            "seconds": result.seconds,
            "durations": result.durations,
        }
    say(f"{engine}: the same delta with no archiver, then a cycle")
    before = log_bytes(source)
    source.apply_workload(args.fraction)
    delta = log_bytes(source) - before
    result = rig.backup()
    out["without_archiver"] = {
        "delta_log_bytes": delta,
        "bytes_from_source": result.bytes_from_source,
        "seconds": result.seconds,
        "durations": result.durations,
    }
    out["pitrs"] = [
        restores(rig, *early, first.backup_id, "the windows' small transactions"),
        restores(rig, *target, parent.backup_id, f"the {args.fraction:.0%} delta"),
    ]
    return out


def quiet_moment(source: Source) -> tuple[datetime, dict[str, Any]]:
    """Now, between two spells without writes, and the source's checksums then."""
    time.sleep(QUIET)
    moment = datetime.now(UTC)
    checksums = source.checksums()
    time.sleep(QUIET)
    return moment, checksums


def restores(
    rig: Rig, target: datetime, expected: dict, backup_id: str, label: str
) -> dict[str, Any]:
    engine = rig.source.engine
    stamp = target.isoformat().replace("+00:00", "Z")
    say(f"{engine}: catchup restore --to-time {stamp}")
    into = rig.root / "pitr-catchup"
    catchup = Path(sys.executable).with_name("catchup")
    started = time.monotonic()
    done = subprocess.run(
        [
            str(catchup),
            "restore",
            rig.shard.name,
            "--to-time",
            stamp,
            "--target-dir",
            str(into),
            "--config",
            str(rig.config_path),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    out: dict[str, Any] = {"target": stamp, "label": label, "base": backup_id}
    if done.returncode != 0:
        out["catchup"] = {"error": done.stderr.strip()[-500:]}
    else:
        report = json.loads(done.stdout)
        out["catchup"] = {
            "seconds": seconds,
            "backup_id": report["backup_id"],
            "log_files": report["log_files"],
            "log_bytes": report["log_bytes"],
        }
    shutil.rmtree(into, ignore_errors=True)
    say(f"{engine}: the manual way (restore the backup, start a server, replay the log)")
    try:
        out["manual"] = manual_restore(rig, backup_id, target, expected)
    except Exception as exc:  # reported as measured: the run goes on
        out["manual"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    return out
