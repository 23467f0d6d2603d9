"""Store selection by URL, and the local store's atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from catchup.config import StorageSettings, parse_config
from catchup.errors import ConfigError
from catchup.storage import SCHEMES, Scheme, StorageError, open_store
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


def config_of(repository: str) -> None:
    shard = {"keyspace": "k", "shard": "0", "source": "db:3306"}
    parse_config({"repository": repository, "shards": [shard]})


def test_the_url_schemes_are_listed_once_in_storage(monkeypatch, tmp_path):
    """SCHEMES is the one list: a scheme added there is accepted by the config and opened by
    open_store through its opener; without it, both refuse it and name the listed forms."""
    opened: list[str] = []

    def open_memory(url: str, rest: str, settings: StorageSettings | None) -> LocalStore:
        opened.append(rest)
        return LocalStore(tmp_path / rest)

    monkeypatch.setitem(SCHEMES, "mem", Scheme("mem://bucket/prefix", open_memory, bucket=True))
    config_of("mem://bucket/prefix")
    assert isinstance(open_store("mem://bucket/prefix"), LocalStore)
    assert opened == ["bucket/prefix"]
    with pytest.raises(ConfigError, match="names no bucket; write it as mem://bucket/prefix"):
        config_of("mem:///prefix")
    monkeypatch.delitem(SCHEMES, "mem")
    forms = (
        "use a directory path, file://, s3://bucket/prefix, gs://bucket/prefix or "
        "az://container/prefix"
    )
    with pytest.raises(ConfigError) as caught:
        config_of("mem://bucket/prefix")
    assert (
        str(caught.value)
        == f"config: repository = 'mem://bucket/prefix': scheme mem:// is not supported; {forms}"
    )
    with pytest.raises(ConfigError, match="scheme mem:// is not supported"):
        open_store("mem://bucket/prefix")


def test_the_configuration_reference_names_every_scheme():
    reference = Path(__file__).parents[2] / "docs" / "configuration.md"
    [row] = [
        line for line in reference.read_text().splitlines() if line.startswith("| `repository` |")
    ]
    for scheme in SCHEMES.values():
        assert f"`{scheme.example}" in row, scheme.example
