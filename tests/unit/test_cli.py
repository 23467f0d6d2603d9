"""The real `catchup` command: --version, -c before or after the command, and failure
lines that start with their shard, once (the daemon's too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from catchup import __version__
from catchup.cancel import CancelToken
from catchup.config import load_config
from catchup.cycle import LogReporter
from catchup.daemon.executors.local import LocalExecutor
from catchup.repository import open_repository
from tests.conftest import run_cli


def write_config(tmp_path: Path, work_dir: Path | None = None) -> Path:
    config = tmp_path / "catchup.toml"
    config.write_text(
        f'repository = "{tmp_path / "repo"}"\nwork_dir = "{work_dir or tmp_path / "work"}"\n'
        '[credentials]\npassword_env = "CLI_TEST_PW"\n'
        '[[shards]]\nkeyspace = "ks"\nshard = "a"\nsource = "127.0.0.1:1"\n'
        '[[shards]]\nkeyspace = "ks"\nshard = "b"\nengine = "postgres"\nsource = "127.0.0.1:1"\n'
    )
    return config


def test_version_prints_the_version_and_exits_0():
    result = run_cli("--version")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == __version__


@pytest.mark.parametrize("where", ["before", "after"])
def test_the_config_option_works_before_and_after_the_command(tmp_path, where):
    config = str(write_config(tmp_path))
    args = ["-c", config, "list"] if where == "before" else ["list", "-c", config]
    # An explicit -c wins over $CATCHUP_CONFIG, wherever it is given.
    result = run_cli(*args, "--json", env={"CATCHUP_CONFIG": str(tmp_path / "missing.toml")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []


def test_the_config_from_the_environment_is_used_without_c(tmp_path):
    result = run_cli("list", "--json", env={"CATCHUP_CONFIG": str(write_config(tmp_path))})
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == []


def test_two_different_config_options_are_refused(tmp_path):
    result = run_cli("-c", str(write_config(tmp_path)), "list", "-c", str(tmp_path / "other"))
    assert result.returncode == 2
    assert "given twice" in result.stderr


def failure_lines(tmp_path: Path, work_dir: Path | None) -> tuple[list[str], list[str], list[str]]:
    """The summary's failure lines, the error log lines, and the --json errors."""
    config = str(write_config(tmp_path, work_dir))
    env = {"CLI_TEST_PW": "unused"}
    text = run_cli("--log-format", "json", "backup", "--all", "-c", config, env=env)
    assert text.returncode == 1, text.stdout + text.stderr
    printed = [line for line in text.stdout.splitlines() if line.startswith("shard ")]
    logged = [
        entry["message"]
        for entry in map(json.loads, text.stderr.splitlines())
        if entry["level"] == "error"
    ]
    as_json = run_cli("backup", "--all", "--json", "-c", config, env=env)
    errors = [r["error"] for r in json.loads(as_json.stdout)]
    return printed, logged, errors


@pytest.mark.parametrize(
    ("case", "names_its_shard"),
    [("unreachable source", True), ("work_dir under a file", False)],
)
def test_every_failure_line_starts_with_its_shard_once(tmp_path, case, names_its_shard):
    work_dir = None
    if case == "work_dir under a file":
        (tmp_path / "file").write_text("")
        work_dir = tmp_path / "file" / "work"
    printed, logged, errors = failure_lines(tmp_path, work_dir)
    for lines in (printed, logged, errors):
        assert len(lines) == 2, lines
        for shard, line in zip(("ks/a", "ks/b"), sorted(lines), strict=True):
            assert line.startswith(f"shard {shard}: "), line
            assert line.count(shard) == 1, line
    if names_its_shard:  # the message already said "shard ks/a: source ...": kept as it was
        assert any(": source 127.0.0.1:1 is unreachable" in line for line in printed)
    else:
        assert all(": unexpected NotADirectoryError" in line for line in printed)


def test_the_daemons_failure_lines_start_with_their_shard_once(tmp_path, monkeypatch):
    """The daemon's executor adds how many attempts failed, after the shard."""
    monkeypatch.setenv("CLI_TEST_PW", "unused")
    config_file = write_config(tmp_path)
    config_file.write_text(
        config_file.read_text() + "[executor]\nretries = 1\nretry_delay_seconds = 0\n"
    )
    config = load_config(config_file)
    executor = LocalExecutor(config, open_repository(config))
    for shard in config.shards:
        result = executor.execute(shard, "run-1", False, LogReporter(), CancelToken())
        assert result.error and result.error.startswith(
            f"shard {shard.name}: failed after 2 attempts: source 127.0.0.1:1 is unreachable"
        ), result.error
        assert result.error.count(shard.name) == 1, result.error
