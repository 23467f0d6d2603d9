"""Repository format 3 (issue 16): content-addressed chunks in packs that a shard's
backups share. What format 2's tests prove about objects, proved about chunks and packs:
restores equal the data dir, damage is refused naming the pack or chunk, chunk ids are
keyed, indexes are authenticated, a crashed write is retried cheaply."""

from __future__ import annotations

import io
import random
import re
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import blake3
import pytest

from catchup.codec import CodecSettings, decode, encode
from catchup.codec.keys import Keyring, generate_key_file
from catchup.config import ChunkSettings
from catchup.errors import IntegrityError
from catchup.fleet.prune import prune
from catchup.repository import Manifest, Repository
from catchup.repository.chunks.packs import decode_index
from catchup.repository.chunks.table import RECORD, ChunkRecord
from catchup.repository.layout import backup_prefix, pack_index_key, pack_key
from catchup.storage import StorageError, StoredObject
from catchup.storage.local import LocalStore
from tests.unit.test_repository import FORMAT_2, header, rewrite_plain_manifest

KIB = 1 << 10
SMALL = ChunkSettings(size_kib=16, pack_mb=1)  # 16 KiB chunks, 1 MiB packs: many of each


@pytest.fixture(params=["plain", "keyed"])
def keyring(request, tmp_path: Path) -> Keyring:
    if request.param == "plain":
        return Keyring()
    generate_key_file(tmp_path / "key.json")
    return Keyring.from_files([tmp_path / "key.json"])


def make_data(root: Path, seed: int = 1) -> Path:
    """About 2.9 MiB that does not compress, a zero region, an empty file and directory."""
    rng = random.Random(seed)
    data = root / "data"
    (data / "shop").mkdir(parents=True)
    (data / "empty_db").mkdir()
    (data / "ibdata1").write_bytes(rng.randbytes(2 << 20) + bytes(512 * KIB))
    (data / "shop" / "orders.ibd").write_bytes(rng.randbytes(400_000))
    (data / "shop" / "empty.frm").write_bytes(b"")
    return data


def snapshot(data: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(data)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(data.rglob("*"))
    }


