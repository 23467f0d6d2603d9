"""How a manifest is stored: checksummed, or sealed when encryption is on.

    plain:      {"format": "catchup-manifest", "version": 1, "sha256": …, "manifest": {…}}
    encrypted:  {"format": "catchup-manifest", "version": 1,
                 "encryption": {"algorithm": …, "key_id": …, "wrapped_data_key": …},
                 "sealed_manifest": base64(AES-GCM(data key, manifest))}

A sealed manifest hides even file and schema names; both forms detect any
altered byte. The data key is stored only wrapped by the key-encryption key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field

from pydantic import ValidationError

from catchup.codec.encryption import ALGORITHM, DecryptionError, seal, unseal
from catchup.codec.keys import Key, Keyring
from catchup.errors import IntegrityError, KeyUnavailableError
from catchup.repository.manifest import FORMAT_VERSION, Manifest

FORMAT = "catchup-manifest"
SEALED = b"catchup sealed manifest "
VERSION = 1


@dataclass(frozen=True)
class BackupKeys:
    """A backup's data key and how it is wrapped."""

    key_id: str
    data_key: bytes = field(repr=False)
    wrapped: bytes

    @classmethod
    def create(cls, key: Key, data_key: bytes, context: str) -> BackupKeys:
        key_id, wrapped = key.wrap(data_key, context.encode())
        return cls(key_id, data_key, wrapped)

    def describe(self) -> dict[str, object]:
        return {"algorithm": ALGORITHM, "key_id": self.key_id}


def canonical_json(fields: dict[str, object]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def encode_manifest(manifest: Manifest, keys: BackupKeys | None, context: str) -> bytes:
    body = canonical_json(manifest.model_dump(mode="json"))
    if keys is None:
        document = {
            "format": FORMAT,
            "version": VERSION,
            "sha256": hashlib.sha256(body).hexdigest(),
            "manifest": manifest.model_dump(mode="json"),
        }
    else:
        document = {
            "format": FORMAT,
            "version": VERSION,
            "encryption": {
                **keys.describe(),
                "wrapped_data_key": base64.b64encode(keys.wrapped).decode(),
            },
            "sealed_manifest": base64.b64encode(
                seal(keys.data_key, body, SEALED + context.encode())
            ).decode(),
        }
    return json.dumps(document, indent=1).encode()


def decode_manifest(
    blob: bytes, keyring: Keyring, context: str, name: str, read_plain: bool = True
) -> tuple[Manifest, bytes | None]:
    """The manifest and, for an encrypted backup, its data key. Refuses any tampering.

    `read_plain` False refuses a plain manifest: when keys are configured, a plain one
    proves nothing (anyone who may write to the bucket can write one).
    """
    try:
        document = json.loads(blob)
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        if document.get("format") != FORMAT:
            raise ValueError("not a catchup manifest")
        if document.get("version") != VERSION:
            raise IntegrityError(
                f"manifest {name} has format version {document.get('version')}; "
                "this catchup reads version 1, upgrade it"
            )
        if "sealed_manifest" in document:
            envelope = document["encryption"]
            if not isinstance(envelope, dict) or not isinstance(envelope.get("key_id"), str):
                raise ValueError("encryption is not an object with a key_id string")
            key = keyring.get(envelope["key_id"], f"backup {context}")
            data_key = key.unwrap(
                base64.b64decode(envelope["wrapped_data_key"], validate=True), context.encode()
            )
            body = unseal(
                data_key,
                base64.b64decode(document["sealed_manifest"], validate=True),
                SEALED + context.encode(),
                "failed authentication: it was altered or damaged",
            )
            return _read_fields(json.loads(body), name), data_key
        if not read_plain:
            raise IntegrityError(
                f"manifest {name} is not encrypted although encryption is configured, so "
                "anyone with write access to the store could have written it; refused. If it "
                "is a backup made before encryption was turned on, set "
                "encryption.read_unencrypted_before to the time encryption was turned on"
            )
        # The checksum covers the fields as stored, before any upgrade of an older format.
        if hashlib.sha256(canonical_json(document["manifest"])).hexdigest() != document["sha256"]:
            raise IntegrityError(
                f"manifest {name} does not match its checksum: it was altered or damaged"
            )
        return _read_fields(document["manifest"], name), None
    except KeyUnavailableError:
        raise  # a configuration problem, told apart from damage by the cycle
    except DecryptionError as exc:
        raise IntegrityError(f"manifest {name}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        # Without the union's member names (files is a list of one format's entries).
        where = (
            ".".join(str(part) for part in first["loc"] if not str(part).startswith("list["))
            or "fields"
        )
        raise IntegrityError(
            f"manifest {name} is invalid ({where}: {first['msg']}): it was altered or damaged"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise IntegrityError(
            f"manifest {name} is unreadable ({type(exc).__name__}): it was altered or damaged"
        ) from None


def _read_fields(fields: object, name: str) -> Manifest:
    if not isinstance(fields, dict):
        raise ValueError("the manifest's fields are not a JSON object")
    if fields.get("format_version", 1) > FORMAT_VERSION:
        raise IntegrityError(
            f"manifest {name} has format {fields['format_version']}, newer than this "
            f"catchup reads ({FORMAT_VERSION}); upgrade catchup to restore it"
        )
    return Manifest.model_validate(fields)
