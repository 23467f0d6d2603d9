"""What a new user trips over with a MariaDB source: a wrong password, a source without
binlog, a purged binlog mid-cycle, and a zero-delta cycle that should cost next to nothing."""

from __future__ import annotations

import json

import pytest

from catchup.demo.mariadb import SOURCE_OPTIONS, MariaDBSandbox
from tests.conftest import run_cli
from tests.integration.test_faults import HookReporter
from tests.integration.test_mariadb_trust import Recorder

pytestmark = pytest.mark.integration


def test_a_wrong_password_is_one_line(fleet) -> None:
    source = fleet.add_source()
    fleet.write_config()
    source.password_file.write_text("not-the-password\n")
    config = str(fleet.config_path)
    for command in (["check"], ["backup", "--all"]):
        result = run_cli(*command, "-c", config)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "Traceback" not in output and "UnboundLocalError" not in output
        assert "refused the login" in output and "check credentials" in output, output


def test_a_source_without_binlog_fails_in_the_precheck(fleet) -> None:
    source = MariaDBSandbox(fleet.root / "sandbox" / "nobinlog", server_id=1)
    source.server.options = [
        *(o for o in SOURCE_OPTIONS if not o.startswith(("--log-bin", "--log-slave"))),
        "--skip-log-bin",
    ]
    fleet.sources.append(source)
    source.start()
    source.load_demo_data(1)
    fleet.write_config()
    recorder = Recorder()
    [result] = fleet.backup(reporter=recorder)
    assert not result.ok
    assert "log_bin off" in result.error and "log_bin=ON" in result.error, result.error
    assert "\n" not in result.error
    assert "provision" not in recorder.steps and recorder.steps[0] == "precheck", recorder.steps
    assert not fleet.repository.backups()


def test_binlogs_purged_mid_cycle_say_a_rerun_bootstraps(fleet) -> None:
    source = fleet.add_source()
    fleet.write_config()
    assert fleet.backup()[0].ok
    source.apply_workload(0.02)
    [failed] = fleet.backup(reporter=HookReporter("start", source.purge_binlogs))
    assert not failed.ok
    assert "replication IO error 1236" in failed.error, failed.error
    assert "--bootstrap" not in failed.error and "run the backup again" in failed.error

    rerun = run_cli("backup", "--all", "--json", "-c", str(fleet.config_path))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    [again] = json.loads(rerun.stdout)
    assert again["kind"] == "bootstrap" and "binlogs start after" in again["rebootstrap_reason"]


def test_a_zero_delta_cycle_does_not_wait_for_an_online_redo_resize(fleet) -> None:
    fleet.add_source()
    fleet.write_config()
    assert fleet.backup()[0].ok
    stops = []
    for _ in range(3):
        [result] = fleet.backup()
        assert result.ok and result.kind == "catchup", result.error
        manifest = fleet.repository.find("commerce", "0", result.backup_id)
        [redo] = [f for f in manifest.files if f.path == "ib_logfile0"]
        assert redo.size == fleet.config.mariadb.archive_redo_log_mb * 1024 * 1024
        stops.append(manifest.durations["stop"])
    # An online resize waits at least a second for InnoDB's checkpoint; a resize at
    # startup does not.
    assert min(stops) < 1.0, stops
