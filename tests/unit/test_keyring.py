"""The keyring opens a service's keys (a KMS) only through the `KeyService` it is
given, so keys.py needs no KMS code (issue 13: no keys.py <-> kms.py circle). The
service here is a fake: this is the keyring's own logic; tests/integration/
test_repository_trust.py runs the real KMS service against moto."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from catchup.codec.keys import FileKey, Keyring, generate_key_file
from catchup.codec.kms import KMS_PREFIX, KmsService
from catchup.config import EncryptionSettings
from catchup.errors import IntegrityError

ALIASES = {"alias/now": "arn:k/2", "alias/before": "arn:k/1"}


@dataclass
class FakeService:
    region: str | None
    endpoint: str | None
    prefix: str = "svc:"
    asked: list[str] = field(default_factory=list)

    def key(self, name: str) -> FileKey:
        self.asked.append(name)
        return FileKey(self.prefix + name, b"\0" * 32)

    def arn(self, name: str) -> str:
        return ALIASES.get(name, name)


def test_without_kms_keys_the_service_is_never_opened(tmp_path: Path) -> None:
    generate_key_file(tmp_path / "k.json")

    def refuse(region: str | None, endpoint: str | None) -> FakeService:
        raise AssertionError("no KMS key is configured")

    keyring = Keyring.from_settings(EncryptionSettings(key_files=[tmp_path / "k.json"]), refuse)
    assert keyring.kms is None and keyring.active is not None


def test_the_service_opens_only_the_trusted_keys() -> None:
    opened: list[FakeService] = []

    def service(region: str | None, endpoint: str | None) -> FakeService:
        opened.append(FakeService(region, endpoint))
        return opened[-1]

    settings = EncryptionSettings(
        kms_key="alias/now", kms_previous_keys=["alias/before"], kms_region="r-1"
    )
    keyring = Keyring.from_settings(settings, service)
    assert [(s.region, s.endpoint) for s in opened] == [("r-1", None)]
    assert keyring.active is not None and keyring.active.key_id == "svc:alias/now"
    assert keyring.get("svc:arn:k/1", "backup b").key_id == "svc:arn:k/1"
    with pytest.raises(IntegrityError, match=r"add it to encryption\.kms_previous_keys"):
        keyring.get("svc:arn:k/3", "backup b")
    with pytest.raises(IntegrityError, match=r"add its key file to encryption\.key_files"):
        keyring.get("k-0123456789abcdef", "backup b")
    assert opened[0].asked == ["alias/now", "arn:k/1"]


def test_a_kms_key_id_without_a_kms_asks_for_one() -> None:
    with pytest.raises(IntegrityError, match=r"set encryption\.kms_key"):
        Keyring().get(KMS_PREFIX + "arn:aws:kms:r:1:key/x", "backup b")


def test_kms_names_its_keys_with_its_own_prefix() -> None:
    assert KmsService.prefix == KMS_PREFIX == "kms:"
