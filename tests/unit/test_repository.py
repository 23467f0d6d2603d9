"""The repository format's promises, on a local directory store."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest.mock import patch

import pytest

from catchup.codec import CodecSettings
from catchup.config import ChunkSettings
from catchup.errors import IntegrityError, NotFoundError, TargetNotEmptyError
from catchup.fleet.prune import prune
from catchup.repository import BackupHeader, Manifest, Repository
from catchup.repository.envelope import canonical_json
from catchup.repository.layout import BACKUP_ID, new_backup_id
from catchup.repository.manifest import SourceInfo
from catchup.repository.retention import expired_backups
from catchup.storage import StorageError
from catchup.storage.local import LocalStore

# Tests of one object per file (format 2) say so: new backups are format 3 (chunks).
FORMAT_2 = ChunkSettings(format=2)


def make_data_dir(root: Path) -> Path:
    data = root / "data"
    (data / "shop").mkdir(parents=True)
    (data / "empty_db").mkdir()
    (data / "ibdata1").write_bytes(os.urandom(300_000) + b"\0" * 2_000_000)
    (data / "shop" / "orders.ibd").write_bytes(b"row " * 100_000)
    (data / "shop" / "empty.frm").write_bytes(b"")
    (data / "relay-bin.000001").write_bytes(b"must not be archived")
    return data


def header(shard: str = "0", started: datetime | None = None) -> BackupHeader:
    return BackupHeader(
        keyspace="ks",
        shard=shard,
        engine="mariadb",
        server_version="10.11",
        kind="bootstrap",
        parent=None,
        position="0-1-5",
        source=SourceInfo(endpoint="db:3306", role="primary"),
        started_at=started or datetime.now(UTC),
        bytes_from_source=1,
        durations={},
    )


def manifest_without_files(
    backup_id: str, shard: str = "0", created: datetime | None = None
) -> Manifest:
    """A committed backup's manifest naming no file, for tests that store none."""
    now = created or datetime.now(UTC)
    return Manifest(
        **dict(header(shard, now)),
        backup_id=backup_id,
        created_at=now,
        data_bytes=0,
        stored_bytes=0,
        compression={},
        directories=[],
        files=[],
    )


@contextmanager
def dated(repo: Repository, backup_id: str | None, created: datetime | None) -> Iterator[None]:
    """The repository's next backup gets this id and commit time (when given), as a writer
    with another clock would have given them."""
    with ExitStack() as stack:
        if backup_id:
            stack.enter_context(patch.object(repo, "new_backup_id", return_value=backup_id))
        if created:
            stack.enter_context(patch.object(repo, "now", return_value=created))
        yield


def write(
    repo: Repository,
    data: Path,
    backup_id: str | None = None,
    shard: str = "0",
    created: datetime | None = None,
    jobs: int = 3,
) -> Manifest:
    listing = repo.scan(data, lambda rel: rel.startswith("relay-bin"))
    with dated(repo, backup_id, created):
        return repo.write_backup(
            header(shard, created), data, listing, CodecSettings(level=1), jobs=jobs
        )


def test_backup_ids_sort_by_time_and_match_the_layout():
    early = new_backup_id(datetime(2026, 1, 1, tzinfo=UTC))
    late = new_backup_id(datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC))
    assert early < late and BACKUP_ID.match(early)


def test_round_trip_restores_identical_files_and_directories(tmp_path):
    data = make_data_dir(tmp_path)
    repo = Repository(LocalStore(tmp_path / "repo"))
    manifest = write(repo, data)
    assert manifest.data_bytes == 2_300_000 + 400_000
    assert manifest.stored_bytes < manifest.data_bytes
    assert "relay-bin.000001" not in {f.path for f in manifest.files}
    assert [m.backup_id for m in repo.backups()] == [manifest.backup_id]
    target = tmp_path / "restored"
    repo.restore(manifest, target, jobs=2)
    for rel in ("ibdata1", "shop/orders.ibd", "shop/empty.frm"):
        assert (target / rel).read_bytes() == (data / rel).read_bytes()
    assert (target / "empty_db").is_dir()
    assert not (target / "relay-bin.000001").exists()


