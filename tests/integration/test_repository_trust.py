"""Issue 12 against real servers: a KMS key catchup was not given is never used (moto's
KMS), and planted, damaged or future-dated backups are refused or skipped by `list`,
`restore`, `check`, `prune` and the next real MariaDB cycle, which builds on the newest
intact backup or bootstraps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from catchup.codec import CodecSettings
from catchup.codec.keys import Keyring, generate_key_file
from catchup.codec.kms import KmsService
from catchup.config import EncryptionSettings
from catchup.cycle import LogReporter
from catchup.repository import Repository
from catchup.storage.local import LocalStore
from tests.conftest import run_cli
from tests.integration.test_s3_repository import aws_environment, kms_client
from tests.unit.test_manifest_trust import FUTURE_ID, flip, plant
from tests.unit.test_repository import header, make_data_dir

pytestmark = pytest.mark.integration
__all__ = ["aws_environment"]  # a fixture, imported to be used here


def kms_keyring(port: int, key: str, previous: tuple[str, ...] = ()) -> Keyring:
    return Keyring.from_settings(
        EncryptionSettings(
            kms_key=key,
            kms_previous_keys=list(previous),
            kms_region="us-east-1",
            kms_endpoint=f"http://127.0.0.1:{port}",
        ),
        KmsService,
    )


def write(repo: Repository, data: Path) -> str:
    listing = repo.scan(data, lambda rel: rel.startswith("relay-bin"))
    manifest = repo.write_backup(header("s1"), data, listing, CodecSettings(1), 2)
    return manifest.backup_id


def test_kms_unwraps_only_with_the_configured_key_or_the_allow_list(moto_port, tmp_path):
    kms = kms_client(moto_port)
    ours, theirs, rotated = (kms.create_key()["KeyMetadata"]["Arn"] for _ in range(3))
    kms.create_alias(AliasName="alias/trust", TargetKeyId=ours)
    data = make_data_dir(tmp_path)
    store = LocalStore(tmp_path / "repo")
    first = write(Repository(store, kms_keyring(moto_port, "alias/trust")), data)
    # Someone with write access to the bucket, whose own KMS key catchup's credentials
    # may use, seals a newer backup for the same shard: valid seal, bound to its key.
    forged = write(Repository(store, kms_keyring(moto_port, theirs)), data)

    victim = Repository(store, kms_keyring(moto_port, "alias/trust"))
    assert victim.latest("ks", "s1").backup_id == first
    catalog = victim.catalog()
    assert [m.backup_id for m in catalog.backups] == [first]
    [damaged] = catalog.damaged
    assert damaged.backup_id == forged
    assert f"encrypted with key kms:{theirs}, which is not configured" in damaged.reason
    assert "encryption.kms_previous_keys" in damaged.reason

    # Rotation: the alias now names a new key. The old key's backups open only once it is
    # in kms_previous_keys; new backups record the new key.
    kms.update_alias(AliasName="alias/trust", TargetKeyId=rotated)
    forgetful = Repository(store, kms_keyring(moto_port, "alias/trust"))
    assert {d.backup_id for d in forgetful.catalog().damaged} == {first, forged}
    remembering = Repository(store, kms_keyring(moto_port, "alias/trust", (ours,)))
    third = write(remembering, data)
    catalog = remembering.catalog()
    assert [m.backup_id for m in catalog.backups] == [first, third]
    assert [d.backup_id for d in catalog.damaged] == [forged]
    encryption = {m.backup_id: m.encryption["key_id"] for m in catalog.backups}
    assert encryption == {first: f"kms:{ours}", third: f"kms:{rotated}"}
    remembering.check_objects(catalog.backups[0], jobs=2)  # the old backup still decrypts


class Warnings(LogReporter):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def warn(self, shard: str, message: str) -> None:
        super().warn(shard, message)
        self.seen.append(message)


def test_a_planted_plain_manifest_is_refused_by_list_restore_check_and_the_next_cycle(
    fleet, short_tmp
):
    source = fleet.add_source()
    generate_key_file(short_tmp / "key.json")
    fleet.write_config(tables=f'\n[encryption]\nkey_files = ["{short_tmp / "key.json"}"]\n')
    [first] = fleet.backup()
    assert first.ok, first.error
    repo_dir = fleet.root / "repository"
    plant(
        repo_dir,
        FUTURE_ID,
        path="../../outside/cron.d/x",
        mode=0o104755,
        stored_as=("commerce", "0", FUTURE_ID),
        keyspace="commerce",
        shard="0",
    )
    config = str(fleet.config_path)

    listed = json.loads(run_cli("list", "--json", "-c", config).stdout)
    assert {e["id"]: e["state"] for e in listed} == {first.backup_id: "ok", FUTURE_ID: "damaged"}
    target = short_tmp / "restored"
    restored = run_cli("restore", "commerce/0", "latest", "-t", str(target), "-c", config)
    assert restored.returncode == 0 and first.backup_id in restored.stdout, restored.stderr
    refused = run_cli("restore", "commerce/0", FUTURE_ID, "-t", str(short_tmp / "r"), "-c", config)
    assert refused.returncode == 1 and "is not encrypted" in refused.stderr, refused.stderr
    checked = run_cli("check", "--json", "-c", config)
    assert checked.returncode == 1, checked.stdout
    findings = json.loads(checked.stdout)["repository"]
    assert [f["check"] for f in findings if not f["ok"]] == ["damaged backup"], findings

    source.apply_workload(0.02)
    warnings = Warnings()
    [second] = fleet.backup(reporter=warnings)
    assert second.ok and second.kind == "catchup", second.error
    assert second.parent == first.backup_id
    [warning] = warnings.seen
    assert warning.startswith(f"SKIPPING damaged backup {FUTURE_ID}")
    assert f"building on the newest intact backup {first.backup_id}" in warning
    assert not (short_tmp / "outside").exists() and not (fleet.root / "outside").exists()
    assert not (short_tmp / "r").exists()
    deep = run_cli("verify", "commerce/0", "--deep", "--json", "-c", config)
    assert deep.returncode == 0 and json.loads(deep.stdout)["backup_id"] == second.backup_id


def test_damaged_backups_are_skipped_until_none_is_left_then_the_shard_bootstraps(fleet):
    source = fleet.add_source()
    fleet.write_config()
    [first] = fleet.backup()
    source.apply_workload(0.02)
    [second] = fleet.backup()
    assert first.ok and second.ok, (first.error, second.error)
    shard_dir = fleet.root / "repository" / "commerce" / "0"
    flip(shard_dir / second.backup_id / "manifest.json")
    config = str(fleet.config_path)

    listed = json.loads(run_cli("list", "--json", "-c", config).stdout)
    assert [e["state"] for e in listed] == ["ok", "damaged"]
    assert "altered or damaged" in listed[1]["reason"]
    human = run_cli("list", "-c", config)
    assert "DAMAGED" in human.stdout and human.returncode == 0
    restored = run_cli("restore", "commerce/0", "-t", str(fleet.root / "r1"), "-c", config)
    assert restored.returncode == 0 and first.backup_id in restored.stdout, restored.stderr
    pruned = run_cli("prune", "--json", "-c", config)
    assert pruned.returncode == 0, pruned.stderr
    assert (shard_dir / second.backup_id / "manifest.json").exists()  # kept for a human

    source.apply_workload(0.02)
    warnings = Warnings()
    [third] = fleet.backup(reporter=warnings)
    assert third.ok and third.kind == "catchup" and third.parent == first.backup_id, third.error
    assert any(f"SKIPPING damaged backup {second.backup_id}" in w for w in warnings.seen)

    for backup_id in (first.backup_id, third.backup_id):
        flip(shard_dir / backup_id / "manifest.json")
    refused = run_cli("restore", "commerce/0", "-t", str(fleet.root / "r2"), "-c", config)
    assert refused.returncode == 1 and "no usable backup" in refused.stderr, refused.stderr
    warnings = Warnings()
    [fourth] = fleet.backup(reporter=warnings)
    assert fourth.ok and fourth.kind == "bootstrap", fourth.error
    assert fourth.rebootstrap_reason == "every earlier backup is damaged or future-dated"
    assert any("no usable backup is left, so bootstrapping" in w for w in warnings.seen)
    assert json.loads(run_cli("list", "--json", "-c", config).stdout)[-1]["id"] == (
        fourth.backup_id
    )
