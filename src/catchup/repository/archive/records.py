"""Archive records: their fields, and how one is stored (sealed or checksummed)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import AwareDatetime, Field, ValidationError, field_validator

from catchup.codec.encryption import DecryptionError, seal, unseal
from catchup.codec.keys import Keyring
from catchup.errors import CatchupError, IntegrityError, KeyUnavailableError
from catchup.repository.envelope import BackupKeys, canonical_json
from catchup.repository.manifest import Model

FORMAT = "catchup-archive-index"
VERSION = 1
SEALED = b"catchup sealed archive index "
# index/<seq>.json: one record; index/<first>-<last>.json: a batch of consecutive ones.
INDEX_OBJECT = re.compile(r"^(\d{12})(?:-(\d{12}))?\.json$")
FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.~-]*$")  # one path segment, no '..'

# How the engine orders two positions: -1, 0, 1, or None (different histories).
Compare = Callable[[str, str], "int | None"]


class ArchiveConflictError(CatchupError):
    """Another archiver wrote the record this one was about to write."""


def archive_prefix(keyspace: str, shard: str) -> str:
    return f"{keyspace}/{shard}/archive/"


def record_key(prefix: str, seq: int) -> str:
    return f"{prefix}index/{seq:012d}.json"


def batch_key(prefix: str, first: int, last: int) -> str:
    return f"{prefix}index/{first:012d}-{last:012d}.json"


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


def record_digest(record: ArchiveRecord) -> str:
    return hashlib.sha256(canonical_json(record.model_dump(mode="json"))).hexdigest()


Wrapped = tuple[str, bytes]  # a session's data key: the wrapping key's id, the wrapped key


def encode_index(
    records: list[ArchiveRecord],
    wraps: dict[str, Wrapped],
    keys: BackupKeys | None,
    session: str,
    key: str,
) -> bytes:
    """One index object: a record, or a batch of consecutive ones, with the wrapped data
    keys of their sessions; sealed with the writing session's key (bound to `key`), or
    checksummed without keys."""
    body = canonical_json(
        {
            "records": [record.model_dump(mode="json") for record in records],
            "sessions": {
                name: {"key_id": key_id, "wrapped_data_key": base64.b64encode(wrapped).decode()}
                for name, (key_id, wrapped) in sorted(wraps.items())
                if any(record.session == name for record in records)
            },
        }
    )
    document: dict[str, object] = {"format": FORMAT, "version": VERSION}
    if keys is None:
        document |= {"sha256": hashlib.sha256(body).hexdigest(), "index": json.loads(body)}
    else:
        document |= {
            "encryption": {
                **keys.describe(),
                "session": session,
                "wrapped_data_key": base64.b64encode(keys.wrapped).decode(),
            },
            "sealed_index": base64.b64encode(
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

    def unwrap(self, wrap: Wrapped, context: str) -> bytes:
        found = self.known.get(wrap)
        if found is None:
            key = self.keyring.get(wrap[0], f"archive {context}")
            found = self.known[wrap] = key.unwrap(wrap[1], context.encode())
        return found


def session_context(prefix: str, session: str) -> str:
    """What a session's data key is wrapped for: it opens no other shard's records."""
    return f"{prefix}session/{session}"


@dataclass
class Decoded:
    """An index object's records, each with its session's data key (None: plain)."""

    records: list[tuple[ArchiveRecord, bytes | None]]
    wraps: dict[str, Wrapped]


def decode_index(
    blob: bytes, key: str, keys: SessionKeys, read_plain: bool, prefix: str
) -> Decoded:
    """The records stored as `key`; IntegrityError if it was altered, is not sealed while
    keys are configured, or was stored elsewhere first."""
    try:
        document = json.loads(blob)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError("not a catchup archive index object")
        if document.get("version") != VERSION:
            raise IntegrityError(
                f"archive index {key} has version {document.get('version')}; this catchup "
                f"reads version {VERSION}, upgrade it"
            )
        if "sealed_index" in document:
            return _open_sealed(document, key, keys, prefix)
        if not read_plain:
            raise IntegrityError(
                f"archive index {key} is not encrypted although encryption is configured: "
                "anyone with write access to the store could have written it; refused"
            )
        if hashlib.sha256(canonical_json(document["index"])).hexdigest() != document["sha256"]:
            raise IntegrityError(f"archive index {key} does not match its checksum")
        records = [ArchiveRecord.model_validate(r) for r in document["index"]["records"]]
        return Decoded([(record, None) for record in records], {})
    except KeyUnavailableError:
        raise
    except DecryptionError as exc:
        raise IntegrityError(f"archive index {key}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "fields"
        raise IntegrityError(
            f"archive index {key} is invalid ({where}: {first['msg']}): altered or damaged"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise IntegrityError(
            f"archive index {key} is unreadable ({type(exc).__name__}): altered or damaged"
        ) from None


def _wrap(fields: object) -> Wrapped:
    if not isinstance(fields, dict) or not isinstance(fields.get("key_id"), str):
        raise ValueError("a session's key is not an object with a key_id string")
    return fields["key_id"], base64.b64decode(fields["wrapped_data_key"], validate=True)


def _open_sealed(document: dict[str, object], key: str, keys: SessionKeys, prefix: str) -> Decoded:
    envelope = document["encryption"]
    sealed = document["sealed_index"]
    if not isinstance(envelope, dict) or not isinstance(sealed, str):
        raise ValueError("encryption is not an object, or sealed_index not a string")
    session = envelope["session"]
    if not isinstance(session, str):
        raise ValueError("the sealing session is not a string")
    data_key = keys.unwrap(_wrap(envelope), session_context(prefix, session))
    body = json.loads(
        unseal(
            data_key,
            base64.b64decode(sealed, validate=True),
            SEALED + key.encode(),
            "failed authentication: it was altered, damaged or moved",
        )
    )
    wraps = {name: _wrap(fields) for name, fields in body["sessions"].items()}
    records: list[tuple[ArchiveRecord, bytes | None]] = []
    for fields in body["records"]:
        record = ArchiveRecord.model_validate(fields)
        if record.session not in wraps:
            raise IntegrityError(f"archive index {key}: no key for session {record.session}")
        wrap = wraps[record.session]
        records.append((record, keys.unwrap(wrap, session_context(prefix, record.session))))
    return Decoded(records, wraps)
