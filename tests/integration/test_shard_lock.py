"""One shard lock across hosts, with real sandbox MariaDB sources, on a local
repository and on S3 (moto). "Another host" is a second config with its own
`work_dir`: it shares nothing with the first but the repository."""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from catchup.cycle import LogReporter
from catchup.fleet.lease import Holder, Record
from catchup.fleet.run import ShardResult
from tests.conftest import run_cli
from tests.integration.stores import CREDENTIALS, make_bucket
from tests.integration.test_s3_repository import s3_config

pytestmark = pytest.mark.integration


class Pause(LogReporter):
    """Holds the cycle at `at` ("back up": mid-upload, in the thread reading a file;
    any other step: when it begins) until `resume` is set."""

    def __init__(self, at: str) -> None:
        self.at, self.step_now = at, ""
        self.paused, self.resume = threading.Event(), threading.Event()

    def step(self, shard: str, step: str) -> None:
        super().step(shard, step)
        self.step_now = step
        if step == self.at != "back up":
            self.hold()

    def progress(self, shard: str, done: int, total: int) -> None:
        if self.step_now == self.at == "back up" and 0 < done < total:
            self.hold()

    def hold(self) -> None:
        if not self.paused.is_set():
            self.paused.set()
            assert self.resume.wait(120), "the test never resumed the cycle"


def start_paused_backup(fleet, at: str) -> tuple[Pause, Callable[[], ShardResult]]:
    pause = Pause(at)
    results: list[ShardResult] = []
    thread = threading.Thread(target=lambda: results.extend(fleet.backup(reporter=pause)))
    thread.start()
    assert pause.paused.wait(120), f"the cycle never reached {at}"

    def finish() -> ShardResult:
        pause.resume.set()
        thread.join(120)
        [result] = results
        return result

    return pause, finish


def other_host(fleet, retention: str = "") -> Path:
    """The same fleet and repository as seen from another host: its own work dir."""
    text = fleet.config_path.read_text()
    text = text.replace(f'work_dir = "{fleet.root / "work"}"', f'work_dir = "{fleet.root / "b"}"')
    text = text.replace("[retention]\n", f"[retention]\n{retention}")
    path = fleet.root / "host-b.toml"
    path.write_text(text)
    return path


@pytest.fixture(params=["local", "s3"])
def repository_kind(request, fleet, monkeypatch) -> str:
    """Writes the fleet's config for a local repository or a fresh moto bucket."""
    fleet.add_source(size_mb=4)
    if request.param == "local":
        fleet.write_config()
        return "local"
    port = request.getfixturevalue("moto_port")
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    bucket = f"lock-{secrets.token_hex(4)}"
    make_bucket(port, bucket)
    s3_config(fleet, port, bucket, None)
    return "s3"


def test_two_hosts_backing_up_one_shard_at_once_one_is_refused(fleet, repository_kind):
    _, finish = start_paused_backup(fleet, "catch up")
    second = run_cli("backup", "commerce/0", "--json", "-c", str(other_host(fleet)))
    assert second.returncode == 3, second.stdout + second.stderr
    [refused] = json.loads(second.stdout)
    assert refused["busy"] and "repository lease" in refused["error"], refused["error"]

    first = finish()
    assert first.ok, first.error
    assert [m.backup_id for m in fleet.repository.backups()] == [first.backup_id]
    again = run_cli("backup", "commerce/0", "--json", "-c", str(other_host(fleet)))
    assert again.returncode == 0, again.stdout + again.stderr  # released: free at once


def test_prune_from_another_host_during_an_upload_leaves_it_whole(fleet, repository_kind):
    """Format 2, whose upload shows as an incomplete prefix at once (format 3's packs:
    tests/integration/test_chunked_cycles.py races a collector against an upload)."""
    with fleet.config_path.open("a") as config:
        config.write("\n[chunks]\nformat = 2\n")
    [first] = fleet.backup()
    assert first.ok, first.error
    fleet.sources[0].apply_workload(0.05)
    _, finish = start_paused_backup(fleet, "back up")
    deadline = time.monotonic() + 60
    while not fleet.repository.incomplete():  # some objects are stored, the manifest is not
        assert time.monotonic() < deadline, "no object of the paused upload was stored"
        time.sleep(0.1)

    # As aggressive as retention goes: keep 1, no minimum age, no grace for uploads.
    pruner = other_host(fleet, retention="incomplete_grace_hours = 0\n")
    text = pruner.read_text().replace("min_count = 2", "min_count = 1")
    pruner.write_text(text)
    pruned = run_cli("prune", "--json", "-c", str(pruner))
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    report = json.loads(pruned.stdout)
    assert report["removed"] == []
    assert [(s["shard"], s["id"]) for s in report["skipped"]] == [("commerce/0", "*")]
    assert "repository lease" in report["skipped"][0]["reason"]

    second = finish()
    assert second.ok, second.error
    verified = run_cli("verify", "commerce/0", second.backup_id, "--deep", "--json",
                       "-c", str(fleet.config_path))  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # Now that the shard is idle, the same prune removes what retention lets go.
    pruned = json.loads(run_cli("prune", "--json", "-c", str(pruner)).stdout)
    assert [e["id"] for e in pruned["removed"]] == [first.backup_id]


def test_a_cycle_that_lost_its_lease_does_not_commit(fleet):
    fleet.add_source(size_mb=4)
    fleet.write_config()
    _, finish = start_paused_backup(fleet, "back up")
    # What a host whose clock judged the lease expired writes when it takes over.
    now = datetime.now(UTC)
    taker = Holder("host-b", "b00t", 4242, "1", "t0ken")
    fleet.repository.store.put(
        "commerce/0/lease.json", Record(taker, now, now + timedelta(minutes=5)).encode()
    )
    result = finish()
    assert not result.ok and not result.cancelled, result
    assert "lost its lease" in result.error and "pid 4242 on host-b" in result.error, result.error
    assert fleet.repository.backups() == []
    assert fleet.repository.incomplete() == [], "its upload was removed"