# The fields every manifest has stored since format 2, in their order
# (docs/repository-format.md).
STORED_FIELDS = [
    *("format_version", "backup_id", "keyspace", "shard", "engine", "server_version", "kind"),
    *("parent", "rebootstrap_reason", "position", "source", "started_at", "created_at"),
    *("bytes_from_source", "data_bytes", "stored_bytes", "durations", "compression"),
    *("encryption", "directories", "files"),
]


def test_the_repository_finishes_the_manifest_from_the_cycles_header(tmp_path):
    data = make_data_dir(tmp_path)
    repo = Repository(LocalStore(tmp_path / "repo"), chunks=FORMAT_2)
    known = header("7").model_copy(update={"durations": {"catch up": 1.5}})
    listing = repo.scan(data, lambda rel: rel.startswith("relay-bin"))
    before = datetime.now(UTC)
    manifest = repo.write_backup(known, data, listing, CodecSettings(level=1), jobs=2)
    # What the cycle knew is kept as it was; the repository adds what the upload made.
    assert manifest.model_dump(include=set(BackupHeader.model_fields) - {"durations"}) == (
        known.model_dump(exclude={"durations"})
    )
    assert BACKUP_ID.match(manifest.backup_id) and before <= manifest.created_at
    assert manifest.durations.keys() == {"catch up", "back up"}
    assert manifest.durations["catch up"] == 1.5 and manifest.durations["back up"] >= 0
    assert manifest.data_bytes == sum(f.size for f in manifest.files) == 2_700_000
    assert manifest.stored_bytes == sum(f.stored_size for f in manifest.files)
    assert manifest.compression == CodecSettings(level=1).describe()
    assert manifest.encryption is None and manifest.directories == ["empty_db", "shop"]
    assert repo.find("ks", "7", manifest.backup_id) == manifest
    stored = json.loads((tmp_path / "repo" / "ks" / "7" / manifest.backup_id / "manifest.json")
                        .read_text())  # fmt: skip
    assert stored["version"] == 1 and list(stored["manifest"]) == STORED_FIELDS
    assert stored["manifest"]["format_version"] == 2


def test_manifest_is_written_last_and_a_failed_upload_leaves_nothing_visible(tmp_path):
    data = make_data_dir(tmp_path)

    class FailingStore(LocalStore):
        writes = 0

        def writer(self, key):
            FailingStore.writes += 1
            if FailingStore.writes == 2:
                raise StorageError(f"{self.url}: injected failure writing {key}")
            return super().writer(key)

    repo = Repository(FailingStore(tmp_path / "repo"))
    with pytest.raises(StorageError, match="injected"):
        write(repo, data)
    assert repo.backups() == []
    assert not list((tmp_path / "repo").rglob("manifest.json"))


def test_incomplete_prefix_is_ignored_by_listing_and_removed_by_prune(tmp_path):
    data = make_data_dir(tmp_path)
    repo = Repository(LocalStore(tmp_path / "repo"))
    good = write(repo, data)
    # A crash mid-upload, older than the grace prune leaves to uploads: objects
    # without a manifest, plus a half-written temp file.
    crashed = new_backup_id(datetime.now(UTC) - timedelta(hours=7))
    partial = tmp_path / "repo" / "ks" / "0" / crashed / "data"
    partial.mkdir(parents=True)
    (partial / "000000.zst").write_bytes(b"partial")
    (partial / ".tmp-000001.zst.abcd").write_bytes(b"half")
    assert [m.backup_id for m in repo.backups()] == [good.backup_id]
    assert repo.incomplete() == [("ks", "0", crashed)]
    result = prune(repo, tmp_path / "work", 1, timedelta(0), dry_run=False)
    assert result.removed == [{"shard": "ks/0", "id": crashed, "reason": "incomplete"}]
    assert not (tmp_path / "repo" / "ks" / "0" / crashed).exists()
    assert [m.backup_id for m in repo.backups()] == [good.backup_id]


@pytest.mark.parametrize("victim", ["object", "manifest"])
def test_a_flipped_byte_is_refused_naming_the_object(tmp_path, victim):
    data = make_data_dir(tmp_path)
    repo = Repository(LocalStore(tmp_path / "repo"), chunks=FORMAT_2)
    manifest = write(repo, data)
    prefix = tmp_path / "repo" / "ks" / "0" / manifest.backup_id
    if victim == "object":
        entry = max(manifest.files, key=lambda f: f.stored_size)
        path = prefix / entry.object
    else:
        path = prefix / "manifest.json"
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    target = tmp_path / "restored"
    with pytest.raises(IntegrityError) as caught:
        repo.restore(repo.find("ks", "0", manifest.backup_id), target, jobs=2)
    assert (entry.object if victim == "object" else "manifest.json") in str(caught.value)
    assert not target.exists(), "a failed restore must not leave partial data"


