"""The repository on Azure Blob Storage's emulator (Azurite, on loopback)."""

from __future__ import annotations

import json

import pytest

from catchup.codec.keys import generate_key_file
from tests.conftest import run_cli
from tests.integration.stores import ACCOUNT, ACCOUNT_KEY, create_container


@pytest.fixture(autouse=True)
def azure_environment(monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", ACCOUNT_KEY)


def test_encrypted_cycles_restore_verify_prune_on_azure(fleet, azurite_port, short_tmp):
    create_container(azurite_port, "backups")
    source = fleet.add_source()
    generate_key_file(short_tmp / "key.json")
    fleet.write_config(
        repository="az://backups/catchup",
        tables=(
            f'\n[storage]\nendpoint = "http://127.0.0.1:{azurite_port}/{ACCOUNT}"\n'
            f'\n[encryption]\nkey_files = ["{short_tmp / "key.json"}"]\n'
        ),
    )
    [first] = fleet.backup()
    assert first.ok, first.error
    source.apply_workload(0.03)
    [second] = fleet.backup()
    assert second.ok and second.kind == "catchup", second.error
    config = str(fleet.config_path)
    listed = json.loads(run_cli("list", "--json", "-c", config).stdout)
    assert [b["id"] for b in listed] == [first.backup_id, second.backup_id]
    deep = run_cli("verify", "commerce/0", "--deep", "--json", "-c", config)
    assert json.loads(deep.stdout)["verified"], deep.stdout + deep.stderr
    restored = run_cli("restore", "commerce/0", "--target-dir", str(short_tmp / "r"), "-c", config)
    assert restored.returncode == 0, restored.stderr
    fleet.config_path.write_text(
        fleet.config_path.read_text().replace("min_count = 2", "min_count = 1")
    )
    pruned = json.loads(run_cli("prune", "--json", "-c", config).stdout)
    assert [e["id"] for e in pruned["removed"]] == [first.backup_id]
    assert [m.backup_id for m in fleet.repository.backups()] == [second.backup_id]
