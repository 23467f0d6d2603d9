"""PostgreSQL slots across chains, against a real source: a failed re-bootstrap keeps the
newest backup catchable, old chains' slots go once a new one commits, older positions
find their legacy slot, a dropped slot is named, and a failed release does not fail a
committed cycle. Also: passwords that need quoting."""

# ruff: noqa: F811 - the `pg` fixture is imported from test_postgres
from __future__ import annotations

import json
import logging

import pytest
from psycopg import sql

from catchup.cancel import CancelToken
from catchup.cycle import CycleOptions
from catchup.engines import Coverage
from catchup.engines.postgres import PostgresEngine
from catchup.engines.postgres.lsn import format_lsn
from catchup.errors import CatchupError
from tests.conftest import run_cli
from tests.integration.test_faults import HookReporter
from tests.integration.test_postgres import (  # noqa: F401 - fixture
    bootstrapped_instance,
    pg,
    pg_shard,
    write_config,
)

pytestmark = pytest.mark.integration


def slots(source) -> dict[str, str]:
    with source.server.connect() as conn:
        rows = conn.execute("SELECT slot_name, restart_lsn::text FROM pg_replication_slots")
        return dict(rows.fetchall())


def slot_of(position: str) -> str:
    return position.partition(":")[2]


def test_a_failed_rebootstrap_keeps_the_newest_backup_catchable(fleet, pg):
    source = pg(size_mb=15)
    # The failed attempt's base backup makes WAL too: no re-bootstrap for cost here.
    write_config(fleet, pg_shard(source), extra="[postgres]\nrebootstrap_wal_ratio = 20\n")
    [first] = fleet.backup()
    assert first.ok, first.error
    source.apply_workload(0.005)

    def boom() -> None:
        raise CatchupError("injected failure after the new chain's slot was made")

    [failed] = fleet.backup(
        options=CycleOptions(force_bootstrap=True), reporter=HookReporter("catch up", boom)
    )
    assert not failed.ok and "injected" in failed.error
    assert list(slots(source)) == [slot_of(first.position)]  # old kept, new one dropped

    [next_cycle] = fleet.backup()
    assert next_cycle.ok and next_cycle.kind == "catchup", next_cycle.error
    assert next_cycle.parent == first.backup_id


def test_a_new_chain_releases_the_old_chains_slot_once_committed(fleet, pg):
    source = pg(size_mb=15)
    write_config(fleet, pg_shard(source))
    [first] = fleet.backup()
    [second] = fleet.backup(options=CycleOptions(force_bootstrap=True))
    assert second.ok and second.kind == "bootstrap", second.error
    assert slot_of(second.position) != slot_of(first.position)
    assert list(slots(source)) == [slot_of(second.position)]
    [third] = fleet.backup()
    assert (
        third.ok and third.kind == "catchup" and slot_of(third.position) == slot_of(second.position)
    )
    assert slots(source)[slot_of(third.position)] == third.position.partition("@")[0]


def test_a_position_without_a_slot_uses_the_legacy_slot_until_a_new_chain(fleet, pg):
    """Backups of earlier versions name no slot: their shard's old slot still serves them."""
    source = pg(size_mb=15)
    write_config(fleet, pg_shard(source))
    config = fleet.config
    [shard] = config.shards
    engine = PostgresEngine()
    source.execute("SELECT pg_create_physical_replication_slot('catchup_pg_0', true)")
    with engine.open_source(config, shard) as view:
        legacy_position = f"{format_lsn(view.session.current_lsn())}@1"
        assert view.judge(legacy_position).coverage is Coverage.COVERED
        position = view.checkpoint()
        assert slot_of(position) == "catchup_pg_0"
        view.release(position)
    assert slots(source)["catchup_pg_0"] == position.partition("@")[0].partition(":")[0]

    source.execute("SELECT pg_drop_replication_slot('catchup_pg_0')")
    with engine.open_source(config, shard) as view:
        verdict = view.judge(legacy_position)
        assert verdict.coverage is Coverage.PURGED and "catchup_pg_0" in verdict.reason

    source.execute("SELECT pg_create_physical_replication_slot('catchup_pg_0', true)")
    [new_chain] = fleet.backup()
    assert new_chain.ok and new_chain.kind == "bootstrap", new_chain.error
    assert list(slots(source)) == [slot_of(new_chain.position)]  # the legacy one released


def test_check_names_a_dropped_slot_and_does_not_call_it_fine(fleet, pg):
    source = pg(size_mb=15)
    write_config(fleet, pg_shard(source))
    [first] = fleet.backup()
    slot = slot_of(first.position)
    source.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    checked = run_cli("check", "--json", "-c", str(fleet.config_path))
    assert checked.returncode != 0, checked.stdout
    findings = json.loads(checked.stdout)["pg/0"]
    assert not any(f["ok"] and "not created yet" in f["detail"] for f in findings), findings
    [newest] = [f for f in findings if f["check"] == "newest backup"]
    assert not newest["ok"] and slot in newest["detail"] and "gone" in newest["detail"]


def test_a_failed_slot_advance_after_the_commit_does_not_fail_the_cycle(fleet, pg, caplog):
    source = pg(size_mb=15)
    write_config(fleet, pg_shard(source))
    [first] = fleet.backup()
    source.apply_workload(0.005)
    slot = slot_of(first.position)

    def drop_slot() -> None:
        source.execute("SELECT pg_drop_replication_slot(%s)", (slot,))

    with caplog.at_level(logging.WARNING, logger="catchup"):
        [second] = fleet.backup(reporter=HookReporter("back up", drop_slot))
    assert second.ok and second.kind == "catchup", second.error
    assert [m.backup_id for m in fleet.repository.backups()][-1] == second.backup_id
    assert any(
        "is committed" in r.getMessage() and slot in r.getMessage() for r in caplog.records
    ), [r.getMessage() for r in caplog.records]


def test_a_password_that_needs_quoting_works_for_bootstrap_and_catch_up(fleet, pg):
    source = pg(size_mb=15)
    password = "p#a\\ss'w\"o rd = x"
    source.execute(sql.SQL("ALTER ROLE catchup PASSWORD {}").format(sql.Literal(password)))
    source.password_file.write_text(password + "\n")
    write_config(fleet, pg_shard(source))
    [first] = fleet.backup()
    assert first.ok, first.error
    source.apply_workload(0.005)
    [second] = fleet.backup()
    assert second.ok and second.kind == "catchup", second.error
    # No instance dir is left, and with it no config holding the password.
    assert not fleet.instance_dirs()


def test_the_bootstrap_instance_config_is_private_while_it_runs(fleet, pg):
    source = pg(size_mb=15)
    write_config(fleet, pg_shard(source))
    with bootstrapped_instance(fleet) as (view, instance):
        checkpoint = view.checkpoint()
        instance.catch_up(checkpoint, CancelToken(), lambda done, total: None)
        assert instance.files.config.stat().st_mode & 0o777 == 0o600
        assert "password=" in instance.files.config.read_text()