def test_restore_refuses_a_non_empty_target(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    manifest = write(repo, make_data_dir(tmp_path))
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(TargetNotEmptyError, match="not empty"):
        repo.restore(manifest, target, jobs=1)
    assert (target / "keep.txt").read_text() == "mine"


def test_find_names_missing_backups_clearly(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    with pytest.raises(NotFoundError, match="no complete backup"):
        repo.find("ks", "0", "latest")
    with pytest.raises(NotFoundError, match="catchup list"):
        repo.find("ks", "0", new_backup_id())


def test_retention_keeps_min_count_and_young_backups_and_always_the_newest():
    now = datetime(2026, 6, 1, tzinfo=UTC)
    chain = [
        manifest_without_files(
            new_backup_id(now - timedelta(days=d)), created=now - timedelta(days=d)
        )
        for d in (30, 20, 10, 5, 1)
    ]
    expired = expired_backups(chain, min_count=2, min_age=timedelta(days=7), now=now)
    assert [m.created_at for m in expired] == [
        now - timedelta(days=30),
        now - timedelta(days=20),
        now - timedelta(days=10),
    ]
    # min_count 0 still never removes the newest backup
    assert chain[-1] not in expired_backups(chain, 0, timedelta(0), now)
    assert len(expired_backups(chain, 0, timedelta(0), now)) == 4


def test_prune_dry_run_removes_nothing(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    data = make_data_dir(tmp_path)
    first, second = write(repo, data), write(repo, data)
    result = prune(repo, tmp_path / "work", 1, timedelta(0), dry_run=True)
    assert [e["id"] for e in result.removed] == [first.backup_id]
    assert len(repo.backups()) == 2
    prune(repo, tmp_path / "work", 1, timedelta(0), dry_run=False)
    assert [m.backup_id for m in repo.backups()] == [second.backup_id]


def rewrite_plain_manifest(repo_dir: Path, manifest: Manifest, change) -> None:
    """Edit a plain manifest's fields and re-seal its checksum, as an older or newer
    catchup would have written it."""
    path = repo_dir / "ks" / "0" / manifest.backup_id / "manifest.json"
    document = json.loads(path.read_text())
    change(document["manifest"])
    document["sha256"] = hashlib.sha256(canonical_json(document["manifest"])).hexdigest()
    path.write_text(json.dumps(document))


@pytest.mark.parametrize("damaged", [False, True])
def test_a_format_1_backup_with_sha256_hashes_still_restores(tmp_path, damaged):
    data = make_data_dir(tmp_path)
    repo = Repository(LocalStore(tmp_path / "repo"), chunks=FORMAT_2)
    manifest = write(repo, data)

    def as_format_1(fields: dict) -> None:
        fields["format_version"] = 1
        for entry in fields["files"]:
            del entry["hash"]
            plain = (data / entry["path"]).read_bytes() + (b"x" if damaged else b"")
            entry["sha256"] = hashlib.sha256(plain).hexdigest()

    rewrite_plain_manifest(tmp_path / "repo", manifest, as_format_1)
    old = repo.find("ks", "0", manifest.backup_id)
    assert old.format_version == 1 and old.files[0].hash.startswith("sha256:")
    target = tmp_path / "restored"
    if damaged:
        with pytest.raises(IntegrityError, match=r"does not match its manifest hash \(sha256"):
            repo.restore(old, target, jobs=2)
        return
    repo.restore(old, target, jobs=2)
    assert (target / "ibdata1").read_bytes() == (data / "ibdata1").read_bytes()


def test_a_manifest_of_a_newer_format_is_refused_with_advice(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    manifest = write(repo, make_data_dir(tmp_path))
    rewrite_plain_manifest(
        tmp_path / "repo", manifest, lambda fields: fields.update(format_version=99)
    )
    with pytest.raises(IntegrityError, match="format 99, newer than this catchup reads"):
        repo.find("ks", "0", manifest.backup_id)
