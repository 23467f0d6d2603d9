"""The repository on Azure Blob Storage's emulator (Azurite, on loopback)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.request
from collections.abc import Iterator
from email.utils import formatdate

import pytest

from catchup.codec.keys import generate_key_file
from tests.conftest import REPO, run_cli, serve_on_loopback

# Azurite's documented development account: public, not a secret.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE = REPO / "tools" / "node_modules" / ".bin" / "azurite-blob"


@pytest.fixture(scope="module")
def azurite_port(tmp_path_factory) -> Iterator[int]:
    assert AZURITE.exists(), "Azurite is missing: `make test` installs it (tools/)"
    location = str(tmp_path_factory.mktemp("azurite"))

    def command(port: int) -> list[str]:
        return [
            str(AZURITE),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            location,
            "--silent",
            "--skipApiVersionCheck",
        ]

    with serve_on_loopback(command, "Azurite") as port:
        yield port


@pytest.fixture(autouse=True)
def azure_environment(monkeypatch):
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", ACCOUNT_KEY)


def create_container(port: int, name: str) -> None:
    """One SharedKey-signed request: the catchup store never creates containers itself."""
    headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2021-08-06"}
    canonical = "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
    to_sign = "PUT\n" + "\n" * 11 + canonical + f"/{ACCOUNT}/{ACCOUNT}/{name}\nrestype:container"
    digest = hmac.new(base64.b64decode(ACCOUNT_KEY), to_sign.encode(), hashlib.sha256).digest()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/{ACCOUNT}/{name}?restype=container",
        method="PUT",
        headers={
            **headers,
            "Authorization": f"SharedKey {ACCOUNT}:{base64.b64encode(digest).decode()}",
        },
    )
    urllib.request.urlopen(request, timeout=10).close()


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
