"""Shard leases in the repository, and prune under them, on a local directory store."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from catchup.cancel import CancelToken
from catchup.codec import CodecSettings
from catchup.errors import Cancelled, ShardBusyError
from catchup.fleet.lease import Holder, LeaseLostError, Record, RepositoryLeaser, hold
from catchup.fleet.lock import shard_lock
from catchup.fleet.prune import prune
from catchup.repository import Repository
from catchup.repository.layout import new_backup_id
from catchup.storage import StorageError
from catchup.storage.local import LocalStore
from tests.unit.test_repository import header, make_data_dir, write

LEASE = "ks/0/lease.json"


def write_confirmed(repo: Repository, data: Path, confirm) -> None:
    listing = repo.scan(data, lambda rel: False)
    repo.write_backup(header(), data, listing, CodecSettings(1), 2, confirm=confirm)


def other_host(**changes: object) -> Holder:
    fields = {"host": "other-host", "boot_id": "b00t", "pid": 4242, "started": "1", "token": ""}
    return Holder(**{**fields, **changes})  # type: ignore[arg-type]


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_second_runner_on_another_host_is_refused_then_served_after_release(tmp_path):
    store = LocalStore(tmp_path / "repo")
    first = RepositoryLeaser(store, 60, other_host()).acquire("ks", "0")
    with pytest.raises(ShardBusyError, match=r"pid 4242 on other-host .*wait for that run"):
        RepositoryLeaser(store, 60).acquire("ks", "0")
    first.release()
    RepositoryLeaser(store, 60).acquire("ks", "0").confirm()


def test_taking_over_a_released_lease_is_routine_an_abandoned_one_is_logged(tmp_path, caplog):
    store = LocalStore(tmp_path / "repo")
    RepositoryLeaser(store, 60, other_host()).acquire("ks", "0").release()
    with caplog.at_level("WARNING", logger="catchup"):
        RepositoryLeaser(store, 60).acquire("ks", "0").confirm()
    assert "taking over" not in caplog.text  # every cycle after the first would say it
    RepositoryLeaser(store, 1, other_host()).acquire("ks", "1")  # and never renewed
    time.sleep(1.1)
    with caplog.at_level("WARNING", logger="catchup"):
        RepositoryLeaser(store, 60).acquire("ks", "1")
    assert "taking over the lease of pid 4242 on other-host" in caplog.text


def test_the_lease_is_never_taken_for_a_backup(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    RepositoryLeaser(repo.store, 60).acquire("ks", "0")
    assert (tmp_path / "repo" / LEASE).exists()
    assert repo.backups() == [] and repo.incomplete() == []


def test_an_expired_lease_whose_holder_died_is_taken_over(tmp_path):
    store = LocalStore(tmp_path / "repo")
    dead = RepositoryLeaser(store, 1, other_host()).acquire("ks", "0")  # and never renewed
    with pytest.raises(ShardBusyError):
        RepositoryLeaser(store, 60).acquire("ks", "0")
    time.sleep(1.1)
    taker = RepositoryLeaser(store, 60).acquire("ks", "0")
    taker.confirm()
    with pytest.raises(LeaseLostError, match="lost its lease"):
        dead.confirm()
    taker.confirm()  # the old holder's attempt changed nothing


def test_a_lease_whose_process_died_on_this_host_is_taken_over_at_once(tmp_path):
    store = LocalStore(tmp_path / "repo")
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    here = Holder.this_process()
    gone = Holder(here.host, here.boot_id, int(child.stdout), "123", "", here.pid_namespace)
    RepositoryLeaser(store, 600, gone).acquire("ks", "0")
    RepositoryLeaser(store, 600).acquire("ks", "0").confirm()


def test_a_pid_of_another_pid_namespace_is_never_judged_dead(tmp_path):
    store = LocalStore(tmp_path / "repo")
    here = Holder.this_process()
    elsewhere = Holder(here.host, here.boot_id, 999_999_999, "123", "", "pid:[1]")
    RepositoryLeaser(store, 600, elsewhere).acquire("ks", "0")
    with pytest.raises(ShardBusyError):
        RepositoryLeaser(store, 600).acquire("ks", "0")


def test_an_unreadable_lease_object_protects_nothing(tmp_path):
    store = LocalStore(tmp_path / "repo")
    store.put(LEASE, b"{not json")
    RepositoryLeaser(store, 600).acquire("ks", "0").confirm()


def test_a_live_lease_of_this_process_is_not_judged_dead(tmp_path):
    store = LocalStore(tmp_path / "repo")
    RepositoryLeaser(store, 600).acquire("ks", "0")
    with pytest.raises(ShardBusyError):
        RepositoryLeaser(store, 600).acquire("ks", "0")


def test_renewal_keeps_the_lease_past_its_ttl(tmp_path):
    store = LocalStore(tmp_path / "repo")
    with hold([RepositoryLeaser(store, 0.6)], "ks", "0", CancelToken()) as held:
        time.sleep(1.5)
        with pytest.raises(ShardBusyError):
            RepositoryLeaser(store, 60, other_host()).acquire("ks", "0")
        held.confirm()
        assert not held.cancel.cancelled
    RepositoryLeaser(store, 60, other_host()).acquire("ks", "0")  # released: free at once


def steal(store: LocalStore) -> None:
    """What a taker writes once it judged the lease expired."""
    now = datetime.now(UTC)
    store.put(LEASE, Record(other_host(token="t"), now, now + timedelta(minutes=5)).encode())


def test_a_holder_that_lost_its_lease_is_cancelled_and_does_not_commit(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    data = make_data_dir(tmp_path)
    outer = CancelToken()
    leasers = [RepositoryLeaser(repo.store, 0.9)]
    with (
        pytest.raises(LeaseLostError, match="committed nothing"),
        hold(leasers, "ks", "0", outer) as held,
    ):
        steal(repo.store)
        with pytest.raises(LeaseLostError, match="held by pid 4242 on other-host"):
            write_confirmed(repo, data, held.confirm)
        assert held.cancel.cancelled, "losing the lease cancels the cycle"
        held.cancel.check()  # the cycle's next step
    assert not outer.cancelled, "only this shard's cycle is cancelled"
    assert repo.backups() == [] and repo.incomplete() == []
    assert not list((tmp_path / "repo").rglob("manifest.json"))


def test_the_renewal_thread_cancels_a_holder_that_lost_its_lease(tmp_path):
    store = LocalStore(tmp_path / "repo")
    with hold([RepositoryLeaser(store, 0.6)], "ks", "0", CancelToken()) as held:
        steal(store)
        wait_for(lambda: held.cancel.cancelled, timeout=2)
        assert "held by pid 4242 on other-host" in held.cancel.reason
        with pytest.raises(Cancelled):
            held.cancel.check()


class Unreachable(LocalStore):
    """A store that stops answering once `down` is set."""

    down = False

    def replace(self, key: str, data: bytes, version: str) -> str | None:
        if self.down:
            raise StorageError(f"{self.url}: cannot write {key}: connection refused")
        return super().replace(key, data, version)


def test_a_holder_that_cannot_reach_the_store_until_expiry_is_cancelled(tmp_path):
    store = Unreachable(tmp_path / "repo")
    with hold([RepositoryLeaser(store, 1.5)], "ks", "0", CancelToken()) as held:
        store.down = True
        time.sleep(0.5)
        assert not held.cancel.cancelled, "a passing error is not a lost lease"
        wait_for(lambda: held.cancel.cancelled, timeout=3)
        assert "could not be renewed before it expired" in held.cancel.reason
        with pytest.raises(LeaseLostError):
            held.confirm()


def old_id(hours: float) -> str:
    return new_backup_id(datetime.now(UTC) - timedelta(hours=hours))


def test_a_prefix_holding_only_partial_writes_is_incomplete_and_pruned(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    good = write(repo, make_data_dir(tmp_path))
    crashed = old_id(7)
    partial = tmp_path / "repo" / "ks" / "0" / crashed / "data"
    partial.mkdir(parents=True)
    (partial / ".tmp-000000.zst.abcd1234").write_bytes(b"half")
    assert repo.incomplete() == [("ks", "0", crashed)]
    result = prune(repo, tmp_path / "work", 1, timedelta(0), dry_run=False)
    assert result.removed == [{"shard": "ks/0", "id": crashed, "reason": "incomplete"}]
    assert not (tmp_path / "repo" / "ks" / "0" / crashed).exists()
    assert [m.backup_id for m in repo.backups()] == [good.backup_id]


def test_prune_keeps_incomplete_prefixes_younger_than_the_grace(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    young, old = old_id(1), old_id(3)
    for backup_id in (young, old):
        (tmp_path / "repo" / "ks" / "0" / backup_id).mkdir(parents=True)
        (tmp_path / "repo" / "ks" / "0" / backup_id / "000000.zst").write_bytes(b"x")
    result = prune(repo, tmp_path / "work", 1, timedelta(0), False,
                   incomplete_grace=timedelta(hours=2))  # fmt: skip
    assert [e["id"] for e in result.removed] == [old]
    assert [e["id"] for e in result.skipped] == [young]
    assert "incomplete_grace_hours" in result.skipped[0]["reason"]
    assert repo.incomplete() == [("ks", "0", young)]


def test_prune_skips_a_shard_whose_lease_another_host_holds(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    data = make_data_dir(tmp_path)
    first, second = write(repo, data), write(repo, data, shard="1")
    write(repo, data, shard="1")
    crashed = old_id(7)
    (tmp_path / "repo" / "ks" / "0" / crashed).mkdir()
    (tmp_path / "repo" / "ks" / "0" / crashed / "000000.zst").write_bytes(b"an upload")
    # Another host's writer holds ks/0: its work dir is not ours, only the repository says so.
    RepositoryLeaser(repo.store, 600, other_host()).acquire("ks", "0")
    result = prune(repo, tmp_path / "work", 1, timedelta(0), False, incomplete_grace=timedelta(0))
    assert result.skipped == [{"shard": "ks/0", "id": "*", "reason": result.skipped[0]["reason"]}]
    assert "pid 4242 on other-host" in result.skipped[0]["reason"]
    assert [e["id"] for e in result.removed] == [second.backup_id], "the other shard goes on"
    assert (tmp_path / "repo" / "ks" / "0" / crashed / "000000.zst").exists()
    assert first in repo.backups()


class CommitBeforeLock(LocalStore):
    """Runs `hook` when prune creates the shard's lease: a commit landing at that instant."""

    hook = staticmethod(lambda: None)

    def create(self, key: str, data: bytes) -> str | None:
        if key.endswith("lease.json"):
            self.hook()
            self.hook = staticmethod(lambda: None)
        return super().create(key, data)


