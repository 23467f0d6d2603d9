"""`catchup demo` end to end, as `make demo` runs it (smaller)."""

from __future__ import annotations

import json

from tests.conftest import run_cli
from tests.integration.conftest import mariadbd_processes_under


def test_demo_backs_up_twice_and_proves_the_restore_equal(short_tmp):
    directory = short_tmp / "demo"
    result = run_cli("demo", "--shards", "2", "--size", "4", "--json", "--dir", str(directory))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(result.stdout)
    cycles, verdict = rows[:-1], rows[-1]
    assert verdict["verified"] is True
    assert verdict["checksums_equal"] and verdict["position_equal"]
    assert verdict["tables_compared"] == 6
    assert len(cycles) == 4
    for row in cycles:
        assert {"shard", "kind", "bytes_from_source", "data_bytes", "seconds"} <= row.keys()
        assert row["ok"], row["error"]
    full = {r["shard"]: r["bytes_from_source"] for r in cycles if r["kind"] == "bootstrap"}
    for row in (r for r in cycles if r["kind"] == "catchup"):
        assert row["bytes_from_source"] < full[row["shard"]] / 2
    assert not mariadbd_processes_under(directory), "without --keep the fleet is stopped"
