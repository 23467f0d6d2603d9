"""Key-encryption keys: key files (`catchup keygen`) and the keyring of a config.

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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from catchup.errors import ConfigError, IntegrityError


@dataclass(frozen=True)
class Key:
    key_id: str
    secret: bytes = field(repr=False)


def key_id_of(secret: bytes) -> str:
    return "k-" + hmac.new(secret, b"catchup key id", hashlib.sha256).hexdigest()[:16]


def generate_key_file(path: Path) -> Key:
    secret = os.urandom(32)
    key = Key(key_id_of(secret), secret)
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


def load_key_file(path: Path, setting: str) -> Key:
    try:
        document = json.loads(path.read_text())
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
    return Key(claimed, secret)


@dataclass(frozen=True)
class Keyring:
    """The active key (for new backups) and every older key (for restores)."""

    keys: tuple[Key, ...] = ()

    @classmethod
    def from_files(cls, paths: list[Path]) -> Keyring:
        return cls(
            tuple(load_key_file(p, f"encryption.key_files[{i}]") for i, p in enumerate(paths))
        )

    @property
    def active(self) -> Key | None:
        return self.keys[0] if self.keys else None

    def get(self, key_id: str, what: str) -> Key:
        for key in self.keys:
            if key.key_id == key_id:
                return key
        configured = ", ".join(k.key_id for k in self.keys) or "none"
        raise IntegrityError(
            f"{what} is encrypted with key {key_id}, which is not configured (configured: "
            f"{configured}); add its key file to encryption.key_files"
        )
