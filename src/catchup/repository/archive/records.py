"""Archive records: their fields, and how one is stored (sealed or checksummed)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable
from typing import Literal

from pydantic import AwareDatetime, Field, ValidationError, field_validator

from catchup.codec.encryption import DecryptionError, seal, unseal
from catchup.codec.keys import Keyring
from catchup.errors import CatchupError, IntegrityError, KeyUnavailableError
from catchup.repository.envelope import BackupKeys
from catchup.repository.manifest import Model

FORMAT = "catchup-archive-record"
VERSION = 1
SEALED = b"catchup sealed archive record "
RECORD = re.compile(r"^(\d{12})\.json$")
FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.~-]*$")  # one path segment, no '..'

# How the engine orders two positions: -1, 0, 1, or None (different histories).
Compare = Callable[[str, str], "int | None"]


class ArchiveConflictError(CatchupError):
    """Another archiver wrote the record this one was about to write."""


def archive_prefix(keyspace: str, shard: str) -> str:
    return f"{keyspace}/{shard}/archive/"


def record_key(prefix: str, seq: int) -> str:
    return f"{prefix}index/{seq:012d}.json"


def piece_key(prefix: str, seq: int) -> str:
    return f"{prefix}pieces/{seq:012d}.zst"


class Mark(Model):
    position: str
    time: AwareDatetime | None = None


class ArchiveRecord(Model):
    seq: int = Field(ge=0)
    kind: Literal["piece", "gap"]
    keyspace: str
    shard: str
    session: str  # one archiver run
    source: str  # the identity of the server it streamed from
    file: str = ""  # the log file's name, unique in the shard's history
    offset: int = Field(0, ge=0)
    size: int = Field(0, ge=0)
    hash: str | None = Field(None, pattern=r"^(blake3|sha256):[0-9a-f]{64}$")
    stored_size: int = Field(0, ge=0)
    start: Mark  # the log position before this piece (or where a gap begins)
    end: Mark  # after it (or where the archive resumed)
    written_at: AwareDatetime
    previous: str | None  # sha256 of the previous record's canonical fields
    reason: str = ""  # why there is a gap

    @field_validator("file")
    @classmethod
    def _one_segment(cls, value: str) -> str:
        if value and not FILE_NAME.match(value):
            raise ValueError(f"log file name {value!r} is not a plain file name")
        return value


def _canonical(fields: dict[str, object]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def record_digest(record: ArchiveRecord) -> str:
    return hashlib.sha256(_canonical(record.model_dump(mode="json"))).hexdigest()


def encode_record(record: ArchiveRecord, keys: BackupKeys | None, key: str) -> bytes:
    """Sealed with the session's data key (bound to `key`), or checksummed without keys."""
    body = _canonical(record.model_dump(mode="json"))
    document: dict[str, object] = {"format": FORMAT, "version": VERSION}
    if keys is None:
        document |= {"sha256": hashlib.sha256(body).hexdigest(), "record": json.loads(body)}
    else:
        document |= {
            "encryption": {
                **keys.describe(),
                "session": record.session,
                "wrapped_data_key": base64.b64encode(keys.wrapped).decode(),
            },
            "sealed_record": base64.b64encode(
                seal(keys.data_key, body, SEALED + key.encode())
            ).decode(),
        }
    return json.dumps(document).encode()


class SessionKeys:
    """Unwrapped data keys, by wrapped key: a session's records share one, so a KMS
    is asked once per archiver run, not once per record."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self.known: dict[tuple[str, bytes], bytes] = {}

    def unwrap(self, key_id: str, wrapped: bytes, context: str) -> bytes:
        found = self.known.get((key_id, wrapped))
        if found is None:
            key = self.keyring.get(key_id, f"archive {context}")
            found = self.known[(key_id, wrapped)] = key.unwrap(wrapped, context.encode())
        return found


def session_context(prefix: str, session: str) -> str:
    """What a session's data key is wrapped for: it opens no other shard's records."""
    return f"{prefix}session/{session}"


def decode_record(
    blob: bytes, key: str, keys: SessionKeys, read_plain: bool, prefix: str
) -> tuple[ArchiveRecord, bytes | None]:
    """The record stored as `key` and its session's data key; IntegrityError if it was
    altered, is not sealed while keys are configured, or was stored elsewhere first."""
    try:
        document = json.loads(blob)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError("not a catchup archive record")
        if document.get("version") != VERSION:
            raise IntegrityError(
                f"archive record {key} has version {document.get('version')}; this catchup "
                f"reads version {VERSION}, upgrade it"
            )
        if "sealed_record" in document:
            return _open_sealed(document, key, keys, prefix)
        if not read_plain:
            raise IntegrityError(
                f"archive record {key} is not encrypted although encryption is configured: "
                "anyone with write access to the store could have written it; refused"
            )
        if hashlib.sha256(_canonical(document["record"])).hexdigest() != document["sha256"]:
            raise IntegrityError(f"archive record {key} does not match its checksum")
        return ArchiveRecord.model_validate(document["record"]), None
    except KeyUnavailableError:
        raise
    except DecryptionError as exc:
        raise IntegrityError(f"archive record {key}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "fields"
        raise IntegrityError(
            f"archive record {key} is invalid ({where}: {first['msg']}): altered or damaged"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise IntegrityError(
            f"archive record {key} is unreadable ({type(exc).__name__}): altered or damaged"
        ) from None


def _open_sealed(
    document: dict[str, object], key: str, keys: SessionKeys, prefix: str
) -> tuple[ArchiveRecord, bytes]:
    envelope = document["encryption"]
    if not isinstance(envelope, dict) or not isinstance(envelope.get("key_id"), str):
        raise ValueError("encryption is not an object with a key_id string")
    session = envelope["session"]
    sealed = document["sealed_record"]
    if not isinstance(session, str) or not isinstance(sealed, str):
        raise ValueError("session or sealed_record is not a string")
    data_key = keys.unwrap(
        envelope["key_id"],
        base64.b64decode(envelope["wrapped_data_key"], validate=True),
        session_context(prefix, session),
    )
    body = unseal(
        data_key,
        base64.b64decode(sealed, validate=True),
        SEALED + key.encode(),
        "failed authentication: it was altered, damaged or moved",
    )
    record = ArchiveRecord.model_validate(json.loads(body))
    if record.session != session:
        raise IntegrityError(f"archive record {key} names another session than its envelope")
    return record, data_key
