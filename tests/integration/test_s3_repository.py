"""The repository on a real S3-compatible server (moto, on loopback), encrypted,
through a proxy that injects 5xx answers, timeouts and dropped uploads."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import boto3
import obstore
import pytest
from obstore.store import S3Store

from catchup.codec.keys import generate_key_file
from tests.conftest import run_cli, serve_on_loopback
from tests.integration.faultproxy import FaultProxy
from tests.integration.stores import CREDENTIALS, make_bucket

MARKER = "S3-MARKER-4b1d-not-in-the-bucket"


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


def s3_config(fleet, port: int, bucket: str, key_file: Path | None, **storage: object) -> None:
    settings = {
        "endpoint": f"http://127.0.0.1:{port}",
        "region": "us-east-1",
        "path_style": True,
        "part_size_mb": 5,
        "request_timeout_seconds": 5,
        **storage,
    }
    tables = "\n[storage]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    if key_file:
        tables += f'\n[encryption]\nkey_files = ["{key_file}"]\n'
    fleet.write_config(repository=f"s3://{bucket}/backups", tables=tables)


def raw_bucket(port: int, bucket: str) -> S3Store:
    """The bucket as the test sees it, bypassing catchup."""
    return S3Store(
        bucket,
        config={
            "endpoint": f"http://127.0.0.1:{port}",
            "region": "us-east-1",
            "virtual_hosted_style_request": False,
            **{
                "access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                "secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            },
        },
        client_options={"allow_http": True},
    )


def bucket_objects(port: int, bucket: str) -> list[str]:
    return [meta["path"] for batch in obstore.list(raw_bucket(port, bucket)) for meta in batch]


def bucket_bytes(port: int, bucket: str) -> bytes:
    store = raw_bucket(port, bucket)
    return b"".join(bytes(obstore.get(store, key).bytes()) for key in bucket_objects(port, bucket))


def add_marked_source(fleet):
    source = fleet.add_source(size_mb=8)
    source.execute(
        "INSERT INTO shop.event_log (happened_at, kind, payload) "
        "VALUES (NOW(), 'marker', JSON_OBJECT('m', %s))",
        (MARKER,),
    )
    return source


def test_encrypted_cycles_list_restore_verify_prune_on_s3(fleet, moto_port, short_tmp):
    make_bucket(moto_port, "e2e")
    source = add_marked_source(fleet)
    key_file = short_tmp / "key.json"
    generate_key_file(key_file)
    s3_config(fleet, moto_port, "e2e", key_file)
    [first] = fleet.backup()
    assert first.ok, first.error
    for _ in range(2):
        source.apply_workload(0.03)
        [result] = fleet.backup()
        assert result.ok and result.kind == "catchup", result.error
    config = str(fleet.config_path)
    listed = json.loads(run_cli("list", "--json", "-c", config).stdout)
    assert [b["kind"] for b in listed] == ["bootstrap", "catchup", "catchup"]

    stored = bucket_bytes(moto_port, "e2e")
    assert MARKER.encode() not in stored and b"event_log" not in stored

    deep = run_cli("verify", "commerce/0", "--deep", "--json", "-c", config)
    assert deep.returncode == 0 and json.loads(deep.stdout)["verified"], deep.stdout
    target = short_tmp / "restored"
    restored = run_cli("restore", "commerce/0", "--target-dir", str(target), "-c", config)
    assert restored.returncode == 0, restored.stderr
    assert MARKER.encode() in (target / "shop" / "event_log.ibd").read_bytes()
    verify = run_cli("verify", "commerce/0", "--json", "-c", config)
    assert verify.returncode == 0 and json.loads(verify.stdout)["verified"], verify.stdout

    pruned = json.loads(run_cli("prune", "--json", "-c", config).stdout)
    assert [e["id"] for e in pruned["removed"]] == [listed[0]["id"]]
    assert not [k for k in bucket_objects(moto_port, "e2e") if listed[0]["id"] in k]


def test_transient_faults_are_retried(fleet, moto_port, short_tmp):
    make_bucket(moto_port, "flaky")
    source = add_marked_source(fleet)

    def plan(n: int) -> str:
        if n % 5 == 1:
            return "503"
        if n % 7 == 3:
            return "drop:300000"  # mid-upload
        if n == 4:
            return "stall"
        return "pass"

    proxy = FaultProxy(moto_port, plan)
    try:
        generate_key_file(short_tmp / "key.json")
        s3_config(fleet, proxy.port, "flaky", short_tmp / "key.json")
        [first] = fleet.backup()
        assert first.ok, first.error
        source.apply_workload(0.03)
        [second] = fleet.backup()
        assert second.ok, second.error
        assert proxy.done["503"] and proxy.done["drop"] and proxy.done["stall"], proxy.done
        deep = run_cli("verify", "commerce/0", "--deep", "--json", "-c", str(fleet.config_path))
        assert json.loads(deep.stdout)["verified"], deep.stdout
    finally:
        proxy.close()


def test_a_store_that_keeps_failing_fails_the_cycle_cleanly(fleet, moto_port, short_tmp):
    make_bucket(moto_port, "broken")
    source = add_marked_source(fleet)
    generate_key_file(short_tmp / "key.json")
    s3_config(fleet, moto_port, "broken", short_tmp / "key.json")
    [first] = fleet.backup()
    assert first.ok
    source.apply_workload(0.03)
    # Every connection is cut once it has carried 64 KiB: no part upload can finish.
    proxy = FaultProxy(moto_port, lambda n: "drop:65536")
    try:
        s3_config(
            fleet,
            proxy.port,
            "broken",
            short_tmp / "key.json",
            max_retries=2,
            retry_timeout_seconds=10,
        )
        [failed] = fleet.backup()
    finally:
        proxy.close()
    assert not failed.ok
    assert "s3://broken/backups" in failed.error and "cannot write" in failed.error, failed.error
    s3_config(fleet, moto_port, "broken", short_tmp / "key.json")
    assert [m.backup_id for m in fleet.repository.backups()] == [first.backup_id]
    assert not fleet.instance_dirs()
    [retry] = fleet.backup()
    assert retry.ok and retry.parent == first.backup_id


def test_missing_bucket_and_wrong_key_are_clear(fleet, moto_port, short_tmp):
    fleet.add_source()
    generate_key_file(short_tmp / "key.json")
    s3_config(fleet, moto_port, "no-such-bucket", short_tmp / "key.json")
    result = run_cli(
        "backup", "--all", "-c", str(fleet.config_path), env={**os.environ, **CREDENTIALS}
    )
    assert result.returncode == 1
    assert "s3://no-such-bucket/backups: the bucket does not exist" in result.stdout

    make_bucket(moto_port, "keyed")
    s3_config(fleet, moto_port, "keyed", short_tmp / "key.json")
    assert fleet.backup()[0].ok
    generate_key_file(short_tmp / "other.json")
    s3_config(fleet, moto_port, "keyed", short_tmp / "other.json")
    refused = run_cli(
        "restore", "commerce/0", "--target-dir", str(short_tmp / "r"), "-c", str(fleet.config_path)
    )
    assert refused.returncode == 1
    assert "which is not configured" in refused.stderr and "Traceback" not in refused.stderr
    assert not (short_tmp / "r").exists()


def kms_client(port: int):
    return boto3.client("kms", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}")


def kms_config(
    fleet,
    port: int,
    bucket: str,
    kms_key: str | None,
    endpoint: int | None = None,
    previous: list[str] | None = None,
):
    s3_config(fleet, port, bucket, key_file=None)
    if kms_key:
        endpoint = endpoint or port
        with fleet.config_path.open("a") as config:
            config.write(
                f'\n[encryption]\nkms_key = "{kms_key}"\nkms_region = "us-east-1"\n'
                f'kms_endpoint = "http://127.0.0.1:{endpoint}"\n'
                f"kms_previous_keys = {json.dumps(previous or [])}\n"
            )


def test_kms_wraps_data_keys_rotates_and_refuses_clearly(fleet, moto_port, short_tmp):
    """Envelope keys from a KMS (moto's, on the same loopback server as the bucket)."""
    make_bucket(moto_port, "kms")
    source = add_marked_source(fleet)
    kms = kms_client(moto_port)
    first_key, second_key = (kms.create_key()["KeyMetadata"]["Arn"] for _ in range(2))
    kms.create_alias(AliasName="alias/catchup", TargetKeyId=first_key)
    kms_config(fleet, moto_port, "kms", "alias/catchup")
    config = str(fleet.config_path)
    check = run_cli("check", "--json", "-c", config)
    assert "new backups encrypted with kms:alias/catchup" in check.stdout, check.stdout

    [first] = fleet.backup()
    assert first.ok, first.error
    # Rotation: the alias now names a new key; new backups use it, old ones still open
    # once the old key is in kms_previous_keys (no other KMS key is ever used; issue 12).
    kms.update_alias(AliasName="alias/catchup", TargetKeyId=second_key)
    kms_config(fleet, moto_port, "kms", "alias/catchup", previous=[first_key])
    source.apply_workload(0.03)
    [second] = fleet.backup()
    assert second.ok and second.parent == first.backup_id, second.error
    manifests = {m.backup_id: m for m in fleet.repository.backups()}
    assert manifests[first.backup_id].encryption["key_id"] == f"kms:{first_key}"
    assert manifests[second.backup_id].encryption["key_id"] == f"kms:{second_key}"
    stored = bucket_bytes(moto_port, "kms")
    assert MARKER.encode() not in stored and b"event_log" not in stored

    for backup_id in (first.backup_id, second.backup_id):
        deep = run_cli("verify", "commerce/0", backup_id, "--deep", "--json", "-c", config)
        assert deep.returncode == 0 and json.loads(deep.stdout)["verified"], deep.stdout
    target = short_tmp / "restored"
    restored = run_cli("restore", "commerce/0", first.backup_id, "-t", str(target), "-c", config)
    assert restored.returncode == 0, restored.stderr
    assert MARKER.encode() in (target / "shop" / "event_log.ibd").read_bytes()
    outputs = check.stdout + check.stderr + restored.stdout + restored.stderr
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in outputs

    # Without a KMS configured, the backups are refused before anything is written.
    kms_config(fleet, moto_port, "kms", None)
    refused = run_cli("restore", "commerce/0", "-t", str(short_tmp / "none"), "-c", config)
    assert refused.returncode == 1 and not (short_tmp / "none").exists()
    pattern = r"encrypted with key kms:arn:aws:kms:\S+, which is not configured"
    assert re.search(pattern, refused.stderr), refused.stderr
    assert "set encryption.kms_key" in refused.stderr

    # A KMS that does not hold the key (another server) refuses in one line.
    with serve_on_loopback(
        lambda port: [
            str(Path(sys.executable).parent / "moto_server"),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        "kms",
    ) as other:
        kms_config(fleet, moto_port, "kms", "alias/catchup", endpoint=other, previous=[first_key])
        foreign = run_cli("verify", "commerce/0", "--json", "-c", config)
        assert foreign.returncode == 1, foreign.stdout
        assert f"KMS at http://127.0.0.1:{other}" in foreign.stdout + foreign.stderr
        failed_check = run_cli("check", "--json", "-c", config)
        assert failed_check.returncode == 1, failed_check.stdout
        assert f"KMS at http://127.0.0.1:{other}" in failed_check.stdout
        # A cycle finds out in its precheck, before it provisions anything.
        refused_cycle = run_cli("backup", "--all", "-c", config)
        assert refused_cycle.returncode == 1, refused_cycle.stdout
        assert f"KMS at http://127.0.0.1:{other}" in refused_cycle.stdout
        assert "step=precheck" in refused_cycle.stderr
        assert "step=provision" not in refused_cycle.stderr and not fleet.instance_dirs()
        assert "Traceback" not in foreign.stderr + failed_check.stderr

    # A manifest altered to name another key of the same KMS is refused.
    kms_config(fleet, moto_port, "kms", "alias/catchup", previous=[first_key])
    name = f"backups/commerce/0/{first.backup_id}/manifest.json"
    bucket = raw_bucket(moto_port, "kms")
    document = json.loads(bytes(obstore.get(bucket, name).bytes()))
    document["encryption"]["key_id"] = f"kms:{second_key}"
    obstore.put(bucket, name, json.dumps(document).encode())
    altered = run_cli("verify", "commerce/0", first.backup_id, "--json", "-c", config)
    assert altered.returncode == 1
    assert f"does not open with KMS key {second_key}" in altered.stdout + altered.stderr
