"""`catchup demo` end to end, as `make demo` runs it (smaller)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import httpx

from tests.conftest import REPO, run_cli
from tests.integration.conftest import mariadbd_processes_under


def test_demo_backs_up_twice_and_proves_the_restore_equal(short_tmp):
    directory = short_tmp / "demo"
    result = run_cli("demo", "--shards", "2", "--size", "4", "--json", "--dir", str(directory))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(result.stdout)
    cycles, verdict = rows[:-1], rows[-1]
    assert verdict["verified"] is True
    assert verdict["pitr_verified"] is True, verdict["pitr_checks"]
    [pitr] = verdict["pitr_checks"]
    assert pitr["checksums_equal"] and pitr["backup_id"] and pitr["to_time"]
    assert all(isinstance(r["rpo_seconds"], float) and r["rpo_seconds"] <= 15 for r in rows[:-1])
    [check] = verdict["checks"]
    assert check["checksums_equal"] and check["position_equal"]
    assert check["tables_compared"] == 6
    assert len(cycles) == 4
    for row in cycles:
        assert {"shard", "kind", "bytes_from_source", "data_bytes", "seconds"} <= row.keys()
        assert row["ok"], row["error"]
    full = {r["shard"]: r["bytes_from_source"] for r in cycles if r["kind"] == "bootstrap"}
    for row in (r for r in cycles if r["kind"] == "catchup"):
        assert row["bytes_from_source"] < full[row["shard"]] / 2
    assert not mariadbd_processes_under(directory), "without --keep the fleet is stopped"


def test_mixed_demo_proves_one_shard_of_each_engine(short_tmp):
    directory = short_tmp / "mixed"
    result = run_cli(
        "demo",
        "--engine",
        "mixed",
        "--shards",
        "3",  # MariaDB, PostgreSQL, MySQL
        "--size",
        "15",
        "--json",
        "--dir",
        str(directory),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(result.stdout)
    verdict = rows[-1]
    shards = {"commerce/0", "commerce/1", "commerce/2"}
    assert verdict["verified"] is True
    assert {c["shard"] for c in verdict["checks"]} == shards
    assert verdict["pitr_verified"] is True, verdict["pitr_checks"]
    assert {c["shard"] for c in verdict["pitr_checks"]} == shards
    assert all(isinstance(r["rpo_seconds"], float) and r["rpo_seconds"] <= 15 for r in rows[:-1])
    for row in rows[:-1]:
        assert row["ok"], row["error"]
    pg_catchup = [r for r in rows[:-1] if r["shard"] == "commerce/1" and r["kind"] == "catchup"]
    assert pg_catchup and pg_catchup[0]["bytes_from_source"] > 0
    # MySQL's catch-up pulls a fraction of its bootstrap (a CLONE of the source).
    full = {r["shard"]: r["bytes_from_source"] for r in rows[:-1] if r["kind"] == "bootstrap"}
    [mysql_catchup] = [
        r for r in rows[:-1] if r["shard"] == "commerce/2" and r["kind"] == "catchup"
    ]
    assert 0 < mysql_catchup["bytes_from_source"] < full["commerce/2"] / 2
    # Every engine's second backup is a full backup that stores only the chunks that changed.
    stored = {r["shard"]: r["stored_bytes"] for r in rows[:-1] if r["kind"] == "bootstrap"}
    for row in (r for r in rows[:-1] if r["kind"] == "catchup"):
        assert row["stored_bytes"] > stored[row["shard"]] / 2, row  # what a restore reads
        assert row["new_stored_bytes"] < row["stored_bytes"] * 0.8, row  # what it added
    config = (directory / "catchup.toml").read_text()
    assert [line for line in config.splitlines() if line.startswith("engine")] == [
        'engine = "mariadb"',
        'engine = "postgres"',
        'engine = "mysql"',
    ]


def test_demo_serve_runs_the_daemon_over_the_fleet_and_prints_its_url(short_tmp):
    directory = short_tmp / "demo"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "catchup",
            "demo",
            "--serve",
            "--shards",
            "2",
            "--size",
            "2",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    try:
        url = None
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("catchup daemon listening on "):
                url = line.split()[-1]
                break
        assert url, "no URL printed"
        token = (directory / "api-token").read_text().strip()
        assert oct((directory / "api-token").stat().st_mode & 0o777) == "0o600"
        shards = httpx.get(f"{url}api/shards", headers={"Authorization": f"Bearer {token}"})
        assert [s["freshness"] for s in shards.json()] == ["fresh", "fresh"]
        assert all(s["next_due_at"] for s in shards.json())
        assert httpx.get(url).status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not mariadbd_processes_under(directory), "the fleet stops with the daemon"
