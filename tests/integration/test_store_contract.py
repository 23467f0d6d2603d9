"""The compare-and-swap the shard lease relies on, on every store this machine can
run: a local directory, S3 (moto, on loopback) and Azure (Azurite, on loopback)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from catchup.config import StorageSettings
from catchup.errors import ShardBusyError
from catchup.fleet.lease import RepositoryLeaser
from catchup.storage import Store
from catchup.storage.cloud import CloudStore
from catchup.storage.local import LocalStore
from tests.integration.test_azure_repository import (
    ACCOUNT,
    ACCOUNT_KEY,
    azurite_port,
    create_container,
)
from tests.integration.test_s3_repository import CREDENTIALS, make_bucket, moto_port

__all__ = ["azurite_port", "moto_port"]  # module fixtures, shared with those test files
pytestmark = pytest.mark.integration
KEY = "ks/0/lease.json"


@pytest.fixture(params=["local", "s3", "azure"])
def store(request, tmp_path, monkeypatch) -> Iterator[Store]:
    name = f"cas-{secrets.token_hex(4)}"
    if request.param == "local":
        yield LocalStore(tmp_path / "repo")
        return
    if request.param == "s3":
        port = request.getfixturevalue("moto_port")
        for variable, value in CREDENTIALS.items():
            monkeypatch.setenv(variable, value)
        make_bucket(port, name)
        settings = StorageSettings(
            endpoint=f"http://127.0.0.1:{port}", region="us-east-1", path_style=True
        )
        yield CloudStore(f"s3://{name}/backups", settings)
        return
    port = request.getfixturevalue("azurite_port")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", ACCOUNT_KEY)
    create_container(port, name)
    settings = StorageSettings(endpoint=f"http://127.0.0.1:{port}/{ACCOUNT}")
    yield CloudStore(f"az://{name}/backups", settings)


def test_create_only_if_absent(store):
    version = store.create(KEY, b"first")
    assert version
    assert store.create(KEY, b"second") is None
    assert store.read_versioned(KEY) == (b"first", version)
    assert store.read_versioned("ks/0/absent.json") is None


def test_replace_only_at_the_read_version(store):
    first = store.create(KEY, b"first")
    second = store.replace(KEY, b"second", first)
    assert second and second != first
    assert store.replace(KEY, b"stale", first) is None, "a write since the read wins"
    assert store.read_versioned(KEY) == (b"second", second)
    assert store.replace("ks/0/absent.json", b"x", first) is None


def test_of_racing_creators_exactly_one_wins(store):
    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(lambda i: store.create(KEY, f"runner {i}".encode()), range(8)))
    assert sum(v is not None for v in versions) == 1


def test_of_racing_replacers_exactly_one_wins(store):
    base = store.create(KEY, b"base")
    with ThreadPoolExecutor(4) as pool:
        versions = list(pool.map(lambda i: store.replace(KEY, f"r{i}".encode(), base), range(8)))
    assert sum(v is not None for v in versions) == 1


def test_the_repository_lease_holds_on_the_store(store):
    lease = RepositoryLeaser(store, 60).acquire("ks", "0")
    with pytest.raises(ShardBusyError, match="repository lease"):
        RepositoryLeaser(store, 60).acquire("ks", "0")
    lease.renew()
    lease.confirm()
    lease.release()
    RepositoryLeaser(store, 60).acquire("ks", "0").confirm()
    assert [obj.key for obj in store.list("")] == [KEY], "the lease is its only object"
