"""Key-encryption keys: key files (`catchup keygen`), and the keyring of a config,
which also opens the keys a service holds (a KMS, kms.py) through a `KeyService`.
A key-encryption key only ever wraps and unwraps backups' data keys.

A key file is JSON, mode 0600:
    {"catchup_key": 1, "key_id": "k-…", "created_at": "…", "key": "<base64 of 32 bytes>"}
The key id is derived from the key (HMAC-SHA256), so a file cannot claim
another key's id, and the id alone reveals nothing about the key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from catchup.codec.encryption import unwrap_key, wrap_key
from catchup.errors import ConfigError, KeyUnavailableError
from catchup.files import read_private

if TYPE_CHECKING:
    from catchup.config import EncryptionSettings


class Key(Protocol):
    """A key-encryption key."""

    @property
    def key_id(self) -> str: ...

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        """The wrapped data key, and the id of the key that can unwrap it."""
        ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes: ...


class KeyService(Protocol):
    """Keys that a service holds and catchup never sees (a KMS). Manifests name such
    a key `prefix` followed by its canonical name (for a KMS, its ARN)."""

    prefix: str

    def key(self, name: str) -> Key:
        """The key of a name as configured (id, ARN or alias) or as a manifest records it."""
        ...

    def arn(self, name: str) -> str:
        """The canonical name of a key given by any of its names."""
        ...


# Opens the service of the configured region and endpoint (kms.KmsService).
KeyServiceFactory = Callable[[str | None, str | None], KeyService]


@dataclass(frozen=True)
class FileKey:
    """A 256-bit key from a key file; wraps with AES-256-GCM."""

    key_id: str
    secret: bytes = field(repr=False)

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        return self.key_id, wrap_key(self.secret, data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        return unwrap_key(self.secret, wrapped, context)


def key_id_of(secret: bytes) -> str:
    return "k-" + hmac.new(secret, b"catchup key id", hashlib.sha256).hexdigest()[:16]


def generate_key_file(path: Path) -> FileKey:
    secret = os.urandom(32)
    key = FileKey(key_id_of(secret), secret)
    document = {
        "catchup_key": 1,
        "key_id": key.key_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "key": base64.b64encode(secret).decode(),
    }
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"key file '{path}' already exists; choose a new path") from None
    except OSError as exc:
        raise ConfigError(f"cannot create key file '{path}': {exc.strerror}") from None
    with os.fdopen(fd, "w") as stream:
        json.dump(document, stream, indent=1)
        stream.write("\n")
    return key


def load_key_file(path: Path, setting: str) -> FileKey:
    try:
        document = json.loads(read_private(path, setting))
        secret = base64.b64decode(document["key"], validate=True)
        claimed = document["key_id"]
    except OSError as exc:
        raise ConfigError(
            f"{setting} = '{path}': cannot be read ({exc.strerror}); "
            "fix the path or create it with `catchup keygen`"
        ) from None
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{setting} = '{path}': not a catchup key file; create one with `catchup keygen`"
        ) from None
    if len(secret) != 32 or key_id_of(secret) != claimed:
        raise ConfigError(
            f"{setting} = '{path}': the key does not match its key_id; the file "
            "is damaged, restore it from your key backup"
        )
    return FileKey(claimed, secret)


@dataclass(frozen=True)
class Keyring:
    """The active key (for new backups) and every key that may open older ones.

    Key files open the backups whose key id they carry. A KMS opens only backups
    wrapped by `kms_key` or one of `kms_previous_keys`, compared as the ARNs KMS
    resolves them to: a manifest naming any other key (one an attacker controls and
    lets catchup's credentials use, say) is refused without asking KMS.
    """

    keys: tuple[Key, ...] = ()
    kms: KeyService | None = None
    kms_trusted: tuple[str, ...] = ()  # KMS keys as configured: ids, ARNs or aliases

    @classmethod
    def from_files(cls, paths: list[Path]) -> Keyring:
        return cls(
            tuple(load_key_file(p, f"encryption.key_files[{i}]") for i, p in enumerate(paths))
        )

    @classmethod
    def from_settings(cls, settings: EncryptionSettings, kms_service: KeyServiceFactory) -> Keyring:
        """The keyring a config names; `kms_service` is called only when it names KMS keys."""
        files = cls.from_files(settings.key_files).keys
        trusted = tuple(filter(None, (settings.kms_key, *settings.kms_previous_keys)))
        if not trusted:
            return cls(files)
        kms = kms_service(settings.kms_region, settings.kms_endpoint)
        active = (kms.key(settings.kms_key),) if settings.kms_key else ()
        return cls((*active, *files), kms, trusted)

    @property
    def active(self) -> Key | None:
        return self.keys[0] if self.keys else None

    @property
    def configured(self) -> bool:
        """Whether any key is configured: then only sealed manifests are believed."""
        return bool(self.keys or self.kms)

    @cached_property
    def kms_arns(self) -> frozenset[str]:
        """The ARNs of the trusted KMS keys (an alias resolves to the key it names now)."""
        if self.kms is None:
            return frozenset()
        return frozenset(self.kms.arn(name) for name in self.kms_trusted)

    def get(self, key_id: str, what: str) -> Key:
        for key in self.keys:
            if key.key_id == key_id:
                return key
        kms = self.kms if self.kms and key_id.startswith(self.kms.prefix) else None
        arn = key_id.removeprefix(kms.prefix) if kms else ""
        if kms and arn in self.kms_arns:
            return kms.key(arn)
        configured = ", ".join(k.key_id for k in self.keys) or "none"
        if kms:
            configured = ", ".join(sorted(self.kms_arns))
            advice = (
                "if it is one of your keys (one an alias named before, say), add it to "
                "encryption.kms_previous_keys"
            )
        elif self.kms or ":" not in key_id:  # a key file's id never holds one (key_id_of)
            advice = "add its key file to encryption.key_files"
        else:
            advice = "set encryption.kms_key (and kms_region) so that catchup can reach that KMS"
        raise KeyUnavailableError(
            f"{what} is encrypted with key {key_id}, which is not configured (configured: "
            f"{configured}); {advice}"
        )
