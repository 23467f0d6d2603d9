"""Store selection by URL, and the local store's atomic writes."""

from __future__ import annotations

import pytest

from catchup.config import StorageSettings
from catchup.storage import StorageError, open_store
from catchup.storage.cloud import CloudStore
from catchup.storage.local import LocalStore


@pytest.fixture(autouse=True)
def no_cloud_credential_lookups(monkeypatch):
    """Explicit credentials: without them a client may query a cloud metadata
    address, and tests talk to loopback only."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "dGVzdA==")


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("/var/backups/catchup", LocalStore),
        ("file:///var/backups/catchup", LocalStore),
        ("s3://bucket/prefix", CloudStore),
        ("gs://bucket/prefix", CloudStore),
        ("az://container/prefix", CloudStore),
    ],
)
def test_the_url_chooses_the_store(url, kind):
    store = open_store(url, StorageSettings(endpoint="http://127.0.0.1:9", region="us-east-1"))
    assert isinstance(store, kind)


def test_a_failed_local_write_leaves_no_object(tmp_path):
    store = LocalStore(tmp_path)
    with pytest.raises(RuntimeError), store.writer("ks/0/id/data/000000.zst") as stream:
        stream.write(b"half")
        raise RuntimeError("killed mid-write")
    assert list(store.list("")) == []
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_keys_cannot_escape_the_root(tmp_path):
    store = LocalStore(tmp_path)
    for key in ("../x", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(StorageError, match="invalid object key"):
            store.put(key, b"x")


def test_an_unreachable_s3_endpoint_is_one_clear_line():
    settings = StorageSettings(
        endpoint="http://127.0.0.1:9", region="us-east-1", max_retries=0, connect_timeout_seconds=1
    )
    store = open_store("s3://bucket/prefix", settings)
    with pytest.raises(StorageError) as caught:
        store.get("ks/0/x/manifest.json")
    message = str(caught.value)
    assert message.startswith("s3://bucket/prefix: cannot read ks/0/x/manifest.json:")
    assert "\n" not in message
