"""The manifest: the one object that makes a backup exist.

It is written last; a backup prefix without one is incomplete and invisible.
Its format is documented in docs/repository-format.md; bump FORMAT_VERSION on
any change a reader of an older version could misread.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

# 2: file hashes are "<algorithm>:<hex>", BLAKE3 for new backups; 3: files are lists of
# content-addressed chunks shared by a shard's backups (repository/chunks/).
FORMAT_VERSION = 3
OBJECT_FORMATS = (1, 2)  # one stored object per file
Kind = Literal["bootstrap", "catchup"]
# The order a manifest's fields are stored and shown in, as before the header was split off.
FIELD_ORDER = (
    *("format_version", "backup_id", "keyspace", "shard", "engine", "server_version", "kind"),
    *("parent", "rebootstrap_reason", "position", "source", "started_at", "created_at"),
    *("bytes_from_source", "data_bytes", "stored_bytes", "durations", "compression"),
    *("encryption", "new_stored_bytes", "chunk_key", "chunk_table", "packs"),
    *("directories", "files"),
)
CHUNK_FIELDS = ("new_stored_bytes", "chunk_key", "chunk_table", "packs")  # format 3 only


class _Named(Protocol):
    @property
    def keyspace(self) -> str: ...

    @property
    def shard(self) -> str: ...

    @property
    def backup_id(self) -> str: ...


class ListedBackup:
    """What every backup `catchup list` shows, intact or damaged, is named by. A mixin
    without fields of its own, so a model's field order stays its own."""

    @property
    def shard_name(self: _Named) -> str:
        return f"{self.keyspace}/{self.shard}"

    def listed(self: _Named, **fields: object) -> dict[str, object]:
        """`fields` after the backup's name: one `catchup list --json` entry."""
        return {"id": self.backup_id, "shard": f"{self.keyspace}/{self.shard}", **fields}


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def relative_path(value: str) -> str:
    """`value` if it is a normalised relative path ('a/b'), which cannot leave the dir it is
    joined to; a manifest naming anything else is refused before anything is read or written."""
    parts = value.split("/")
    if "\0" in value or any(part in ("", ".", "..") for part in parts):
        raise ValueError(
            f"path {value!r} is not a normalised relative path (no leading '/', no empty, "
            "'.' or '..' component)"
        )
    return value


class FileEntry(Model):
    path: str  # relative to the data dir, '/'-separated
    size: int
    hash: str = Field(pattern=r"^(blake3|sha256):[0-9a-f]{64}$")  # of the plaintext
    object: str  # key relative to the backup's prefix
    stored_size: int
    mode: int  # as scanned; a restore applies only its permission bits (0o777)

    _paths = field_validator("path", "object")(relative_path)

    @model_validator(mode="before")
    @classmethod
    def upgrade_format_1(cls, data: Any) -> Any:  # `object` here is the field
        """Format 1 stored a bare sha256."""
        if isinstance(data, dict) and "sha256" in data:
            data = {**data, "hash": f"sha256:{data['sha256']}"}
            del data["sha256"]
        return data


class ChunkedFile(Model):
    """Format 3: a file is `count` consecutive records of the backup's chunk table, from
    record `first`; its content is those chunks' plaintexts in order."""

    path: str
    size: int = Field(ge=0)
    mode: int
    first: int = Field(ge=0)
    count: int = Field(ge=0)

    _paths = field_validator("path")(relative_path)


class ChunkTableRef(Model):
    """Format 3: the backup's chunk table, an object under its prefix, encoded like a
    format 2 data object (zstd, then the backup's stream encryption)."""

    object: str
    records: int = Field(ge=0)
    size: int = Field(ge=0)
    hash: str = Field(pattern=r"^blake3:[0-9a-f]{64}$")
    stored_size: int = Field(ge=0)

    _paths = field_validator("object")(relative_path)


class PackUse(Model):
    """Format 3: a pack the backup's chunks lie in: its stored size, and how many of its
    bytes the backup uses (each chunk counted once)."""

    name: str = Field(pattern=r"^\d{8}T\d{9}Z-[0-9a-f]{16}$")
    size: int = Field(ge=0)
    used: int = Field(ge=0)


