"""Key-encryption keys held in AWS KMS, or any service that speaks its API.

The data key of each backup goes to KMS `Encrypt` and is stored only as the
ciphertext KMS returns; KMS never hands out its key, and logs every `Decrypt`.
The backup's prefix is the encryption context, so a wrapped data key cannot be
replayed into another backup. The manifest records the key's ARN as KMS
resolved it; a backup opens only when that ARN is `kms_key`'s (resolved with
`DescribeKey`) or one of `kms_previous_keys`' (see keys.Keyring), so after an
alias is pointed at a new key, its old target goes into `kms_previous_keys`.
Credentials come from the standard AWS chain (environment, profile, instance
or web identity), never from catchup's config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from catchup.codec.encryption import DecryptionError
from catchup.errors import CatchupError, KeyUnavailableError

KMS_PREFIX = "kms:"  # manifests name a KMS key "kms:" and its ARN
CONTEXT_KEY = "catchup-backup"
WRONG_KEY = ("InvalidCiphertextException", "IncorrectKeyException")


class KmsError(CatchupError):
    """KMS refused or could not be reached."""


class KmsService:
    """A KMS, as the keyring's `keys.KeyService`."""

    prefix = KMS_PREFIX

    def __init__(self, region: str | None, endpoint: str | None) -> None:
        self.where = f"KMS at {endpoint or region or 'the default region'}"
        try:
            self.client = boto3.client(
                "kms",
                region_name=region,
                endpoint_url=endpoint,
                config=BotoConfig(
                    retries={"mode": "standard", "max_attempts": 5},
                    connect_timeout=10,
                    read_timeout=30,
                ),
            )
        except BotoCoreError as exc:
            raise KmsError(f"{self.where}: {exc}; set encryption.kms_region") from None

    def key(self, key_id: str) -> KmsKey:
        return KmsKey(KMS_PREFIX + key_id, key_id, self)

    def arn(self, key_id: str) -> str:
        """The ARN of a key given by id, ARN or alias: what manifests record."""
        if key_id.startswith("arn:") and ":key/" in key_id:
            return key_id
        arn: str = self.call(key_id, "describe_key", KeyId=key_id)["KeyMetadata"]["Arn"]
        return arn

    def call(self, key_id: str, action: str, **arguments: object) -> dict[str, Any]:
        """The answer of boto3's KMS client: untyped, as boto3 ships no types."""
        try:
            answer: dict[str, Any] = getattr(self.client, action)(**arguments)
            return answer
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "error")
            if action == "decrypt" and code == "AccessDeniedException":
                # Most often a permission (kms:Decrypt) was taken away: a configuration
                # problem that must not make every backup look damaged and bootstrap.
                raise KeyUnavailableError(
                    f"{self.where}: the wrapped data key does not open with KMS key {key_id} "
                    f"({code}): the credentials may not use it (kms:Decrypt), or it is not the "
                    "key that wrapped it; check the key policy and encryption.kms_key"
                ) from None
            if code in WRONG_KEY:
                raise DecryptionError(
                    f"the wrapped data key does not open with KMS key {key_id} ({code}): wrong "
                    "key, or the manifest was altered"
                ) from None
            message = error.get("Message") or "no message"
            raise KmsError(
                f"{self.where}: {action} with key {key_id} was refused ({code}: {message}); "
                "check encryption.kms_key and that the credentials may use it"
            ) from None
        except BotoCoreError as exc:
            raise KmsError(f"{self.where}: {action} with key {key_id} failed: {exc}") from None


@dataclass(frozen=True)
class KmsKey:
    key_id: str  # "kms:" and the key as configured or as recorded in a manifest
    kms_key_id: str
    service: KmsService = field(repr=False, compare=False)

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        answer = self._ask("encrypt", context, Plaintext=data_key)
        wrapped: bytes = answer["CiphertextBlob"]
        return KMS_PREFIX + answer["KeyId"], wrapped

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        plaintext: bytes = self._ask("decrypt", context, CiphertextBlob=wrapped)["Plaintext"]
        return plaintext

    def _ask(self, action: str, context: bytes, **arguments: object) -> dict[str, Any]:
        return self.service.call(
            self.kms_key_id,
            action,
            KeyId=self.kms_key_id,
            EncryptionContext={CONTEXT_KEY: context.decode()},
            **arguments,
        )
