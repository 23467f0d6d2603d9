"""The MySQL engine's pure logic: GTID sets and how a backup's set relates to the
source's (errant, purged, covered), operator positions, which files stay behind,
which programs are MySQL's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from catchup.engines import Coverage
from catchup.engines.mysql import binaries
from catchup.engines.mysql.bootstrap import reset_gtids_statement
from catchup.engines.mysql.gtid import (
    GtidSet,
    MySQLGtid,
    compare_positions,
    judge_coverage,
    parse_position,
)
from catchup.engines.mysql.instance import NOT_ARCHIVED, check_version
from catchup.engines.registry import engine_for
from catchup.errors import ConfigError, InstanceError

A = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
B = "916a7aec-ef06-11f1-8c4f-02fc00000001"


def test_a_set_has_one_normal_form() -> None:
    text = f"{B.upper()}:7:1-5,\n {A}:1-3, {B}:6"
    assert str(GtidSet.parse(text)) == f"{A}:1-3,{B}:1-7"
    assert GtidSet.parse(text) == GtidSet.parse(f"{A}:1-3,{B}:1-7")
    assert str(GtidSet.parse("")) == "" and not GtidSet.parse("  ")


def test_tagged_gtids_keep_their_tag() -> None:
    tagged = GtidSet.parse(f"{A}:1-3:nightly:1-2:5")
    assert str(tagged) == f"{A}:1-3:nightly:1-2:5"
    assert MySQLGtid(A, "nightly", 5) in tagged and MySQLGtid(A, "", 5) not in tagged
    assert tagged.count() == 6


MALFORMED = [f"{A}", f"{A}:0-3", f"{A}:5-3", "not-a-uuid:1-3", f"{A}:1-x", f"{A}:Tag!:1"]
MALFORMED += [f"{A}:tg", f"{A}:1-3:tg", f"{A}:tg:other:1"]  # a tag without its intervals


@pytest.mark.parametrize("text", MALFORMED)
def test_a_malformed_set_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"GTID set|interval"):
        GtidSet.parse(text)


def test_minus_and_subsets() -> None:
    whole = GtidSet.parse(f"{A}:1-10,{B}:1-3")
    part = GtidSet.parse(f"{A}:2-4:8")
    assert str(whole.minus(part)) == f"{A}:1:5-7:9-10,{B}:1-3"
    assert part.issubset(whole) and not whole.issubset(part)
    assert compare_positions(part, whole) == -1 and compare_positions(whole, part) == 1
    assert compare_positions(whole, GtidSet.parse(f"{B}:1-3,{A}:1-10")) == 0
    assert compare_positions(part, GtidSet.parse(f"{B}:1-9")) is None
    grown = part.copy()
    grown.add(MySQLGtid(A, "", 5))
    assert str(grown) == f"{A}:2-5:8" and str(part) == f"{A}:2-4:8"


def test_errant_gtids_of_an_unknown_server_are_foreign() -> None:
    verdict = judge_coverage(
        GtidSet.parse(f"{A}:1-10,{B}:1"), GtidSet.parse(f"{A}:1-20"), GtidSet.parse("")
    )
    assert verdict.coverage is Coverage.FOREIGN
    assert f"errant GTIDs {B}:1" in verdict.reason


def test_errant_gtids_of_a_known_server_are_ahead() -> None:
    verdict = judge_coverage(
        GtidSet.parse(f"{A}:1-10:12"), GtidSet.parse(f"{A}:1-11"), GtidSet.parse("")
    )
    assert verdict.coverage is Coverage.AHEAD and f"{A}:12" in verdict.reason


def test_purged_logs_the_backup_lacks_mean_purged() -> None:
    backup = GtidSet.parse(f"{A}:1-10")
    verdict = judge_coverage(backup, GtidSet.parse(f"{A}:1-30"), GtidSet.parse(f"{A}:1-12"))
    assert verdict.coverage is Coverage.PURGED and f"{A}:11-12" in verdict.reason
    covered = judge_coverage(backup, GtidSet.parse(f"{A}:1-30"), GtidSet.parse(f"{A}:1-10"))
    assert covered.coverage is Coverage.COVERED


def test_an_operator_position_is_a_non_empty_set() -> None:
    assert str(parse_position(f"{A.upper()}:1-5")) == f"{A}:1-5"
    for text in ("", "0-1-100", f"{A}"):
        with pytest.raises(ValueError, match="GTID set"):
            parse_position(text)
    engine = engine_for("mysql")
    assert engine.compare_positions(f"{A}:1-5", f"{A}:1-6") == -1


def test_the_instance_identity_and_replication_state_stay_behind() -> None:
    left_behind = ["auto.cnf", "server-key.pem", "private_key.pem", "relay-bin.000002"]
    left_behind += ["relay-bin.index", "mysqld.pid", "#innodb_temp/temp_1.ibt", "mysqld-auto.cnf"]
    left_behind += ["#clone/#view_status"]  # a clone's status, naming its donor
    for name in left_behind:
        assert NOT_ARCHIVED.match(name), name
    for name in ("ibdata1", "mysql.ibd", "shop/orders.ibd", "#innodb_redo/#ib_redo9", "undo_001"):
        assert not NOT_ARCHIVED.match(name), name


def test_the_reset_statement_follows_the_version() -> None:
    assert reset_gtids_statement("8.0.36") == "RESET MASTER"
    assert reset_gtids_statement("8.4.3") == "RESET BINARY LOGS AND GTIDS"
    assert reset_gtids_statement("9.7.4-2") == "RESET BINARY LOGS AND GTIDS"


def fake_program(directory: Path, name: str, version_line: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    program = directory / name
    program.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    program.chmod(0o755)
    return program


def test_mariadbs_mysqld_link_is_refused(tmp_path, monkeypatch) -> None:
    fake_program(tmp_path / "bin", "mysqld", "mysqld  Ver 10.11.14-MariaDB-0+deb12u2 for debian")
    monkeypatch.setattr(binaries, "PROJECT_BINARIES", tmp_path / "none")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setattr(binaries, "SEARCH_DIRS", ())
    binaries._version.cache_clear()
    with pytest.raises(ConfigError, match=r"is MariaDB's, not MySQL's; set mysql.binaries"):
        binaries.find_binary("mysqld")


def test_configured_binaries_win_and_name_what_is_missing(tmp_path) -> None:
    program = fake_program(tmp_path, "mysqld", "mysqld  Ver 8.4.3 for Linux on x86_64")
    assert binaries.find_binary("mysqld", tmp_path) == str(program)
    assert binaries.program_version(str(program)) == "8.4.3"
    with pytest.raises(ConfigError, match=r"mysql.binaries = .*: mysqldump is not there"):
        binaries.find_binary("mysqldump", tmp_path)
    # A backup of a newer MySQL does not open on an older server.
    with pytest.raises(InstanceError, match=r"made by MySQL 9.7.4.*8.4.3"):
        check_version(str(program), "9.7.4")
    check_version(str(program), "8.0.40")
    assert os.access(program, os.X_OK)
