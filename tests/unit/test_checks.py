"""`catchup.checks` without the CLI: findings, never exceptions, for what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from catchup.checks import check_fleet
from catchup.config import load_config
from catchup.errors import CatchupError
from catchup.repository import open_repository


def fleet_config(tmp_path: Path) -> Path:
    config = tmp_path / "catchup.toml"
    config.write_text(
        f'repository = "{tmp_path / "repo"}"\nwork_dir = "{tmp_path / "work"}"\n'
        '[credentials]\npassword_env = "CHECKS_TEST_PW"\n'
        '[[shards]]\nkeyspace = "ks"\nshard = "a"\nsource = "127.0.0.1:1"\n'
        '[[shards]]\nkeyspace = "ks"\nshard = "b"\nengine = "postgres"\nsource = "127.0.0.1:1"\n'
    )
    return config


def test_an_unreachable_source_is_a_failed_finding_and_the_others_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHECKS_TEST_PW", "secret")
    config = load_config(fleet_config(tmp_path))
    report = check_fleet(config, open_repository(config), None)
    assert list(report) == ["repository", "ks/a", "ks/b"]
    [repository] = report["repository"]
    assert repository.ok, repository
    assert repository.detail.endswith(": 0 complete backups; not encrypted")
    for shard in ("ks/a", "ks/b"):
        [connect] = report[shard]
        assert (connect.check, connect.ok) == ("connect", False), connect
        assert "127.0.0.1:1" in connect.detail


def test_selected_shards_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECKS_TEST_PW", "secret")
    config = load_config(fleet_config(tmp_path))
    assert list(check_fleet(config, open_repository(config), ["ks/b"])) == ["repository", "ks/b"]


def test_a_missing_password_is_a_usage_error_not_a_finding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHECKS_TEST_PW", raising=False)
    config = load_config(fleet_config(tmp_path))
    with pytest.raises(CatchupError, match="CHECKS_TEST_PW"):
        check_fleet(config, open_repository(config), None)
