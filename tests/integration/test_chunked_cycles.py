"""Repository format 3 under real MariaDB cycles: shared chunks across a chain with
prune between cycles, and a garbage collection racing a backup in `back up`."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

from catchup.cancel import CancelToken
from catchup.cycle import LogReporter
from catchup.demo.run import prove_equal
from tests.conftest import run_cli

CHUNKS = "\n[chunks]\nsize_kib = 64\npack_mb = 1\ngc_window_minutes = 0\n"


class BackUpHook(LogReporter):
    """Runs `hook` once, in a transfer thread, when `back up` has read `share` of the
    data dir (by then the threads have closed packs of new chunks)."""

    def __init__(self, share: float, hook) -> None:
        self.share, self.hook, self.in_back_up, self.fired = share, hook, False, False
        self.lock = threading.Lock()

    def step(self, shard: str, step: str) -> None:
        super().step(shard, step)
        self.in_back_up = step == "back up"

    def progress(self, shard: str, done: int, total: int) -> None:
        with self.lock:
            if self.in_back_up and done >= total * self.share and not self.fired:
                self.fired = True
                self.hook()


def test_a_chain_shares_chunks_and_a_gc_racing_a_backup_loses_nothing(fleet):
    source = fleet.add_source(size_mb=8)
    fleet.write_config()
    # One transfer thread: its packs fill (and close) before the backup ends.
    fleet.config_path.write_text("jobs = 1\n" + fleet.config_path.read_text() + CHUNKS)
    config_path = str(fleet.config_path)
    [first] = fleet.backup()
    assert first.ok, first.error
    source.apply_workload(0.02)
    [second] = fleet.backup()
    assert second.ok, second.error
    # Every backup is a full backup, but the second stores only what changed.
    assert second.new_stored_bytes is not None and first.new_stored_bytes is not None
    assert second.new_stored_bytes < first.new_stored_bytes / 2, (second, first)
    assert second.data_bytes >= first.data_bytes * 0.9

    # A prune between cycles (retention keeps 2; the window is 0): nothing in use goes.
    source.apply_workload(0.02)
    [third] = fleet.backup()
    assert third.ok, third.error
    pruned = run_cli("prune", "--json", "-c", config_path)
    assert pruned.returncode == 0, pruned.stderr
    assert first.backup_id in pruned.stdout

    # While the fourth backup is in `back up`: a prune that honours the shard lock is
    # turned away, and a collector that ignores it (a host that lost its lease) deletes
    # every pack no committed backup names, the ones this backup just stored included.
    repository = fleet.repository
    seen: dict[str, object] = {}

    def race() -> None:
        busy = run_cli("prune", "--json", "-c", config_path)
        seen["prune"] = json.loads(busy.stdout)
        garbage = repository.garbage_packs("commerce", "0", datetime.now(UTC))
        repository.delete_packs("commerce", "0", garbage)
        seen["deleted"] = garbage

    source.apply_workload(0.5)
    [fourth] = fleet.backup(reporter=BackUpHook(0.9, race))
    skipped = seen["prune"]["skipped"]  # type: ignore[index]
    assert skipped and all("busy" in s["reason"] for s in skipped), skipped
    assert seen["deleted"], "the racing collector found the new packs"
    assert not fourth.ok and "pack" in (fourth.error or ""), fourth.error
    assert [m.backup_id for m in fleet.repository.backups()] == [second.backup_id, third.backup_id]

    # Nothing committed was lost: every chunk of every backup reads back, once each.
    deep = run_cli("verify", "commerce/0", "all", "--deep", "--json", "-c", config_path)
    assert deep.returncode == 0, deep.stdout + deep.stderr
    findings = {f["check"]: f for f in json.loads(deep.stdout)["findings"]}
    assert findings["stored chunks"]["ok"], findings

    # The retry succeeds, and the chain restores to exactly the source.
    [retry] = fleet.backup()
    assert retry.ok, retry.error
    assert retry.parent == third.backup_id
    config = fleet.config
    proof = prove_equal(config, fleet.repository, config.shards[0], source, CancelToken())
    assert proof is not None and proof.ok, proof
