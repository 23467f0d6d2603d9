"""The repository on a real S3-compatible server (moto, on loopback), encrypted,
through a proxy that injects 5xx answers, timeouts and dropped uploads."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import obstore
import pytest
from obstore.store import S3Store

from catchup.codec.keys import generate_key_file
from tests.conftest import run_cli, serve_on_loopback
from tests.integration.faultproxy import FaultProxy

MARKER = "S3-MARKER-4b1d-not-in-the-bucket"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "catchup-test", "AWS_SECRET_ACCESS_KEY": "catchup-test-secret"}


@pytest.fixture(scope="module")
def moto_port() -> Iterator[int]:
    moto = str(Path(sys.executable).parent / "moto_server")
    with serve_on_loopback(lambda port: [moto, "-H", "127.0.0.1", "-p", str(port)], "moto") as port:
        yield port


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch):
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


def make_bucket(port: int, name: str) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/{name}", method="PUT")
    urllib.request.urlopen(request, timeout=10).close()


def s3_config(fleet, port: int, bucket: str, key_file: Path, **storage: object) -> None:
    settings = {
        "endpoint": f"http://127.0.0.1:{port}",
        "region": "us-east-1",
        "path_style": True,
        "part_size_mb": 5,
        "request_timeout_seconds": 5,
        **storage,
    }
    tables = "\n[storage]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
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
