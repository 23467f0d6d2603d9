"""Every invalid config value → one line naming the key, the value, why and the fix; exit 2."""

from __future__ import annotations

import textwrap

import pytest

from catchup.config import parse_config
from catchup.errors import ConfigError
from tests.conftest import run_cli

GOOD = """
repository = "/tmp/repo"
work_dir = "/tmp/work"
[[shards]]
keyspace = "commerce"
shard = "-80"
source = "db1:3306"
credentials = { password_env = "DB_PW" }
"""


def config_with(extra: str = "", replace: tuple[str, str] | None = None, table: str = "") -> str:
    text = GOOD
    if replace:
        assert replace[0] in text
        text = text.replace(*replace)
    # top-level keys come before the first table; tables go after the shards
    return textwrap.dedent(extra) + text + table


BAD = [
    # (description, toml, expected key in message, expected words)
    ("unknown key", config_with("paralel = 3\n"), "paralel", "unknown key"),
    ("parallel zero", config_with("parallel = 0\n"), "parallel = 0", "at least 1"),
    ("parallel text", config_with('parallel = "two"\n'), "parallel = 'two'", "whole number"),
    (
        "missing repository",
        config_with(replace=('repository = "/tmp/repo"\n', "")),
        "repository",
        "required",
    ),
    (
        "unsupported store",
        config_with(replace=('"/tmp/repo"', '"ftp://x/y"')),
        "repository",
        "not supported",
    ),
    (
        "bad engine",
        config_with(replace=('source = "db1:3306"', 'engine = "oracle"\nsource = "db1:3306"')),
        "shards[0].engine = 'oracle'",
        "allowed values",
    ),
    (
        "no port",
        config_with(replace=('"db1:3306"', '"db1"')),
        "shards[0].source = 'db1'",
        "host:port",
    ),
    (
        "port range",
        config_with(replace=('"db1:3306"', '"db1:70000"')),
        "shards[0].source",
        "1-65535",
    ),
    (
        "source and socket",
        config_with(replace=('source = "db1:3306"', 'source = "db1:3306"\nsocket = "/run/m.sock"')),
        "shards[0]",
        "exactly one of source",
    ),
    (
        "bad role",
        config_with(replace=('source = "db1:3306"', 'source = "db1:3306"\nrole = "master"')),
        "shards[0].role = 'master'",
        "allowed values",
    ),
    (
        "slash in keyspace",
        config_with(replace=('"commerce"', '"com/merce"')),
        "shards[0].keyspace = 'com/merce'",
        "letters, digits",
    ),
    (
        "two passwords",
        config_with(
            replace=(
                '{ password_env = "DB_PW" }',
                '{ password_env = "DB_PW", password_file = "/x" }',
            )
        ),
        "shards[0].credentials",
        "not both",
    ),
    (
        "retention",
        config_with(table="[retention]\nmin_count = 0\n"),
        "retention.min_count = 0",
        "at least 1",
    ),
    (
        "compression",
        config_with(table="[compression]\nlevel = 30\n"),
        "compression.level = 30",
        "at most 22",
    ),
    (
        "kms endpoint",
        config_with(table='[encryption]\nkms_key = "alias/x"\nkms_endpoint = "kms.local"\n'),
        "encryption.kms_endpoint = 'kms.local'",
        "must be an http(s) URL",
    ),
    ("no shards", 'repository = "/tmp/r"\nshards = []\n', "shards", "add at least one"),
    (
        "duplicate shard",
        GOOD + GOOD.split("[[shards]]")[1].join(["[[shards]]", ""]),
        "shards[1]",
        "listed twice",
    ),
    (
        "bad cron",
        config_with(table='[schedule]\ncron = "every day"\n'),
        "schedule.cron = 'every day'",
        "five fields",
    ),
    (
        "bad window",
        config_with(table='[schedule]\nwindow = "1am-5am"\n'),
        "schedule.window = '1am-5am'",
        "HH:MM-HH:MM",
    ),
    (
        "bad time zone",
        config_with(table='[schedule]\ntimezone = "Mars/Olympus"\n'),
        "schedule.timezone = 'Mars/Olympus'",
        "IANA name",
    ),
    (
        "schedule for an unknown shard",
        config_with(table='[schedule.shards."commerce/-40"]\ncron = "0 2 * * *"\n'),
        "schedule.shards.'commerce/-40'",
        "no such shard",
    ),
    (
        "keyspace schedule with a bad cron",
        config_with(table='[schedule.keyspaces.commerce]\ncron = "61 * * * *"\n'),
        "schedule.keyspaces.commerce.cron = '61 * * * *'",
        "five fields",
    ),
    (
        "daemon listen",
        config_with(table='[daemon]\nlisten = "8420"\n'),
        "daemon.listen = '8420'",
        "host:port",
    ),
    (
        "on_terminate",
        config_with(table='[daemon]\non_terminate = "wait"\n'),
        "daemon.on_terminate = 'wait'",
        "allowed values",
    ),
]


@pytest.mark.parametrize(("name", "text", "key", "why"), BAD, ids=[b[0] for b in BAD])
def test_each_bad_value_gets_one_clear_line(name, text, key, why):
    import tomllib

    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(text), "catchup.toml")
    message = str(caught.value)
    assert message.count("\n") == 0, message
    assert key in message and why in message, message


def test_cli_reports_a_bad_value_in_one_line_with_exit_code_2(tmp_path):
    path = tmp_path / "catchup.toml"
    path.write_text(config_with("parallel = -1\n"))
    result = run_cli("list", "-c", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "parallel = -1" in lines[0] and "at least 1" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "does not exist"), ("repository = [", "not valid TOML")],
)
def test_cli_missing_or_broken_file(tmp_path, content, expected):
    path = tmp_path / "catchup.toml"
    if content is not None:
        path.write_text(content)
    result = run_cli("list", env={"CATCHUP_CONFIG": str(path)})
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_password_env_must_be_set_when_used(tmp_path):
    path = tmp_path / "catchup.toml"
    path.write_text(config_with())
    result = run_cli("check", "-c", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "credentials.password_env = 'DB_PW'" in result.stderr
    assert "export DB_PW" in result.stderr and "Traceback" not in result.stderr


def test_unknown_shard_name_lists_the_known_ones(tmp_path):
    path = tmp_path / "catchup.toml"
    path.write_text(config_with())
    result = run_cli("list", "nope", "-c", str(path))
    assert result.returncode == 2
    assert "shard 'nope' is not in the config" in result.stderr
    assert "commerce/-80" in result.stderr


def test_backup_without_selection_is_a_usage_error(tmp_path):
    path = tmp_path / "catchup.toml"
    path.write_text(config_with())
    result = run_cli("backup", "-c", str(path))
    assert result.returncode == 2 and "--all" in result.stderr


def test_serve_without_an_api_token_is_refused_in_one_line(tmp_path):
    path = tmp_path / "catchup.toml"
    path.write_text(
        f'repository = "{tmp_path}/repo"\n[[shards]]\nkeyspace = "k"\nshard = "0"\n'
        'source = "127.0.0.1:1"\n'
    )
    result = run_cli("serve", "-c", str(path), env={"CATCHUP_API_TOKEN": ""})
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "CATCHUP_API_TOKEN" in result.stderr
    assert "openssl rand" in result.stderr and "Traceback" not in result.stderr