def change_chunks(data: Path, rng: random.Random, count: int, size: int = 16 * KIB) -> None:
    """Overwrite `count` whole chunks of ibdata1 with new bytes."""
    path = data / "ibdata1"
    blob = bytearray(path.read_bytes())
    for chunk in rng.sample(range(len(blob) // size), count):
        blob[chunk * size : (chunk + 1) * size] = rng.randbytes(size)
    path.write_bytes(bytes(blob))


def backup(
    repo: Repository, data: Path, parent: Manifest | None = None, shard: str = "0", jobs: int = 1
) -> Manifest:
    known = header(shard)
    if parent is not None:
        known = known.model_copy(update={"parent": parent.backup_id, "kind": "catchup"})
    listing = repo.scan(data, lambda rel: False)
    return repo.write_backup(known, data, listing, CodecSettings(level=1), jobs=jobs)


def restored(repo: Repository, manifest: Manifest, target: Path) -> dict[str, bytes]:
    repo.restore(repo.find(manifest.keyspace, manifest.shard, manifest.backup_id), target, 3)
    return snapshot(target)


def table_bytes(repo: Repository, manifest: Manifest) -> bytes:
    assert manifest.chunk_table is not None
    ref = manifest.chunk_table
    name = backup_prefix(manifest.keyspace, manifest.shard, manifest.backup_id) + ref.object
    out = io.BytesIO()
    with repo.store.reader(name) as source:
        decode(source, out, ref.hash, ref.size, name, repo.encryptor(manifest))
    return out.getvalue()


def records(repo: Repository, manifest: Manifest) -> list[ChunkRecord]:
    return [ChunkRecord(*f) for f in RECORD.iter_unpack(table_bytes(repo, manifest))]


def with_table(repo: Repository, manifest: Manifest, table: list[ChunkRecord]) -> Manifest:
    """The backup as it would be if its table held `table` (stored, and named by hash)."""
    assert manifest.chunk_table is not None
    name = backup_prefix(manifest.keyspace, manifest.shard, manifest.backup_id) + "chunks.zst"
    plain = b"".join(RECORD.pack(*r) for r in table)
    sink = io.BytesIO()
    encoded = encode(io.BytesIO(plain), sink, CodecSettings(1), repo.encryptor(manifest), name)
    repo.store.put(name, sink.getvalue())
    ref = manifest.chunk_table.model_copy(
        update={"size": encoded.size, "hash": encoded.digest, "stored_size": encoded.stored_size}
    )
    return manifest.model_copy(update={"chunk_table": ref})


def pack_path(root: Path, name: str, shard: str = "0") -> Path:
    return root / pack_key("ks", shard, name)


def stored_packs(root: Path, shard: str = "0") -> set[str]:
    return {p.name.removesuffix(".pack") for p in (root / "ks" / shard).rglob("*.pack")}


# --- restores equal the data dir; only new chunks are stored -------------------------------


def test_restore_equals_the_data_dir_after_many_backups_and_prunes(tmp_path, keyring):
    root, rng = tmp_path / "repo", random.Random(7)
    settings = SMALL.model_copy(update={"gc_window_minutes": 0})
    repo = Repository(LocalStore(root), keyring, chunks=settings)
    data = make_data(tmp_path)
    taken: dict[str, dict[str, bytes]] = {}
    latest, ever = None, set()
    for _ in range(8):
        change_chunks(data, rng, 3)
        (data / "shop" / "orders.ibd").write_bytes(rng.randbytes(100_000))  # a whole file
        latest = backup(repo, data, latest)
        taken[latest.backup_id] = snapshot(data)
        ever |= stored_packs(root)
        prune(repo, tmp_path / "work", 2, timedelta(0), dry_run=False)
    kept = repo.backups("ks", "0")
    assert [m.backup_id for m in kept] == list(taken)[-2:]
    for i, manifest in enumerate(kept):
        assert restored(repo, manifest, tmp_path / f"t{i}") == taken[manifest.backup_id]
    # Packs no kept backup names are collected; every pack a kept one names is there.
    assert stored_packs(root) == {use.name for m in kept for use in m.packs or []} < ever


def test_an_unchanged_data_dir_stores_only_its_table_and_a_changed_chunk_about_one(
    tmp_path, keyring
):
    repo = Repository(LocalStore(tmp_path / "repo"), keyring, chunks=SMALL)
    data = make_data(tmp_path)
    first = backup(repo, data)
    assert first.new_stored_bytes and first.new_stored_bytes > 2_400_000
    same = backup(repo, data, first)
    assert same.chunk_table is not None and same.new_stored_bytes == same.chunk_table.stored_size
    assert same.new_stored_bytes * 100 < same.data_bytes == first.data_bytes  # 52 B a chunk
    change_chunks(data, random.Random(3), 1)
    changed = backup(repo, data, same)
    assert changed.chunk_table is not None and changed.new_stored_bytes is not None
    one_chunk = changed.new_stored_bytes - changed.chunk_table.stored_size
    assert 16 * KIB <= one_chunk < 17 * KIB
    assert restored(repo, changed, tmp_path / "t") == snapshot(data)


def test_a_format_3_manifest_stores_its_chunk_fields_in_order(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"), chunks=SMALL)
    manifest = backup(repo, make_data(tmp_path))
    fields = list(manifest.model_dump(mode="json"))
    assert manifest.format_version == 3 and manifest.chunked
    assert fields[fields.index("encryption") + 1 : fields.index("directories")] == [
        "new_stored_bytes",
        "chunk_key",
        "chunk_table",
        "packs",
    ]
    assert fields[-1] == "files" and repo.find("ks", "0", manifest.backup_id) == manifest


# --- damage is refused by restore and by check, naming the pack or chunk ---------------------


def damage_pack(root: Path, manifest: Manifest, how: str) -> str:
    """Damage the pack holding ibdata1's first chunk; returns its name."""
    assert manifest.packs is not None
    names = [use.name for use in manifest.packs]
    victim = names[0]
    path = pack_path(root, victim)
    blob = bytearray(path.read_bytes())
    if how == "flipped byte":
        blob[len(blob) // 3] ^= 0x01
        path.write_bytes(bytes(blob))
    elif how == "swapped":
        shutil.copyfile(pack_path(root, names[1]), path)  # another pack of the shard
    elif how == "truncated":
        path.write_bytes(bytes(blob[: len(blob) // 2]))
    else:
        path.unlink()
    return victim


@pytest.mark.parametrize("how", ["flipped byte", "swapped", "truncated", "missing"])
def test_a_damaged_pack_is_refused_naming_it(tmp_path, keyring, how):
    root = tmp_path / "repo"
    repo = Repository(LocalStore(root), keyring, chunks=SMALL)
    manifest = backup(repo, make_data(tmp_path))
    assert manifest.packs is not None and len(manifest.packs) >= 3
    victim = damage_pack(root, manifest, how)
    fresh = Repository(LocalStore(root), keyring)
    found = fresh.find("ks", "0", manifest.backup_id)
    target = tmp_path / "target"
    with pytest.raises(IntegrityError, match=victim):
        fresh.restore(found, target, jobs=3)
    assert not target.exists(), "a failed restore must not leave partial data"
    with pytest.raises(IntegrityError, match=victim):
        fresh.check_objects(found, jobs=3)


@pytest.mark.parametrize("how", ["missing", "flipped byte"])
def test_a_missing_or_altered_chunk_table_is_refused(tmp_path, keyring, how):
    root = tmp_path / "repo"
    repo = Repository(LocalStore(root), keyring, chunks=SMALL)
    manifest = backup(repo, make_data(tmp_path))
    path = root / backup_prefix("ks", "0", manifest.backup_id) / "chunks.zst"
    if how == "missing":
        path.unlink()
    else:
        blob = bytearray(path.read_bytes())
        blob[len(blob) // 2] ^= 0x01
        path.write_bytes(bytes(blob))
    fresh = Repository(LocalStore(root), keyring)
    found = fresh.find("ks", "0", manifest.backup_id)
    target = tmp_path / "work" / "target"
    target.parent.mkdir()
    with pytest.raises(IntegrityError, match=r"chunks\.zst"):
        fresh.restore(found, target, jobs=2)
    assert not target.exists() and list(target.parent.iterdir()) == []
    with pytest.raises(IntegrityError, match=r"chunks\.zst"):
        fresh.check_objects(found, jobs=2)


def test_a_table_record_pointing_to_another_chunk_is_refused(tmp_path, keyring):
    """Even a table that passes its own checks (say, written with the backup's data key)
    cannot give a file another chunk's bytes: each chunk is checked against its id."""
    root = tmp_path / "repo"
    repo = Repository(LocalStore(root), keyring, chunks=SMALL)
    manifest = backup(repo, make_data(tmp_path))
    table = records(repo, manifest)
    other = table[5]
    table[0] = table[0]._replace(pack=other.pack, offset=other.offset, stored=other.stored)
    altered = with_table(repo, manifest, table)
    where = re.escape(f"at {manifest.packs[other.pack].name}+{other.offset} ")
    target = tmp_path / "target"
    with pytest.raises(IntegrityError, match=where):
        repo.restore(altered, target, jobs=2)
    assert not target.exists()
    with pytest.raises(IntegrityError, match=where):
        repo.check_objects(altered, jobs=2)


# --- chunk ids -----------------------------------------------------------------------


def test_chunk_ids_are_keyed_per_shard_when_encrypted_and_plain_blake3_otherwise(tmp_path):
    data = make_data(tmp_path)
    first_chunk = (data / "ibdata1").read_bytes()[: 16 * KIB]
    plain = Repository(LocalStore(tmp_path / "plain"), chunks=SMALL)
    manifest = backup(plain, data)
    assert records(plain, manifest)[0].id == blake3.blake3(first_chunk).digest()
    ids: list[bytes] = []
    for name in ("k1", "k2"):
        generate_key_file(tmp_path / f"{name}.json")
        keys = Keyring.from_files([tmp_path / f"{name}.json"])
        keyed = Repository(LocalStore(tmp_path / name), keys, chunks=SMALL)
        for shard in ("0", "1"):
            ids.append(records(keyed, backup(keyed, data, shard=shard))[0].id)
    assert len(set(ids)) == 4 and blake3.blake3(first_chunk).digest() not in ids


# --- a crashed write, its retry, and authenticated pack indexes ------------------------------


class PackFailingStore(LocalStore):
    """Fails when the writer of pack number `fail_at` (from 1) is opened."""

    fail_at = 0
    packs = 0

    def writer(self, key):
        if key.endswith(".pack"):
            self.packs += 1
            if self.packs == self.fail_at:
                raise StorageError(f"{self.url}: injected failure writing {key}")
        return super().writer(key)


def crash_then_retry(tmp_path: Path, keyring: Keyring, alter_index: bool):
    root = tmp_path / "repo"
    store = PackFailingStore(root)
    repo = Repository(store, keyring, chunks=SMALL)
    data = make_data(tmp_path)
    first = backup(repo, data)
    big = random.Random(9).randbytes(4 << 20)
    (data / "shop" / "big.ibd").write_bytes(big)  # four new packs' worth
    store.fail_at = store.packs + 4
    with pytest.raises(StorageError, match="injected"):
        backup(repo, data, first)
    assert [m.backup_id for m in repo.backups()] == [first.backup_id]
    assert len(list(root.rglob("manifest.json"))) == 1
    left = stored_packs(root) - {use.name for use in first.packs or []}
    assert len(left) == 3
    assert all((root / pack_index_key("ks", "0", name)).exists() for name in left)
    attempted = sum(pack_path(root, name).stat().st_size for name in left)
    altered = None
    if alter_index:
        altered = sorted(left)[0]
        index = root / pack_index_key("ks", "0", altered)
        blob = bytearray(index.read_bytes())
        blob[len(blob) // 2] ^= 0x01
        index.write_bytes(bytes(blob))
    retry = backup(repo, data, first)
    assert restored(repo, retry, tmp_path / "t") == snapshot(data)
    return retry, attempted, altered


def test_a_retry_after_a_crash_reuses_the_packs_it_left(tmp_path, keyring):
    retry, attempted, _ = crash_then_retry(tmp_path, keyring, alter_index=False)
    assert attempted > 3 << 20
    assert retry.new_stored_bytes is not None and retry.new_stored_bytes < attempted / 2


def test_an_altered_pack_index_is_not_reused_and_does_not_break_the_backup(tmp_path, keyring):
    retry, attempted, altered = crash_then_retry(tmp_path, keyring, alter_index=True)
    assert altered not in {use.name for use in retry.packs or []}
    # The altered index's pack (a third of what the crash left) is stored again, beside
    # what the crash had not reached (another third): about 2/3, not 1/3 as unaltered.
    assert retry.new_stored_bytes is not None
    assert attempted / 2 < retry.new_stored_bytes < attempted


def test_a_pack_removed_before_the_commit_stops_it(tmp_path):
    class Pruned(LocalStore):
        listings = 0  # the writer lists packs to reuse, then to confirm its own

        def list(self, prefix: str) -> Iterator[StoredObject]:
            if prefix.endswith("chunks/packs/"):
                self.listings += 1
                if self.listings == 2:  # a prune from another host, right after the upload
                    next((self.root / prefix).glob("*.pack")).unlink()
            return super().list(prefix)

    repo = Repository(Pruned(tmp_path / "repo"), chunks=SMALL)
    with pytest.raises(IntegrityError, match=r"not committed: pack \S+ is missing"):
        backup(repo, make_data(tmp_path))
    assert not list((tmp_path / "repo").rglob("manifest.json"))


# --- formats 2 and 3 side by side ----------------------------------------------------


def test_format_2_backups_list_restore_and_prune_beside_format_3_ones(tmp_path, keyring):
    root = tmp_path / "repo"
    data = make_data(tmp_path)
    old = Repository(LocalStore(root), keyring, chunks=FORMAT_2)
    v2a = backup(old, data)
    v2b = backup(old, data, v2a)
    assert not v2b.chunked and stored_packs(root) == set()
    repo = Repository(LocalStore(root), keyring, chunks=SMALL)
    v3a = backup(repo, data, v2b)  # a format 2 parent: nothing to reuse
    assert v3a.new_stored_bytes is not None and v3a.new_stored_bytes > 2_400_000
    v3b = backup(repo, data, v3a)
    assert v3b.chunk_table is not None and v3b.new_stored_bytes == v3b.chunk_table.stored_size
    listed = [(m.backup_id, m.format_version) for m in repo.backups("ks", "0")]
    assert listed == [(m.backup_id, m.format_version) for m in (v2a, v2b, v3a, v3b)]
    assert [m.format_version for m in (v2a, v2b, v3a, v3b)] == [2, 2, 3, 3]
    assert restored(repo, v2b, tmp_path / "t2") == snapshot(data)
    assert restored(repo, v3b, tmp_path / "t3") == snapshot(data)
    prune(repo, tmp_path / "work", 1, timedelta(0), dry_run=False)
    assert [m.backup_id for m in repo.backups()] == [v3b.backup_id]
    assert restored(repo, v3b, tmp_path / "t4") == snapshot(data)


# --- checking shared chunks once -----------------------------------------------------


def test_check_chunks_reads_each_stored_chunk_once_however_many_backups_share_it(tmp_path, keyring):
    repo = Repository(LocalStore(tmp_path / "repo"), keyring, chunks=SMALL)
    data = make_data(tmp_path)
    rng, latest, manifests = random.Random(5), None, []
    for _ in range(4):
        change_chunks(data, rng, 2)
        latest = backup(repo, data, latest)
        manifests.append(latest)
    referenced = {(m.packs[r.pack].name, r.offset) for m in manifests for r in records(repo, m)}
    total = sum(m.chunk_table.records for m in manifests)
    chunks, stored = repo.check_chunks(manifests, jobs=3)
    assert chunks == len(referenced) < total / 3
    assert stored < 2 * manifests[0].stored_bytes


def test_check_chunks_over_two_unencrypted_shards_reads_each_from_its_own(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"), chunks=SMALL)
    data = make_data(tmp_path)
    manifests = [backup(repo, data, shard="0"), backup(repo, data, shard="1")]
    chunks, _ = repo.check_chunks(manifests, jobs=2)
    assert chunks == sum(len({(r.pack, r.offset) for r in records(repo, m)}) for m in manifests)


# --- bounded memory: many records, shared regions stored once ------------------------


def test_a_64_mib_file_is_256_records_and_equal_regions_are_stored_once(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    region = random.Random(2).randbytes(1 << 20)
    with open(data / "big.ibd", "wb") as big:
        big.truncate(64 << 20)  # zeros
    (data / "a.ibd").write_bytes(region + bytes(1 << 20))
    (data / "b.ibd").write_bytes(bytes(1 << 20) + region)
    repo = Repository(LocalStore(tmp_path / "repo"))  # the default 256 KiB chunks
    manifest = backup(repo, data, jobs=4)
    by_path = {f.path: f for f in manifest.chunked_files()}
    assert by_path["big.ibd"].count == 256 and by_path["a.ibd"].count == 8
    table = records(repo, manifest)
    distinct = {r.id for r in table}
    assert len(distinct) == 5  # a zero chunk and the region's four
    key = repo.chunks.chunk_key(manifest)
    packed = [
        chunk.id
        for use in manifest.packs or []
        for chunk in decode_index(
            (tmp_path / "repo" / pack_index_key("ks", "0", use.name)).read_bytes(),
            key,
            "ks",
            "0",
            use.name,
        ).chunks
    ]
    assert sorted(packed) == sorted(distinct)  # each stored once, though met concurrently
    assert manifest.new_stored_bytes is not None and manifest.new_stored_bytes < 1.1 * (1 << 20)
    assert restored(repo, manifest, tmp_path / "t") == snapshot(data)


# --- manifest validation ---------------------------------------------------------------


@pytest.mark.parametrize("how", ["gap", "overlap", "short", "file entries"])
def test_a_format_3_manifest_whose_files_do_not_tile_its_table_is_refused(tmp_path, how):
    repo = Repository(LocalStore(tmp_path / "repo"), chunks=SMALL)
    manifest = backup(repo, make_data(tmp_path))
    v2 = Repository(LocalStore(tmp_path / "v2"), chunks=FORMAT_2)
    entry = backup(v2, tmp_path / "data").model_dump(mode="json")["files"][0]

    def alter(fields: dict) -> None:
        files = fields["files"]
        if how == "gap":
            files[-1]["first"] += 1
        elif how == "overlap":
            files[-1]["first"] -= 1
        elif how == "short":
            fields["chunk_table"]["records"] += 1
        else:
            files[0] = entry

    rewrite_plain_manifest(tmp_path / "repo", manifest, alter)
    with pytest.raises(IntegrityError, match="is invalid"):
        repo.find("ks", "0", manifest.backup_id)
    [damaged] = repo.catalog().damaged
    assert damaged.backup_id == manifest.backup_id


def test_an_invalid_path_in_a_format_3_manifest_names_the_field(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"), chunks=SMALL)
    manifest = backup(repo, make_data(tmp_path))
    rewrite_plain_manifest(
        tmp_path / "repo", manifest, lambda fields: fields["files"][0].update(path="../x")
    )
    [damaged] = repo.catalog().damaged
    assert "files.0.path" in damaged.reason and "FileEntry" not in damaged.reason