def test_a_backup_committed_just_before_prune_takes_the_lock_survives(tmp_path):
    store = CommitBeforeLock(tmp_path / "repo")
    repo = Repository(store)
    data = make_data_dir(tmp_path)
    old = write(repo, data, backup_id=old_id(8))
    new = write(repo, data, backup_id=old_id(7))
    manifest = tmp_path / "repo" / "ks" / "0" / new.backup_id / "manifest.json"
    blob = manifest.read_bytes()
    manifest.unlink()  # still uploading when prune lists the repository
    assert repo.incomplete() == [("ks", "0", new.backup_id)]
    store.hook = staticmethod(lambda: manifest.write_bytes(blob))
    result = prune(repo, tmp_path / "work", 1, timedelta(0), False, incomplete_grace=timedelta(0))
    assert result.removed == [{"shard": "ks/0", "id": old.backup_id, "reason": "expired"}]
    [kept] = repo.backups()
    assert kept.backup_id == new.backup_id
    repo.restore(kept, tmp_path / "restored", jobs=2)  # every object is still there
    assert (tmp_path / "restored" / "ibdata1").read_bytes() == (data / "ibdata1").read_bytes()


def test_shard_lock_refuses_on_the_same_host_by_flock_first(tmp_path):
    store = LocalStore(tmp_path / "repo")
    with shard_lock(tmp_path / "work", store, "ks", "0", 60):
        with (
            pytest.raises(ShardBusyError, match="being backed up or pruned on this host"),
            shard_lock(tmp_path / "work", store, "ks", "0", 60),
        ):
            pass
        with (
            pytest.raises(ShardBusyError, match="repository lease"),
            shard_lock(tmp_path / "other-work", store, "ks", "0", 60),
        ):
            pass
    with shard_lock(tmp_path / "other-work", store, "ks", "0", 60):
        pass


def test_write_backup_confirms_right_before_the_manifest(tmp_path: Path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    seen: list[list[str]] = []

    def confirm() -> None:
        seen.append(sorted(p.name for p in (tmp_path / "repo").rglob("*.json")))

    write_confirmed(repo, make_data_dir(tmp_path), confirm)
    assert seen == [[]], "confirmed once, with every object stored and no manifest yet"
