"""The log-archive contract, on every engine of tests/integration/engines.py: a real
`catchup archive` process streams a real source into the repository; point-in-time
restores to moments of a mixed workload equal the source's state then, across a
kill -9 of the archiver; damage to the archive is refused by name; a second
archiver is refused; a source that purged its log is caught up from the archive."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest

from catchup.cancel import CancelToken
from catchup.demo.sandbox import Sandbox
from catchup.engines import LogTarget
from catchup.engines.registry import engine_for
from catchup.pitr import check_instance, replay_to
from tests.conftest import REPO, run_cli
from tests.integration.conftest import Fleet
from tests.integration.engines import EngineCase
from tests.integration.test_engine_contract import add_source

ARCHIVE = "\n[archive]\nflush_seconds = 0.5\n"
QUIET = 1.1  # MariaDB's binlog stamps whole seconds: keep moments clear of the writes


def archived_source(fleet: Fleet, engine: EngineCase) -> Sandbox:
    source = add_source(fleet, engine)
    fleet.write_config(tables=ARCHIVE)
    [first] = fleet.backup()
    assert first.ok, first.error
    return source


@contextmanager
def archiver(fleet: Fleet, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """`catchup archive` on the fleet's one shard, as its own process."""
    shard = fleet.config.shards[0].name
    log = fleet.root / f"archiver-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "catchup",
                "archive",
                shard,
                *extra,
                "-c",
                str(fleet.config_path),
            ],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def archive_end(fleet: Fleet) -> str | None:
    shard = fleet.config.shards[0]
    end = fleet.repository.archive_index(shard.keyspace, shard.shard).end
    return end.position if end else None


def wait_archived(fleet: Fleet, source: Sandbox, timeout: float = 60) -> None:
    """Until the archive holds everything the source has written."""
    engine = engine_for(fleet.config.shards[0].engine)
    target = engine.parse_position(source.position())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        end = archive_end(fleet)
        order = engine.compare_positions(end, target) if end else None
        if order is not None and order >= 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"the archive did not reach {target} in {timeout} s (at {end})")


