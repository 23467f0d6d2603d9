"""PostgreSQL user tablespaces: backed up inside the instance, restored in place, and a
tablespace created after the bootstrap refused before replay could write to its path."""

# ruff: noqa: F811 - the `pg` fixture is imported from test_postgres
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from catchup.cancel import CancelToken
from catchup.engines.postgres.server import (
    give_to_server_user,
)
from catchup.engines.postgres.verify import table_checksums
from catchup.errors import CatchUpFailedError
from tests.conftest import run_cli
from tests.integration.test_postgres import (  # noqa: F401 - fixture
    bootstrapped_instance,
    pg,
    pg_shard,
    restored_server,
    write_config,
)

pytestmark = pytest.mark.integration


def make_tablespace(source, location: Path, name: str) -> str:
    location.mkdir()
    give_to_server_user(location)
    source.execute(f"CREATE TABLESPACE {name} LOCATION '{location}'")
    with source.server.connect() as conn:
        return str(
            conn.execute("SELECT oid FROM pg_tablespace WHERE spcname = %s", (name,)).fetchone()[0]
        )


def files_written_since(root: Path, since: float, skip: list[Path]) -> list[Path]:
    """Everything under `root` created or changed after `since`, outside `skip`."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if any(here == s or here.is_relative_to(s) for s in skip):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = here / name
            if path.lstat().st_mtime > since and not any(path == s for s in skip):
                found.append(path)
    return found


def test_a_tablespace_round_trips_and_nothing_is_written_outside_the_work_dir(fleet, pg, short_tmp):
    source = pg(size_mb=15)
    oid = make_tablespace(source, short_tmp / "ts-location", "ts")
    source.execute("CREATE TABLE far (id int PRIMARY KEY, v text) TABLESPACE ts")
    source.execute("INSERT INTO far SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
    source.execute("CREATE INDEX far_v ON far (v) TABLESPACE ts")
    write_config(fleet, pg_shard(source))
    started = time.time()
    time.sleep(0.01)

    [first] = fleet.backup()
    assert first.ok and first.kind == "bootstrap", first.error
    source.execute("UPDATE far SET v = 'changed' WHERE id %% 7 = 0")
    source.execute("INSERT INTO far SELECT g, 'late' FROM generate_series(20001, 25000) g")
    [second] = fleet.backup()
    assert second.ok and second.kind == "catchup", second.error

    manifest = fleet.repository.find("pg", "0", second.backup_id)
    stored = [f.path for f in manifest.files]
    assert any(p.startswith(f"pg_tblspc/{oid}/PG_15_") for p in stored), stored[:20]
    # Nothing but the source's own server and catchup's work dir and repository changed.
    source_location = short_tmp / "ts-location"
    skip = [fleet.root / "work", fleet.root / "repository", source.root, source_location]
    assert files_written_since(short_tmp, started, skip) == []

    target = short_tmp / "restored"
    restored = run_cli(
        "restore", "pg/0", "--target-dir", str(target / "data"), "-c", str(fleet.config_path)
    )
    assert restored.returncode == 0, restored.stderr
    assert "pg_tblspc" in restored.stdout + restored.stderr
    assert "unix_socket_directories" in restored.stdout + restored.stderr  # the hint says
    assert (target / "data" / "pg_tblspc" / oid).is_dir()
    assert not (target / "data" / "pg_tblspc" / oid).is_symlink()
    with restored_server(target, 5498) as (_, conn):
        assert table_checksums(conn) == source.checksums()
        (count,) = conn.execute("SELECT count(*) FROM far WHERE v = 'late'").fetchone()
        assert count == 5000

    verify = run_cli("verify", "pg/0", "--json", "-c", str(fleet.config_path))
    assert json.loads(verify.stdout)["verified"], verify.stdout


def test_a_tablespace_created_after_the_bootstrap_is_refused_before_replay(fleet, pg, short_tmp):
    source = pg(size_mb=15)
    write_config(fleet, pg_shard(source))
    [first] = fleet.backup()
    assert first.ok, first.error

    location = short_tmp / "ts-late"
    make_tablespace(source, location, "late_ts")
    source.execute("CREATE TABLE late_table TABLESPACE late_ts AS SELECT 1 AS one")
    before = sorted(str(p) for p in location.rglob("*"))
    result = run_cli("backup", "--all", "--json", "-c", str(fleet.config_path))
    assert result.returncode != 0
    [row] = json.loads(result.stdout)
    assert "late_ts" in row["error"] and "--bootstrap" in row["error"], row["error"]
    assert sorted(str(p) for p in location.rglob("*")) == before  # no replay wrote there
    assert [m.backup_id for m in fleet.repository.backups()] == [first.backup_id]

    again = run_cli("backup", "--all", "--bootstrap", "--json", "-c", str(fleet.config_path))
    assert again.returncode == 0, again.stdout + again.stderr
    [row] = json.loads(again.stdout)
    manifest = fleet.repository.find("pg", "0", row["backup_id"])
    assert any("pg_tblspc/" in f.path for f in manifest.files)


def test_a_backup_whose_tablespace_is_an_empty_directory_is_not_built_on(fleet, pg, short_tmp):
    """Versions before in-place tablespaces stored the pg_tblspc symlink as an empty
    directory: such a backup lacks the tablespace's files, and catching it up would build
    on that loss."""
    source = pg(size_mb=15)
    oid = make_tablespace(source, short_tmp / "ts-old", "old_ts")
    source.execute("CREATE TABLE t_old TABLESPACE old_ts AS SELECT 1 AS one")
    write_config(fleet, pg_shard(source))
    with bootstrapped_instance(fleet) as (view, instance):
        tablespace = instance.data_dir / "pg_tblspc" / oid
        assert any(tablespace.iterdir())
        shutil.rmtree(tablespace)
        tablespace.mkdir()  # what an older version's backup restores
        with pytest.raises(CatchUpFailedError, match=r"old_ts.*--bootstrap"):
            instance.catch_up(view.checkpoint(), CancelToken(), lambda done, total: None)