class SourceInfo(Model):
    endpoint: str
    role: Literal["primary", "replica"]
    # Source.identity() when the backup was taken; None in manifests written before it was.
    identity: str | None = None


class BackupHeader(Model):
    """What a cycle knows of its backup before the upload; the repository finishes it."""

    keyspace: str
    shard: str
    engine: str
    server_version: str
    kind: Kind
    parent: str | None  # the backup this one was caught up from; None for a bootstrap
    rebootstrap_reason: str | None = None  # why a chain was started again, if it was
    # engine-specific: a MariaDB GTID position, or a PostgreSQL "LSN@timeline:slot"
    position: str
    source: SourceInfo
    started_at: AwareDatetime  # naive times could not be compared with now: refused
    bytes_from_source: int
    durations: dict[str, float]


class Manifest(BackupHeader, ListedBackup):
    """A committed backup: its header and what `Repository.write_backup` stored."""

    format_version: int = 2  # the writer says which it writes (repository.write_backup)
    backup_id: str
    created_at: AwareDatetime
    data_bytes: int
    stored_bytes: int
    compression: dict[str, object]
    encryption: dict[str, object] | None = None
    directories: list[str]
    files: list[FileEntry] | list[ChunkedFile]
    # Format 3 (see ChunkedFile): the stored bytes this backup added (its new chunks and its
    # table), the shard's chunk key it used (None: unencrypted), its table and its packs.
    new_stored_bytes: int | None = None
    chunk_key: str | None = None
    chunk_table: ChunkTableRef | None = None
    packs: list[PackUse] | None = None

    @model_serializer(mode="wrap")
    def _in_field_order(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        fields: dict[str, Any] = handler(self)
        if self.format_version in OBJECT_FORMATS:  # as a format 2 reader expects them
            fields = {k: v for k, v in fields.items() if k not in CHUNK_FIELDS}
        # A field missing from FIELD_ORDER still comes, last.
        return {name: fields[name] for name in FIELD_ORDER if name in fields} | fields

    @property
    def chunked(self) -> bool:
        return self.format_version not in OBJECT_FORMATS

    def object_files(self) -> list[FileEntry]:
        """Format 1 and 2: every file and its object."""
        return [f for f in self.files if isinstance(f, FileEntry)]

    def chunked_files(self) -> list[ChunkedFile]:
        """Format 3: every file and its records in the chunk table."""
        return [f for f in self.files if isinstance(f, ChunkedFile)]

    @model_validator(mode="after")
    def _one_format(self) -> Manifest:
        """Its files, table and packs are those of its format, and its files' records tile
        the table: a file's chunks can only be its own."""
        kind = ChunkedFile if self.chunked else FileEntry
        if any(not isinstance(f, kind) for f in self.files):
            raise ValueError(f"format {self.format_version} lists files of another format")
        if not self.chunked:
            return self
        if self.chunk_table is None or self.packs is None:
            raise ValueError("format 3 needs chunk_table and packs")
        expected = 0
        for entry in self.chunked_files():
            if entry.first != expected:
                raise ValueError(f"file {entry.path!r} does not start at record {expected}")
            expected += entry.count
        if expected != self.chunk_table.records:
            raise ValueError("the files' records do not add up to the chunk table's")
        return self

    @field_validator("directories")
    @classmethod
    def _directories(cls, value: list[str]) -> list[str]:
        return [relative_path(directory) for directory in value]

    @model_validator(mode="after")
    def _distinct_paths(self) -> Manifest:
        """Each path names one thing: a restore creates every file exclusively."""
        seen = set(self.directories)
        for entry in self.files:
            if entry.path in seen:
                raise ValueError(f"path {entry.path!r} is listed twice")
            seen.add(entry.path)
        return self

    def summary(self) -> dict[str, object]:
        """The fields `catchup list --json` prints."""
        return self.listed(
            engine=self.engine,
            kind=self.kind,
            parent=self.parent,
            position=self.position,
            bytes_from_source=self.bytes_from_source,
            created_at=self.created_at.isoformat(),
            data_bytes=self.data_bytes,
            stored_bytes=self.stored_bytes,
            **({"new_stored_bytes": self.new_stored_bytes} if self.chunked else {}),
            rebootstrap_reason=self.rebootstrap_reason,
        )
