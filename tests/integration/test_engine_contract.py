"""The cycle contract: what every engine in tests/integration/engines.py's ENGINES
must do against a real source: bootstrap, catch up a delta and restore exactly the
source; bootstrap again when the source lost the log; refuse a backup chain that is
not the source's; survive a replica killed mid catch-up with nothing committed."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

from catchup.cancel import CancelToken
from catchup.cycle import CycleOptions
from catchup.demo.run import prove_equal
from catchup.demo.sandbox import Sandbox
from catchup.fleet.run import ShardResult
from tests.integration.conftest import Fleet
from tests.integration.engines import EngineCase
from tests.integration.processes import processes_under
from tests.integration.test_faults import HookReporter

SIZE_MB = 1  # PostgreSQL's smallest pgbench scale is about 15 MB


def add_source(fleet: Fleet, engine: EngineCase, server_id: int = 1) -> Sandbox:
    source = engine.new_source(fleet.root / "sandbox" / f"src-{len(fleet.sources)}", server_id)
    fleet.sources.append(source)  # type: ignore[arg-type]  # the fixture kills every one
    source.start()
    source.load_demo_data(SIZE_MB)
    return source


def backed_up_source(fleet: Fleet, engine: EngineCase) -> tuple[Sandbox, ShardResult]:
    """A source of `engine`, the fleet's one shard, and its first backup, asserted good."""
    source = add_source(fleet, engine)
    fleet.write_config()
    [first] = fleet.backup()
    assert first.ok, first.error
    return source, first


def test_bootstrap_then_catch_up_restores_exactly_the_source(fleet, engine):
    source, first = backed_up_source(fleet, engine)
    assert first.kind == "bootstrap" and first.parent is None, first.kind
    source.apply_workload(0.05)
    [second] = fleet.backup()
    assert second.ok and second.kind == "catchup", second.error
    assert second.parent == first.backup_id
    assert second.bytes_from_source < first.bytes_from_source

    config = fleet.config
    proof = prove_equal(config, fleet.repository, config.shards[0], source, CancelToken())
    assert proof is not None and proof.backup_id == second.backup_id
    assert proof.report.ok, [f for f in proof.report.findings if not f.ok]
    assert proof.position_equal, "the restored backup is at the source's position"
    assert proof.checksums_equal and proof.tables_compared > 0
    assert not fleet.instance_dirs()


def test_a_source_that_lost_the_log_bootstraps_again_unless_told_not_to(fleet, engine):
    source, first = backed_up_source(fleet, engine)
    source.apply_workload(0.02)
    engine.lose_log(source, first)

    [refused] = fleet.backup(CycleOptions(rebootstrap=False))
    assert not refused.ok and "cannot be caught up" in refused.error, refused.error
    assert "run without --no-rebootstrap" in refused.error
    assert [m.backup_id for m in fleet.repository.backups()] == [first.backup_id]

    [again] = fleet.backup()
    assert again.ok and again.kind == "bootstrap" and again.parent is None, again.error
    assert again.rebootstrap_reason and "cannot be caught up" in again.rebootstrap_reason
    assert source.quiesced_at(again.position), "the new chain starts at the source's position"
    assert not fleet.instance_dirs()


def test_a_backup_chain_from_another_source_is_refused(fleet, engine):
    source = add_source(fleet, engine)
    fleet.write_config()
    assert fleet.backup()[0].ok
    source.apply_workload(0.05)
    assert fleet.backup()[0].ok
    # The shard's endpoint now reaches another server, with a history of its own.
    fleet.write_config([add_source(fleet, engine, server_id=2)])
    text = fleet.config_path.read_text()

    fleet.config_path.write_text('on_source_change = "refuse"\n' + text)
    [refused] = fleet.backup()
    assert not refused.ok and "the source is another server" in refused.error, refused.error

    fleet.config_path.write_text(text)  # warn only: the positions still refuse it
    [diverged] = fleet.backup()
    assert not diverged.ok and "refusing to back up" in diverged.error, diverged.error
    assert "does not belong to this source" in diverged.error
    assert len(fleet.repository.backups()) == 2
    assert not fleet.instance_dirs()


def test_a_replica_killed_mid_catch_up_commits_nothing_and_the_next_cycle_succeeds(fleet, engine):
    source, first = backed_up_source(fleet, engine)
    source.apply_workload(0.05)
    work = fleet.root / "work"
    killed: list[int] = []

    def kill_the_replica() -> None:
        """Some engines start the replica's server within the catch-up step: wait for it."""

        def killer() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not killed:
                for pid in processes_under(work):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                time.sleep(0.01)

        threading.Thread(target=killer, daemon=True).start()

    [failed] = fleet.backup(reporter=HookReporter("catch up", kill_the_replica))
    assert killed, "no replica server appeared"
    assert not failed.ok and re.search(engine.replica_died, failed.error), failed.error
    assert [m.backup_id for m in fleet.repository.backups()] == [first.backup_id]
    assert not fleet.repository.incomplete()
    assert not fleet.instance_dirs() and not processes_under(work)

    [retry] = fleet.backup()
    assert retry.ok and retry.kind == "catchup" and retry.parent == first.backup_id, retry.error