def kill_hard(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_restores_to_moments_of_a_workload_across_an_archiver_kill(fleet, engine):
    source = archived_source(fleet, engine)
    rng = random.Random(20261203)
    moments: list[tuple[datetime, str, dict[str, int | None]]] = []
    parse = engine_for(engine.name).parse_position
    process_context = archiver(fleet)
    process = process_context.__enter__()
    try:
        for step in range(5):
            source.apply_workload(rng.uniform(0.002, 0.01))
            if step == 2:  # mid-stream, possibly mid-file: the next run resumes exactly
                time.sleep(0.3)
                kill_hard(process)
                process_context.__exit__(None, None, None)
                source.apply_workload(0.003)  # written while no archiver runs
                process_context = archiver(fleet)
                process = process_context.__enter__()
            time.sleep(QUIET)
            moments.append((datetime.now(UTC), parse(source.position()), source.checksums()))
            time.sleep(QUIET)
        # A time is restorable once the archive holds a commit after it: the archive cannot
        # know what the source committed after its newest transaction.
        source.apply_workload(0.002)
        wait_archived(fleet, source)
    finally:
        process_context.__exit__(None, None, None)

    config = fleet.config
    shard = config.shards[0]
    for index, (when, position, expected) in enumerate(moments):
        target = LogTarget(time=when) if index % 2 == 0 else LogTarget(position=position)
        result = replay_to(
            config, shard, fleet.repository, target, CancelToken(), check_instance(True)
        )
        assert all(f.ok for f in result.findings), result.findings
        assert result.checksums == expected, f"moment {index} ({target.describe()})"
    index = fleet.repository.archive_index(shard.keyspace, shard.shard)
    assert not index.problems and not index.gaps(), (index.problems, index.gaps())
    assert len({r.session for r in index.records}) >= 2, "the kill started a second session"
    assert not fleet.instance_dirs()


def test_restore_cli_refuses_targets_outside_the_window_and_names_it(fleet, engine):
    source = archived_source(fleet, engine)
    with archiver(fleet):
        source.apply_workload(0.005)
        wait_archived(fleet, source)
    shard = fleet.config.shards[0].name
    listed = json.loads(run_cli("list", shard, "--json", "-c", str(fleet.config_path)).stdout)
    window = listed[-1]["pitr_window"]
    assert window and window["to_position"], listed
    for when in ("2001-01-01T00:00:00Z", "2999-01-01T00:00:00Z"):
        refused = run_cli(
            "restore", shard, "--to-time", when, "--target-dir", str(fleet.root / "r"),
            "-c", str(fleet.config_path),
        )  # fmt: skip
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "Restorable:" in refused.stderr or "oldest backup" in refused.stderr
        assert not (fleet.root / "r").exists()
    restored = run_cli(
        "restore", shard, "--to-position", window["to_position"], "--target-dir",
        str(fleet.root / "r"), "--json", "-c", str(fleet.config_path),
    )  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["position"]
    assert any((fleet.root / "r").iterdir())


@pytest.mark.parametrize("damage", ["altered", "deleted", "swapped"])
def test_damage_to_the_archive_is_refused_by_name(fleet, engine, damage):
    source = archived_source(fleet, engine)
    with archiver(fleet):
        for _ in range(8):  # the first ones may land in one piece, before the stream runs
            source.apply_workload(0.002)
            time.sleep(1.0)
        wait_archived(fleet, source)
    shard = fleet.config.shards[0]
    records = sorted(
        (fleet.root / "repository" / shard.keyspace / shard.shard / "archive" / "index").iterdir()
    )
    assert len(records) >= 3, records
    victim = records[len(records) // 2]
    if damage == "altered":
        document = json.loads(victim.read_bytes())
        [record] = document["index"]["records"]
        record["size"] += 1  # (a position may legitimately not move within one piece)
        victim.write_text(json.dumps(document))
    elif damage == "deleted":
        victim.unlink()
    else:
        other = records[len(records) // 2 + 1]
        a, b = victim.read_bytes(), other.read_bytes()
        victim.write_bytes(b)
        other.write_bytes(a)
    index = fleet.repository.archive_index(shard.keyspace, shard.shard)
    assert index.problems, "the damage went unnoticed"
    assert any(
        victim.stem in problem or str(int(victim.stem)) in problem for problem in index.problems
    )
    # A restore to the end must cross the damage: refused, naming it.
    end = index.records[-1].end.position
    refused = run_cli(
        "restore", shard.name, "--to-position", end, "--target-dir", str(fleet.root / "r"),
        "-c", str(fleet.config_path),
    )  # fmt: skip
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert not (fleet.root / "r").exists()


def test_a_second_archiver_of_a_shard_is_refused(fleet, engine):
    archived_source(fleet, engine)
    with archiver(fleet) as first:
        deadline = time.monotonic() + 30
        while archive_end(fleet) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        second = run_cli(
            "archive", fleet.config.shards[0].name, "--once", "-c", str(fleet.config_path)
        )
        assert second.returncode == 3, second.stdout + second.stderr
        assert "is being archived" in second.stdout + second.stderr
        assert first.poll() is None


def test_a_source_that_purged_its_log_is_caught_up_from_the_archive(fleet, engine):
    source = archived_source(fleet, engine)
    [first] = fleet.backup()  # a catch-up, so the chain is archived from here on
    with archiver(fleet):
        source.apply_workload(0.01)
        wait_archived(fleet, source)
        engine.lose_log(source, first)
        source.apply_workload(0.002)
        wait_archived(fleet, source)
        [second] = fleet.backup()
    assert second.ok and second.kind == "catchup", (second.kind, second.error)
    assert second.parent == first.backup_id
    assert "restore log" in second.durations
    from catchup.demo.run import prove_equal

    proof = prove_equal(
        fleet.config, fleet.repository, fleet.config.shards[0], source, CancelToken()
    )
    assert proof is not None and proof.checksums_equal and proof.report.ok
