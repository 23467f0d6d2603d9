"""Encryption at rest: the framing refuses every kind of tampering; keys rotate."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from catchup.codec import CodecSettings, decode, encode
from catchup.codec.encryption import HEADER, SEGMENT, TAG, DecryptionError, Encryptor, new_data_key
from catchup.codec.keys import Keyring, generate_key_file, load_key_file
from catchup.config import ChunkSettings
from catchup.errors import ConfigError, IntegrityError
from catchup.repository import Repository
from catchup.storage.local import LocalStore
from tests.unit.test_repository import FORMAT_2, header, make_data_dir

MARKER = b"MARKER-7f3a9c-do-not-leak"


def encrypt(data: bytes, key: bytes, name: str = "ks/0/id/data/000000.zst") -> bytes:
    sink = io.BytesIO()
    writer = Encryptor(key).writer(sink, name)
    writer.write(data)
    writer.close()
    return sink.getvalue()


def decrypt(blob: bytes, key: bytes, name: str = "ks/0/id/data/000000.zst") -> bytes:
    return b"".join(Encryptor(key).open(io.BytesIO(blob), name))


@pytest.mark.parametrize("size", [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT])
def test_round_trip_at_segment_boundaries(size):
    key, data = new_data_key(), os.urandom(size)
    blob = encrypt(data, key)
    assert decrypt(blob, key) == data
    segments = max(1, -(-size // SEGMENT))
    assert len(blob) == HEADER.size + size + segments * TAG


def test_every_kind_of_tampering_is_refused():
    key, data = new_data_key(), os.urandom(3 * SEGMENT + 100)
    blob = encrypt(data, key)
    seg = SEGMENT + TAG
    body = blob[HEADER.size :]
    tampered = {
        "flipped byte": blob[:5000] + bytes([blob[5000] ^ 1]) + blob[5001:],
        "flipped header": blob[:10] + bytes([blob[10] ^ 1]) + blob[11:],
        "truncated at a segment boundary": blob[: HEADER.size + 2 * seg],
        "truncated mid-segment": blob[:-7],
        "appended data": blob + blob[HEADER.size : HEADER.size + seg],
        "reordered segments": blob[: HEADER.size]
        + body[seg : 2 * seg]
        + body[:seg]
        + body[2 * seg :],
    }
    for what, bad in tampered.items():
        with pytest.raises(DecryptionError):
            decrypt(bad, key)
            pytest.fail(what)
    with pytest.raises(DecryptionError, match="failed authentication"):
        decrypt(blob, new_data_key())  # wrong key
    with pytest.raises(DecryptionError):
        decrypt(blob, key, name="ks/0/id/data/000001.zst")  # swapped object


def test_pipeline_hides_plaintext_and_restores_it():
    key = new_data_key()
    data = MARKER * 50_000
    sink = io.BytesIO()
    encoded = encode(io.BytesIO(data), sink, CodecSettings(1), Encryptor(key), "obj")
    assert MARKER not in sink.getvalue()
    out = io.BytesIO()
    decode(io.BytesIO(sink.getvalue()), out, encoded.digest, encoded.size, "obj", Encryptor(key))
    assert out.getvalue() == data


def test_key_files(tmp_path):
    path = tmp_path / "key.json"
    key = generate_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_key_file(path, "k") == key
    with pytest.raises(ConfigError, match="already exists"):
        generate_key_file(path)
    damaged = tmp_path / "damaged.json"
    damaged.write_text(path.read_text().replace(key.key_id, "k-0000000000000000"))
    damaged.chmod(0o600)  # a key file others can read is refused before it is parsed
    with pytest.raises(ConfigError, match="does not match its key_id"):
        load_key_file(damaged, "encryption.key_files[0]")
    with pytest.raises(ConfigError, match=r"encryption.key_files\[0\] = .*cannot be read"):
        Keyring.from_files([tmp_path / "missing.json"])


def encrypted_backup(tmp_path: Path, keyring: Keyring, chunks: ChunkSettings | None = None):
    data = make_data_dir(tmp_path)
    (data / "shop" / "secret.ibd").write_bytes(MARKER * 1000)
    repo = Repository(LocalStore(tmp_path / "repo"), keyring, chunks=chunks)
    listing = repo.scan(data, lambda rel: False)
    return repo, repo.write_backup(header(), data, listing, CodecSettings(1), 2)


def test_an_encrypted_repository_leaks_neither_data_nor_names(tmp_path):
    generate_key_file(tmp_path / "k1.json")
    keyring = Keyring.from_files([tmp_path / "k1.json"])
    _repo, manifest = encrypted_backup(tmp_path, keyring)
    assert manifest.encryption["key_id"] == keyring.active.key_id
    for path in (tmp_path / "repo").rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            assert MARKER not in blob and b"secret.ibd" not in blob and b"shop/" not in blob
            assert keyring.active.secret not in blob
    repo2 = Repository(LocalStore(tmp_path / "repo"), keyring)
    target = tmp_path / "restored"
    repo2.restore(repo2.find("ks", "0", "latest"), target, jobs=2)
    assert (target / "shop" / "secret.ibd").read_bytes() == MARKER * 1000
    repo2.check_objects(repo2.find("ks", "0", "latest"), jobs=2)


def test_wrong_or_missing_key_is_refused_before_anything_is_written(tmp_path):
    generate_key_file(tmp_path / "k1.json")
    generate_key_file(tmp_path / "other.json")
    encrypted_backup(tmp_path, Keyring.from_files([tmp_path / "k1.json"]))
    target = tmp_path / "restored"
    for keyring in (Keyring.from_files([tmp_path / "other.json"]), Keyring()):
        repo = Repository(LocalStore(tmp_path / "repo"), keyring)
        with pytest.raises(IntegrityError, match="not configured"):
            repo.restore(repo.find("ks", "0", "latest"), target, jobs=1)
        assert not target.exists()


def test_key_rotation(tmp_path):
    old, new = generate_key_file(tmp_path / "old.json"), generate_key_file(tmp_path / "new.json")
    repo, first = encrypted_backup(tmp_path, Keyring.from_files([tmp_path / "old.json"]))
    rotated = Keyring.from_files([tmp_path / "new.json", tmp_path / "old.json"])
    repo = Repository(LocalStore(tmp_path / "repo"), rotated)
    listing = repo.scan(tmp_path / "data", lambda rel: False)
    second = repo.write_backup(header(), tmp_path / "data", listing, CodecSettings(1), 2)
    assert first.encryption["key_id"] == old.key_id and second.encryption["key_id"] == new.key_id
    for manifest in repo.backups():
        repo.check_objects(manifest, jobs=2)  # both still restore while both keys are configured
    only_new = Repository(
        LocalStore(tmp_path / "repo"), Keyring.from_files([tmp_path / "new.json"])
    )
    # Listing reports the backup as damaged instead of failing the whole listing (issue 12).
    [damaged] = only_new.catalog().damaged
    assert damaged.backup_id == first.backup_id
    assert f"encrypted with key {old.key_id}" in damaged.reason
    with pytest.raises(IntegrityError, match=f"encrypted with key {old.key_id}"):
        only_new.find("ks", "0", first.backup_id)


@pytest.mark.parametrize("victim", ["object", "manifest"])
def test_flipped_byte_in_an_encrypted_backup_names_the_object(tmp_path, victim):
    generate_key_file(tmp_path / "k.json")
    keyring = Keyring.from_files([tmp_path / "k.json"])
    _repo, manifest = encrypted_backup(tmp_path, keyring, FORMAT_2)
    prefix = tmp_path / "repo" / "ks" / "0" / manifest.backup_id
    entry = max(manifest.files, key=lambda f: f.stored_size)
    path = prefix / (entry.object if victim == "object" else "manifest.json")
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    fresh = Repository(LocalStore(tmp_path / "repo"), keyring)
    with pytest.raises(IntegrityError) as caught:
        fresh.check_objects(fresh.find("ks", "0", manifest.backup_id), jobs=2)
    assert (entry.object if victim == "object" else "manifest.json") in str(caught.value)


def test_an_unencrypted_object_that_inflates_past_its_size_is_stopped():
    """Without encryption nothing authenticates an object: a small object that
    decompresses to far more than its manifest says must not fill the disk."""
    bomb = io.BytesIO()
    encoded = encode(io.BytesIO(bytes(64 << 20)), bomb, CodecSettings(1))
    assert encoded.stored_size < 64 << 10
    out = io.BytesIO()
    with pytest.raises(IntegrityError, match="decompresses to more than the manifest's 1000"):
        decode(io.BytesIO(bomb.getvalue()), out, encoded.digest, 1000, "obj")
    assert len(out.getvalue()) <= 1000
