"""Defects a review found in the issue 12 work: hostile manifests that are not objects,
markup in stored names, retention and clock skew, the plain-manifest cutoff, key problems
that look like damage, and restore targets that cannot be written."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from catchup.codec.keys import Keyring, generate_key_file
from catchup.repository import Repository
from catchup.repository.layout import new_backup_id
from catchup.storage.local import LocalStore
from tests.conftest import run_cli
from tests.unit.test_manifest_trust import backup, cli_config, plant
from tests.unit.test_repository import make_data_dir


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    generate_key_file(tmp_path / "key.json")
    return tmp_path / "key.json"


# --- item 2: a manifest that is not an object is damaged, not a crash ---------------------

NOT_OBJECTS = {
    "list": "[]",
    "null": "null",
    "string": '"x"',
    "numeric key_id": json.dumps(
        {
            "format": "catchup-manifest",
            "version": 1,
            "encryption": {"key_id": 5, "wrapped_data_key": ""},
            "sealed_manifest": "",
        }
    ),
    "encryption a list": json.dumps(
        {"format": "catchup-manifest", "version": 1, "encryption": [], "sealed_manifest": ""}
    ),
    "manifest a list": json.dumps(
        {"format": "catchup-manifest", "version": 1, "sha256": "0", "manifest": []}
    ),
}


@pytest.mark.parametrize("keyed", [False, True])
def test_a_manifest_that_is_not_an_object_is_reported_damaged(tmp_path, key_file, keyed):
    repo_dir = tmp_path / "repo"
    keyring = Keyring.from_files([key_file]) if keyed else Keyring()
    real = backup(Repository(LocalStore(repo_dir), keyring), make_data_dir(tmp_path))
    planted = {}
    for what, blob in NOT_OBJECTS.items():
        backup_id = new_backup_id()
        (repo_dir / "ks" / "s1" / backup_id).mkdir(parents=True)
        (repo_dir / "ks" / "s1" / backup_id / "manifest.json").write_text(blob)
        planted[backup_id] = what
    catalog = Repository(LocalStore(repo_dir), keyring).catalog()
    assert [m.backup_id for m in catalog.backups] == [real.backup_id]
    assert {d.backup_id for d in catalog.damaged} == set(planted)
    for damaged in catalog.damaged:
        # keyed, a plain one is refused as not encrypted before its fields are read
        expected = (
            "not encrypted"
            if planted[damaged.backup_id] == "manifest a list" and keyed
            else "altered or damaged"
        )
        assert expected in damaged.reason, (planted[damaged.backup_id], damaged)

    config = str(cli_config(tmp_path, key_file) if keyed else plain_config(tmp_path))
    listed = run_cli("list", "--json", "-c", config)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    states = {entry["id"]: entry["state"] for entry in json.loads(listed.stdout)}
    assert states == {real.backup_id: "ok", **{i: "damaged" for i in planted}}


def plain_config(tmp_path: Path, extra: str = "") -> Path:
    """cli_config without encryption."""
    path = cli_config(tmp_path, tmp_path / "unused")
    text = path.read_text()
    path.write_text(text[: text.index("[encryption]")] + extra)
    return path


# --- item 3: markup in store keys and manifest fields is printed, not interpreted ---------


def test_markup_in_store_keys_and_manifest_fields_is_quoted_everywhere(tmp_path):
    """Extends test_manifest_trust's markup test to the tables of list, show, check, prune."""
    repo_dir = tmp_path / "repo"
    planted = plant(repo_dir, new_backup_id(), position="[/x]").parent.name
    # keyspace "k[" and shard "x]s" print as "k[/x]s": a damaged manifest and an old
    # incomplete prefix there.
    damaged_id = new_backup_id(datetime.now(UTC) - timedelta(minutes=1))
    (repo_dir / "k[" / "x]s" / damaged_id).mkdir(parents=True)
    (repo_dir / "k[" / "x]s" / damaged_id / "manifest.json").write_text("[]")
    leftover = repo_dir / "k[" / "x]s" / "20200101T000000000Z-abcdef" / "data"
    leftover.mkdir(parents=True)
    (leftover / "000000.zst").write_bytes(b"x")
    old = time.time() - 30 * 86400
    os.utime(leftover / "000000.zst", (old, old))
    config = str(plain_config(tmp_path))

    crashed = []  # every command is tried, so that each one is proven
    for command in (["list"], ["show", planted], ["check"], ["prune", "--dry-run"]):
        done = run_cli(*command, "-c", config)
        if "Traceback" in done.stderr or done.returncode not in (0, 1):
            crashed.append((command[0], done.stderr.strip().splitlines()[-1:]))
            continue
        if command[0] in ("list", "check"):
            assert "k[/x]s" in done.stdout, (command, done.stdout)
        if command[0] in ("list", "show"):
            assert "[/x]" in done.stdout.replace("k[/x]s", ""), (command, done.stdout)
        if command[0] == "prune":
            line = "would remove k[/x]s 20200101T000000000Z-abcdef (incomplete)"
            assert line in done.stdout, done.stdout
    assert crashed == []
