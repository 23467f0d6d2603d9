"""The object-store servers the tests start on loopback (moto for S3, Azurite for
Azure), and the list of stores that tests/integration/test_store_contract.py runs
against. A new store gets the whole contract suite by one entry in STORES.

GCS is not in the list yet: obstore's GCS client speaks the XML API, and neither
emulator on PyPI serves it (fake-gcs-server answers its PUT "invalid uploadType";
gcp-storage-emulator sends no ETag and cannot list or HEAD)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import sys
import urllib.request
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path

import pytest

from catchup.config import StorageSettings
from catchup.storage import Store
from catchup.storage.cloud import CloudStore
from catchup.storage.local import LocalStore
from tests.conftest import REPO, serve_on_loopback

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "catchup-test", "AWS_SECRET_ACCESS_KEY": "catchup-test-secret"}
# Azurite's documented development account: public, not a secret.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE = REPO / "tools" / "node_modules" / ".bin" / "azurite-blob"
# The smallest part S3 accepts: contract tests cross part boundaries with a few MB.
PART_SIZE_MB = 5


@pytest.fixture(scope="module")
def moto_port() -> Iterator[int]:
    moto = str(Path(sys.executable).parent / "moto_server")
    with serve_on_loopback(lambda port: [moto, "-H", "127.0.0.1", "-p", str(port)], "moto") as port:
        yield port


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


def make_bucket(port: int, name: str) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/{name}", method="PUT")
    urllib.request.urlopen(request, timeout=10).close()


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


def local_store(request: pytest.FixtureRequest, name: str) -> Store:
    return LocalStore(request.getfixturevalue("tmp_path") / name)


def s3_store(request: pytest.FixtureRequest, name: str) -> Store:
    port = request.getfixturevalue("moto_port")
    monkeypatch = request.getfixturevalue("monkeypatch")
    for variable, value in CREDENTIALS.items():
        monkeypatch.setenv(variable, value)
    make_bucket(port, name)
    settings = StorageSettings(
        endpoint=f"http://127.0.0.1:{port}",
        region="us-east-1",
        path_style=True,
        part_size_mb=PART_SIZE_MB,
    )
    return CloudStore(f"s3://{name}/backups", settings)


def azure_store(request: pytest.FixtureRequest, name: str) -> Store:
    port = request.getfixturevalue("azurite_port")
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", ACCOUNT)
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", ACCOUNT_KEY)
    create_container(port, name)
    settings = StorageSettings(
        endpoint=f"http://127.0.0.1:{port}/{ACCOUNT}", part_size_mb=PART_SIZE_MB
    )
    return CloudStore(f"az://{name}/backups", settings)


# Every store the contract suite runs on: name -> a factory given the test's request
# and a fresh bucket name. Add a store here and it runs every contract test.
STORES: dict[str, Callable[[pytest.FixtureRequest, str], Store]] = {
    "local": local_store,
    "s3": s3_store,
    "azure": azure_store,
}


@pytest.fixture(params=list(STORES))
def store(request: pytest.FixtureRequest) -> Store:
    """An empty store of each kind in STORES, in a bucket of its own."""
    return STORES[request.param](request, f"store-{secrets.token_hex(4)}")
