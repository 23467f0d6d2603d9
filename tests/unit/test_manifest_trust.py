"""What the repository believes (issue 12, items 2, 4, 5, 6 and 8): only sealed manifests
when keys are configured, manifests bound to where they are stored, restores that write
only below their target with private modes, future-dated backups that are never `latest`,
damaged backups reported and skipped, objects confirmed before a commit, cleanup that
deletes the manifest first, and a scanner that refuses what it cannot archive."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import blake3
import pytest
import zstandard

from catchup.codec import CodecSettings
from catchup.codec.keys import Keyring, generate_key_file
from catchup.daemon.metrics import exposition
from catchup.errors import IntegrityError
from catchup.fleet.prune import prune
from catchup.repository import Manifest, Repository
from catchup.repository.envelope import canonical_json
from catchup.repository.layout import new_backup_id
from catchup.repository.retention import expired_backups
from catchup.repository.transfer import DataDirError
from catchup.storage import StorageError, StoredObject
from catchup.storage.local import LocalStore
from tests.conftest import run_cli
from tests.unit.test_repository import (
    FORMAT_2,
    header,
    make_data_dir,
    manifest_without_files,
    write,
)

FUTURE_ID = "29990101T000000000Z-abcdef"
PAYLOAD = b"* * * * * root touch /tmp/owned\n"


def excluded(rel: str) -> bool:
    return rel.startswith("relay-bin")


def backup(repo: Repository, data: Path, shard: str = "s1", **kw) -> Manifest:
    return write(repo, data, shard=shard, jobs=2, **kw)


def plant(
    repo_dir: Path,
    backup_id: str = FUTURE_ID,
    path: str = "ibdata1",
    mode: int = 0o640,
    stored_as: tuple[str, str, str] | None = None,
    **fields: object,
) -> Path:
    """A plain manifest and one object, as a bucket writer without any key can write them."""
    keyspace, shard, stored_id = stored_as or ("ks", "s1", backup_id)
    prefix = repo_dir / keyspace / shard / stored_id
    (prefix / "data").mkdir(parents=True)
    stored = zstandard.ZstdCompressor().compress(PAYLOAD)
    (prefix / "data" / "000000.zst").write_bytes(stored)
    when = datetime(2999, 1, 1, tzinfo=UTC) if backup_id == FUTURE_ID else datetime.now(UTC)
    manifest = manifest_without_files(backup_id, shard="s1", created=when).model_dump(mode="json")
    manifest.update(
        files=[
            {
                "path": path,
                "size": len(PAYLOAD),
                "hash": "blake3:" + blake3.blake3(PAYLOAD).hexdigest(),
                "object": "data/000000.zst",
                "stored_size": len(stored),
                "mode": mode,
            }
        ],
        **fields,
    )
    document = {
        "format": "catchup-manifest",
        "version": 1,
        "sha256": hashlib.sha256(canonical_json(manifest)).hexdigest(),
        "manifest": manifest,
    }
    (prefix / "manifest.json").write_text(json.dumps(document))
    return prefix / "manifest.json"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    generate_key_file(tmp_path / "key.json")
    return tmp_path / "key.json"


# --- item 2: sealed, bound, safe paths ------------------------------------------------


def test_with_keys_configured_a_plain_manifest_is_refused_unless_migrating(tmp_path, key_file):
    repo_dir = tmp_path / "repo"
    keyring = Keyring.from_files([key_file])
    real = backup(Repository(LocalStore(repo_dir), keyring), make_data_dir(tmp_path))
    plant(repo_dir, new_backup_id())  # present-dated: it would be `latest`
    repo = Repository(LocalStore(repo_dir), keyring)
    catalog = repo.catalog()
    assert [m.backup_id for m in catalog.backups] == [real.backup_id]
    [damaged] = catalog.damaged
    assert "is not encrypted although encryption is configured" in damaged.reason
    assert "encryption.read_unencrypted_before" in damaged.reason
    assert "\n" not in damaged.reason and f"{damaged.backup_id}/manifest.json" in damaged.reason
    assert repo.latest("ks", "s1").backup_id == real.backup_id
    with pytest.raises(IntegrityError, match="not encrypted"):
        repo.find("ks", "s1", damaged.backup_id)
    cutoff = datetime.now(UTC)  # encryption "turned on" after the planted backup's id
    migrating = Repository(LocalStore(repo_dir), keyring, read_unencrypted_before=cutoff)
    assert len(migrating.backups()) == 2 and not migrating.catalog().damaged


@pytest.mark.parametrize("keyed", [False, True])
def test_a_manifest_copied_to_another_shard_or_id_is_refused(tmp_path, key_file, keyed):
    repo_dir = tmp_path / "repo"
    keyring = Keyring.from_files([key_file]) if keyed else Keyring()
    real = backup(Repository(LocalStore(repo_dir), keyring), make_data_dir(tmp_path))
    source = repo_dir / "ks" / "s1" / real.backup_id
    copies = [("ks", "s2", real.backup_id), ("ks", "s1", new_backup_id())]
    for keyspace, shard, backup_id in copies:
        shutil.copytree(source, repo_dir / keyspace / shard / backup_id)
    repo = Repository(LocalStore(repo_dir), keyring)
    catalog = repo.catalog()
    assert [(m.shard, m.backup_id) for m in catalog.backups] == [("s1", real.backup_id)]
    assert sorted((d.shard, d.backup_id) for d in catalog.damaged) == sorted(
        (shard, backup_id) for _, shard, backup_id in copies
    )
    assert repo.latest("ks", "s2") is None
    assert repo.latest("ks", "s1").backup_id == real.backup_id


@pytest.mark.parametrize(
    "path", ["../outside/cron", "/tmp/escape-abs", "shop/../../outside/cron", "shop//x", "./x"]
)
def test_a_path_outside_the_data_dir_is_refused_by_list_and_restore(tmp_path, path):
    repo_dir = tmp_path / "repo"
    repo = Repository(LocalStore(repo_dir))
    real = backup(repo, make_data_dir(tmp_path))
    planted = plant(repo_dir, new_backup_id(), path=path)
    planted_id = planted.parent.name
    catalog = repo.catalog()
    assert [m.backup_id for m in catalog.backups] == [real.backup_id]
    [damaged] = catalog.damaged
    assert "files.0.path" in damaged.reason and "not a normalised relative path" in damaged.reason
    target = tmp_path / "work" / "target"
    with pytest.raises(IntegrityError, match="not a normalised relative path"):
        repo.restore(repo.find("ks", "s1", planted_id), target, jobs=1)
    repo.restore(repo.find("ks", "s1", "latest"), target, jobs=1)
    assert (target / "ibdata1").read_bytes() == (tmp_path / "data" / "ibdata1").read_bytes()
    assert not (tmp_path / "work" / "outside").exists() and not Path("/tmp/escape-abs").exists()


def test_restore_masks_modes_and_keeps_plaintext_private_until_verified(tmp_path):
    repo_dir = tmp_path / "repo"
    repo = Repository(LocalStore(repo_dir))
    plant(repo_dir, new_backup_id(), path="shop/tool", mode=0o104755)
    planted = repo.latest("ks", "s1")
    seen: list[tuple[str, int]] = []
    target = tmp_path / "target"

    def look(_: int) -> None:  # called while the file is being written
        for entry in [target, *target.rglob("*")]:
            seen.append((entry.name, stat.S_IMODE(entry.lstat().st_mode)))

    repo.restore(planted, target, jobs=1, progress=look)
    assert ("shop", 0o700) in seen and ("tool", 0o600) in seen, seen
    assert all(mode in (0o600, 0o700) for _, mode in seen), seen
    # no setuid, and (review item 10) no group or other bits either
    assert stat.S_IMODE((target / "shop" / "tool").stat().st_mode) == 0o700
    assert (target / "shop" / "tool").read_bytes() == PAYLOAD


@pytest.mark.parametrize("chunks", [FORMAT_2, None], ids=["format 2", "format 3"])
def test_a_symlink_raced_into_the_target_is_never_followed(tmp_path, chunks):
    repo = Repository(LocalStore(tmp_path / "repo"), chunks=chunks)
    data = make_data_dir(tmp_path)
    manifest = backup(repo, data)
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    swapped = False

    def swap(_: int) -> None:
        # While ibdata1 (sorted first, one job) arrives, shop/ is replaced by a symlink.
        nonlocal swapped
        if not swapped:
            swapped = True
            (target / "shop").rename(tmp_path / "moved")
            (target / "shop").symlink_to(outside)

    if chunks is FORMAT_2:  # shop/ is reached after the swap: refused
        with pytest.raises(IntegrityError, match="refusing to restore through 'shop'"):
            repo.restore(manifest, target, jobs=1, progress=swap)
        assert not target.exists()
    else:  # format 3 may have opened shop/'s files already: it writes through their fds
        try:
            repo.restore(manifest, target, jobs=1, progress=swap)
        except IntegrityError as exc:
            assert "refusing to restore through 'shop'" in str(exc)
    assert swapped and list(outside.iterdir()) == []


def test_a_target_that_is_itself_a_symlink_is_the_operators_choice(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    data = make_data_dir(tmp_path)
    manifest = backup(repo, data)
    (tmp_path / "disk").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "disk")
    repo.restore(manifest, tmp_path / "link", jobs=2)
    assert (tmp_path / "disk" / "shop" / "orders.ibd").read_bytes() == (
        data / "shop" / "orders.ibd"
    ).read_bytes()


# --- future-dated backups ----------------------------------------------------------------


def test_a_backup_dated_2999_is_never_latest_and_expires(tmp_path):
    repo_dir = tmp_path / "repo"
    repo = Repository(LocalStore(repo_dir))
    data = make_data_dir(tmp_path)
    first = backup(repo, data, created=datetime.now(UTC) - timedelta(days=9))
    second = backup(repo, data)
    plant(repo_dir, FUTURE_ID)
    catalog = repo.catalog()
    assert [m.backup_id for m in catalog.backups][-1] == FUTURE_ID  # listed, not damaged
    assert repo.latest("ks", "s1").backup_id == second.backup_id
    assert repo.find("ks", "s1", "latest").backup_id == second.backup_id
    [skipped] = catalog.skipped("ks", "s1", datetime.now(UTC))
    assert f"future-dated backup {FUTURE_ID}" in skipped
    # min_count 1: the real newest is kept, the future-dated one goes with the older one.
    now = datetime.now(UTC)
    expired = {m.backup_id for m in expired_backups(catalog.backups, 1, timedelta(days=7), now)}
    assert expired == {first.backup_id, FUTURE_ID}
    # min_count 2: the two present-dated ones fill it; the future-dated one still expires.
    expired = {m.backup_id for m in expired_backups(catalog.backups, 2, timedelta(days=7), now)}
    assert expired == {FUTURE_ID}


def test_a_shard_with_only_a_future_dated_backup_has_no_latest(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    plant(tmp_path / "repo", FUTURE_ID)
    assert repo.latest("ks", "s1") is None
    with pytest.raises(IntegrityError, match=f"no usable backup.*future-dated backup {FUTURE_ID}"):
        repo.find("ks", "s1", "latest")


def test_a_manifest_with_a_time_without_zone_is_damaged_not_a_crash(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    plant(tmp_path / "repo", new_backup_id(), created_at="2999-01-01T00:00:00")
    [damaged] = repo.catalog().damaged
    assert "created_at" in damaged.reason and "timezone" in damaged.reason
    assert repo.latest("ks", "s1") is None


# --- item 6: one damaged backup blocks nothing ---------------------------------------------


def flip(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))


def test_a_damaged_newest_backup_is_reported_and_skipped(tmp_path):
    repo_dir = tmp_path / "repo"
    repo = Repository(LocalStore(repo_dir))
    data = make_data_dir(tmp_path)
    older, newer = backup(repo, data), backup(repo, data)
    other = backup(repo, data, shard="s2")
    flip(repo_dir / "ks" / "s1" / newer.backup_id / "manifest.json")
    catalog = repo.catalog()
    assert [m.backup_id for m in catalog.backups] == [older.backup_id, other.backup_id]
    [damaged] = catalog.damaged
    assert damaged.backup_id == newer.backup_id and "altered or damaged" in damaged.reason
    assert repo.find("ks", "s1", "latest").backup_id == older.backup_id
    assert repo.damaged_counts() == {"ks/s1": 1}
    # Prune neither aborts nor deletes the damaged backup; the other shard is pruned.
    repo_s2_second = backup(repo, data, shard="s2")
    result = prune(repo, tmp_path / "work", 1, timedelta(0), dry_run=False)
    assert {e["id"] for e in result.removed} == {other.backup_id}
    assert (repo_dir / "ks" / "s1" / newer.backup_id / "manifest.json").exists()
    assert repo.latest("ks", "s2").backup_id == repo_s2_second.backup_id
    # With every backup of the shard damaged, `latest` says why.
    flip(repo_dir / "ks" / "s1" / older.backup_id / "manifest.json")
    with pytest.raises(IntegrityError, match=f"no usable backup.*damaged backup {older.backup_id}"):
        repo.find("ks", "s1", "latest")


def test_the_daemon_starts_over_a_damaged_backup_and_its_metrics_count_it(tmp_path):
    from catchup.config import parse_config
    from catchup.daemon.service import Daemon

    repo_dir = tmp_path / "repo"
    repo = Repository(LocalStore(repo_dir))
    data = make_data_dir(tmp_path)
    older, newer = backup(repo, data), backup(repo, data)
    flip(repo_dir / "ks" / "s1" / newer.backup_id / "manifest.json")
    config = parse_config(
        {
            "repository": str(repo_dir),
            "work_dir": str(tmp_path / "work"),
            "shards": [
                {
                    "keyspace": "ks",
                    "shard": shard,
                    "source": "db:3306",
                    "credentials": {"password_env": "PW"},
                }
                for shard in ("s1", "s2")
            ],
        },
        "test",
    )
    daemon = Daemon(config, Repository(LocalStore(repo_dir)))  # not started: no threads
    text = exposition(daemon.registry).decode()
    assert 'catchup_shard_damaged_backups{keyspace="ks",shard="s1"} 1.0' in text
    assert 'catchup_shard_damaged_backups{keyspace="ks",shard="s2"} 0.0' in text
    assert daemon.book.states["ks/s1"].newest.backup_id == older.backup_id


# --- items 4 and 5: confirm before commit; cleanup deletes the manifest first -------------


class LostAnswerStore(LocalStore):
    """The manifest's put lands but its answer is lost; cleanup is interrupted after it
    removed one object."""

    def put(self, key: str, data: bytes) -> None:
        super().put(key, data)
        if key.endswith("manifest.json"):
            raise StorageError(f"{self.url}: connection reset writing {key}")

    def delete_prefix(self, prefix: str) -> None:
        for obj in sorted(self.list(prefix), key=lambda o: o.key):
            self.delete(obj.key)
            raise StorageError(f"{self.url}: interrupted deleting {prefix}")


def test_a_failed_commit_never_leaves_a_manifest_naming_deleted_objects(tmp_path):
    repo = Repository(LostAnswerStore(tmp_path / "repo"))
    with pytest.raises(StorageError, match="connection reset"):
        backup(repo, make_data_dir(tmp_path))
    assert not list((tmp_path / "repo").rglob("manifest.json"))
    assert repo.backups() == [] and not repo.catalog().damaged


def test_objects_are_confirmed_then_the_lock_is_checked_before_the_manifest(tmp_path):
    data = make_data_dir(tmp_path)
    events: list[str] = []

    class Recording(LocalStore):
        remove_first_object = False  # a prune from another host, right after the upload

        def put(self, key: str, data: bytes) -> None:
            events.append(f"put {key.rsplit('/', 1)[-1]}")
            super().put(key, data)

        def list(self, prefix: str) -> Iterator[StoredObject]:
            if self.remove_first_object:
                self.remove_first_object = False
                (self.root / prefix / "data" / "000000.zst").unlink()
            return super().list(prefix)

    store = Recording(tmp_path / "repo")
    repo = Repository(store, chunks=FORMAT_2)  # format 3: test_chunks.py
    listing = repo.scan(data, excluded)

    def write(confirm: Callable[[], object]) -> None:
        repo.write_backup(header("s1"), data, listing, CodecSettings(1), 2, confirm=confirm)

    store.remove_first_object = True
    with pytest.raises(IntegrityError, match=r"not committed: object data/000000\.zst is missing"):
        write(lambda: events.append("confirm"))
    assert events == [] and not list((tmp_path / "repo").rglob("manifest.json"))

    def lost_lease() -> None:
        events.append("confirm")
        raise IntegrityError("the shard's lease was lost")

    with pytest.raises(IntegrityError, match="lease was lost"):
        write(lost_lease)
    assert events == ["confirm"] and not list((tmp_path / "repo").rglob("*.zst"))
    write(lambda: events.append("confirm"))
    assert events == ["confirm", "confirm", "put manifest.json"]


# --- item 8: the scanner -------------------------------------------------------------------


def test_a_symlink_or_special_file_is_an_error_unless_the_engine_excludes_it(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    data = make_data_dir(tmp_path)
    (data / "pg_tblspc").mkdir()
    (data / "pg_tblspc" / "16384").symlink_to(tmp_path)
    with pytest.raises(DataDirError, match=r"pg_tblspc/16384' in the data dir is a symbolic link"):
        repo.scan(data, excluded)
    listing = repo.scan(data, lambda rel: excluded(rel) or rel.startswith("pg_tblspc/"))
    assert "pg_tblspc" in listing.directories
    (data / "pg_tblspc" / "16384").unlink()
    os.mkfifo(data / "shop" / "pipe")
    with pytest.raises(DataDirError, match=r"shop/pipe' in the data dir is a named pipe"):
        repo.scan(data, excluded)
    (data / "shop" / "pipe").unlink()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(data / "mysqld.sock"))
        with pytest.raises(DataDirError, match=r"mysqld\.sock' in the data dir is a socket"):
            repo.scan(data, excluded)
        assert repo.scan(data, lambda rel: excluded(rel) or rel.endswith(".sock")).files


def test_an_unreadable_directory_fails_the_scan(tmp_path):
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    (data / "a" / "f").write_bytes(b"x")
    (data / "b").write_bytes(b"y")

    def vanish(rel: str) -> bool:  # a/ is listed, then disappears before it is read
        if rel == "b":
            shutil.rmtree(data / "a")
        return False

    with pytest.raises(DataDirError, match=r"cannot list '.*/data/a' in the data dir"):
        Repository(LocalStore(tmp_path / "repo")).scan(data, vanish)


def test_an_empty_listing_is_refused_before_anything_is_stored(tmp_path):
    data = tmp_path / "data"
    (data / "empty_db").mkdir(parents=True)
    (data / "relay-bin.000001").write_bytes(b"excluded")
    repo = Repository(LocalStore(tmp_path / "repo"))
    with pytest.raises(DataDirError, match="holds no file to back up"):
        backup(repo, data)
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").rglob("*"))


# --- through the real CLI ------------------------------------------------------------------


def cli_config(tmp_path: Path, key_file: Path, extra: str = "") -> Path:
    (tmp_path / "pw").write_text("secret\n")
    (tmp_path / "pw").chmod(0o600)
    path = tmp_path / "catchup.toml"
    path.write_text(
        f'repository = "{tmp_path / "repo"}"\nwork_dir = "{tmp_path / "work"}"\n'
        '[[shards]]\nkeyspace = "ks"\nshard = "s1"\nsource = "127.0.0.1:1"\n'
        f'credentials = {{ user = "catchup", password_file = "{tmp_path / "pw"}" }}\n'
        f'[encryption]\nkey_files = ["{key_file}"]\n{extra}'
    )
    return path


def test_cli_refuses_a_planted_plain_manifest_dated_2999_with_an_escaping_path(tmp_path, key_file):
    repo_dir = tmp_path / "repo"
    data = make_data_dir(tmp_path)
    real = backup(Repository(LocalStore(repo_dir), Keyring.from_files([key_file])), data)
    plant(repo_dir, FUTURE_ID, path="../../outside/cron.d/x", mode=0o104755)
    config = str(cli_config(tmp_path, key_file))

    listed = run_cli("list", "--json", "-c", config)
    assert listed.returncode == 0, listed.stderr
    states = {entry["id"]: entry["state"] for entry in json.loads(listed.stdout)}
    assert states == {real.backup_id: "ok", FUTURE_ID: "damaged"}
    human = run_cli("list", "-c", config)
    assert "DAMAGED" in human.stdout and f"{FUTURE_ID}: manifest" in human.stdout

    target = tmp_path / "restore" / "target"
    restored = run_cli("restore", "ks/s1", "latest", "-t", str(target), "-c", config)
    assert restored.returncode == 0, restored.stderr
    assert real.backup_id in restored.stdout
    assert (target / "ibdata1").read_bytes() == (data / "ibdata1").read_bytes()

    refused = run_cli("restore", "ks/s1", FUTURE_ID, "-t", str(tmp_path / "t2"), "-c", config)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert f"ks/s1/{FUTURE_ID}/manifest.json is not encrypted" in line
    assert "encryption.read_unencrypted_before" in line

    # Even while migrating plain backups, an escaping path (in one dated before) is refused.
    old_id = plant(repo_dir, new_backup_id(), path="../../outside/cron.d/x").parent.name
    cutoff = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    migrating = str(cli_config(tmp_path, key_file, f"read_unencrypted_before = {cutoff}\n"))
    again = run_cli("restore", "ks/s1", old_id, "-t", str(tmp_path / "t3"), "-c", migrating)
    assert again.returncode == 1 and "files.0.path" in again.stderr, again.stderr
    assert not (tmp_path / "outside").exists() and not (tmp_path / "restore" / "outside").exists()
    assert not (tmp_path / "t2").exists() and not (tmp_path / "t3").exists()


def test_a_planted_path_with_markup_is_quoted_not_interpreted(tmp_path, key_file):
    repo_dir = tmp_path / "repo"
    plant(repo_dir, new_backup_id(), path="[/x]/../../outside")
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    config = cli_config(tmp_path, key_file, f"read_unencrypted_before = {now}\n")
    planted_id = next((repo_dir / "ks" / "s1").iterdir()).name
    refused = run_cli("restore", "ks/s1", planted_id, "-t", str(tmp_path / "t"), "-c", str(config))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "'[/x]/../../outside'" in refused.stderr
    listed = run_cli("list", "-c", str(config))
    assert listed.returncode == 0 and "[/x]/../../outside" in listed.stdout, listed.stderr
