"""Defects a review found in the issue 12 work: hostile manifests that are not objects,
markup in stored names, retention and clock skew, the plain-manifest cutoff, key problems
that look like damage, and restore targets that cannot be written."""

from __future__ import annotations

import json
import os
import pty
import resource
import select
import signal
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from catchup.codec.keys import Keyring, generate_key_file
from catchup.config import Shard, load_config, parse_config
from catchup.cycle import CycleOptions, Plan, precheck
from catchup.engines import Coverage, Verdict
from catchup.errors import ConfigError, KeyUnavailableError
from catchup.fleet.prune import prune
from catchup.repository import Manifest, Repository
from catchup.repository.layout import new_backup_id
from catchup.repository.retention import expired_backups
from catchup.storage.local import LocalStore
from tests.conftest import REPO, run_cli
from tests.unit.test_manifest_trust import FUTURE_ID, backup, cli_config, flip, plant
from tests.unit.test_repository import make_data_dir, manifest_without_files


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    generate_key_file(tmp_path / "key.json")
    return tmp_path / "key.json"


# --- item 2: a manifest that is not an object is damaged, not a crash ---------------------

NOT_OBJECTS = {
    "list": "[]",
    "null": "null",
    "string": '"x"',
    "numeric key_id": json.dumps(
        {
            "format": "catchup-manifest",
            "version": 1,
            "encryption": {"key_id": 5, "wrapped_data_key": ""},
            "sealed_manifest": "",
        }
    ),
    "encryption a list": json.dumps(
        {"format": "catchup-manifest", "version": 1, "encryption": [], "sealed_manifest": ""}
    ),
    "manifest a list": json.dumps(
        {"format": "catchup-manifest", "version": 1, "sha256": "0", "manifest": []}
    ),
}


@pytest.mark.parametrize("keyed", [False, True])
def test_a_manifest_that_is_not_an_object_is_reported_damaged(tmp_path, key_file, keyed):
    repo_dir = tmp_path / "repo"
    keyring = Keyring.from_files([key_file]) if keyed else Keyring()
    real = backup(Repository(LocalStore(repo_dir), keyring), make_data_dir(tmp_path))
    planted = {}
    for what, blob in NOT_OBJECTS.items():
        backup_id = new_backup_id()
        (repo_dir / "ks" / "s1" / backup_id).mkdir(parents=True)
        (repo_dir / "ks" / "s1" / backup_id / "manifest.json").write_text(blob)
        planted[backup_id] = what
    catalog = Repository(LocalStore(repo_dir), keyring).catalog()
    assert [m.backup_id for m in catalog.backups] == [real.backup_id]
    assert {d.backup_id for d in catalog.damaged} == set(planted)
    for damaged in catalog.damaged:
        # keyed, a plain one is refused as not encrypted before its fields are read
        expected = (
            "not encrypted"
            if planted[damaged.backup_id] == "manifest a list" and keyed
            else "altered or damaged"
        )
        assert expected in damaged.reason, (planted[damaged.backup_id], damaged)

    config = str(cli_config(tmp_path, key_file) if keyed else plain_config(tmp_path))
    listed = run_cli("list", "--json", "-c", config)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    states = {entry["id"]: entry["state"] for entry in json.loads(listed.stdout)}
    assert states == {real.backup_id: "ok", **{i: "damaged" for i in planted}}


def plain_config(tmp_path: Path, extra: str = "") -> Path:
    """cli_config without encryption."""
    path = cli_config(tmp_path, tmp_path / "unused")
    text = path.read_text()
    path.write_text(text[: text.index("[encryption]")] + extra)
    return path


# --- item 3: markup in store keys and manifest fields is printed, not interpreted ---------


def test_markup_in_store_keys_and_manifest_fields_is_quoted_everywhere(tmp_path):
    """Extends test_manifest_trust's markup test to the tables of list, show, check, prune."""
    repo_dir = tmp_path / "repo"
    planted = plant(repo_dir, new_backup_id(), position="[/x]").parent.name
    # keyspace "k[" and shard "x]s" print as "k[/x]s": a damaged manifest and an old
    # incomplete prefix there.
    damaged_id = new_backup_id(datetime.now(UTC) - timedelta(minutes=1))
    (repo_dir / "k[" / "x]s" / damaged_id).mkdir(parents=True)
    (repo_dir / "k[" / "x]s" / damaged_id / "manifest.json").write_text("[]")
    leftover = repo_dir / "k[" / "x]s" / "20200101T000000000Z-abcdef" / "data"
    leftover.mkdir(parents=True)
    (leftover / "000000.zst").write_bytes(b"x")
    old = time.time() - 30 * 86400
    os.utime(leftover / "000000.zst", (old, old))
    config = str(plain_config(tmp_path))

    crashed = []  # every command is tried, so that each one is proven
    for command in (["list"], ["show", planted], ["check"], ["prune", "--dry-run"]):
        done = run_cli(*command, "-c", config)
        if "Traceback" in done.stderr or done.returncode not in (0, 1):
            crashed.append((command[0], done.stderr.strip().splitlines()[-1:]))
            continue
        if command[0] in ("list", "check"):
            assert "k[/x]s" in done.stdout, (command, done.stdout)
        if command[0] in ("list", "show"):
            assert "[/x]" in done.stdout.replace("k[/x]s", ""), (command, done.stdout)
        if command[0] == "prune":
            line = "would remove k[/x]s 20200101T000000000Z-abcdef (incomplete)"
            assert line in done.stdout, done.stdout
    assert crashed == []


# --- item 4: a backup that only looks early (a slow pruning host) is never pruned -----------


@pytest.mark.parametrize("min_age", [timedelta(0), timedelta(days=7)])
def test_prune_on_a_host_with_a_slow_clock_keeps_the_just_committed_backup(tmp_path, min_age):
    repo_dir = tmp_path / "repo"
    repo = Repository(LocalStore(repo_dir))
    data = make_data_dir(tmp_path)
    older = backup(repo, data, created=datetime.now(UTC) - timedelta(days=30))
    just_committed = backup(repo, data)
    hours_late = datetime.now(UTC) - timedelta(hours=3)  # the pruning host's clock
    result = prune(repo, tmp_path / "work", 1, min_age, dry_run=False, now=hours_late)
    assert just_committed.backup_id not in {e["id"] for e in result.removed}
    assert repo.latest("ks", "s1").backup_id == just_committed.backup_id
    # It still shields nothing: the older one is the newest present-dated, so it is kept.
    assert {m.backup_id for m in repo.backups()} == {older.backup_id, just_committed.backup_id}
    # A forgery far in the future still expires, beside present-dated ones.
    plant(repo_dir, FUTURE_ID)
    result = prune(repo, tmp_path / "work", 1, min_age, dry_run=False)
    assert FUTURE_ID in {e["id"] for e in result.removed}


def test_a_future_dated_backup_expires_only_beyond_a_day_or_min_age():
    now = datetime.now(UTC)
    present = manifest_without_files(
        new_backup_id(now - timedelta(days=40)), shard="s1", created=now - timedelta(days=40)
    )

    def ahead(delta: timedelta) -> Manifest:
        return manifest_without_files(new_backup_id(now + delta), shard="s1", created=now + delta)

    backups = [
        present,
        ahead(timedelta(hours=23)),
        ahead(timedelta(days=2)),
        ahead(timedelta(days=20)),
    ]
    expired = {m.backup_id for m in expired_backups(backups, 1, timedelta(days=7), now)}
    assert expired == {backups[3].backup_id}
    expired = {m.backup_id for m in expired_backups(backups, 1, timedelta(0), now)}
    assert expired == {backups[2].backup_id, backups[3].backup_id}


# --- item 5: plain manifests are read only when dated before encryption was turned on -------


def test_only_plain_backups_dated_before_the_cutoff_are_read(tmp_path, key_file):
    repo_dir = tmp_path / "repo"
    keyring = Keyring.from_files([key_file])
    three_days_ago = datetime.now(UTC) - timedelta(days=3)
    before = plant(repo_dir, new_backup_id(three_days_ago), created_at=three_days_ago.isoformat())
    cutoff = datetime.now(UTC) - timedelta(days=1)  # encryption turned on a day ago
    real = backup(Repository(LocalStore(repo_dir), keyring), make_data_dir(tmp_path))
    current = plant(repo_dir, new_backup_id(), shard="s1")  # planted by a bucket writer
    # An old id with a current created_at: still refused.
    forged_id = new_backup_id(datetime.now(UTC) - timedelta(days=2))
    forged = plant(repo_dir, forged_id, created_at=datetime.now(UTC).isoformat())
    repo = Repository(LocalStore(repo_dir), keyring, read_unencrypted_before=cutoff)
    catalog = repo.catalog()
    assert {m.backup_id for m in catalog.backups} == {before.parent.name, real.backup_id}
    reasons = {d.backup_id: d.reason for d in catalog.damaged}
    assert set(reasons) == {current.parent.name, forged.parent.name}
    assert "encryption.read_unencrypted_before" in reasons[current.parent.name]
    assert "after encryption.read_unencrypted_before" in reasons[forged.parent.name]
    assert repo.latest("ks", "s1").backup_id == real.backup_id


def encryption_config(tmp_path: Path, encryption: dict) -> dict:
    return {
        "repository": str(tmp_path / "repo"),
        "work_dir": str(tmp_path / "work"),
        "shards": [{"keyspace": "ks", "shard": "s1", "source": "db:3306"}],
        "encryption": encryption,
    }


@pytest.mark.parametrize(
    ("encryption", "expected"),
    [
        ({"read_unencrypted_backups": True}, "read_unencrypted_backups was replaced"),
        ({"read_unencrypted_before": "2999-01-01T00:00:00Z"}, "is in the future"),
        ({"read_unencrypted_before": "2026-01-01T00:00:00"}, "add a zone"),
        ({"kms_previous_keys": ["alias/old"]}, "kms_previous_keys is set but neither kms_key"),
    ],
)
def test_encryption_setting_mistakes_are_one_line_config_errors(tmp_path, encryption, expected):
    with pytest.raises(ConfigError) as raised:
        parse_config(encryption_config(tmp_path, encryption), "catchup.toml")
    message = str(raised.value)
    assert expected in message and "\n" not in message, message
    assert message.startswith("catchup.toml: encryption"), message


def test_a_cutoff_in_toml_and_previous_keys_with_a_current_key_are_accepted(tmp_path):
    path = tmp_path / "catchup.toml"
    path.write_text(
        f'repository = "{tmp_path / "repo"}"\nwork_dir = "{tmp_path / "work"}"\n'
        '[[shards]]\nkeyspace = "ks"\nshard = "s1"\nsource = "db:3306"\n'
        '[encryption]\nkms_key = "alias/new"\nkms_previous_keys = ["alias/old"]\n'
        "read_unencrypted_before = 2026-11-01T00:00:00Z\n"
    )
    config = load_config(path)
    assert config.encryption.read_unencrypted_before == datetime(2026, 11, 1, tzinfo=UTC)


# --- item 6: a key problem fails the cycle instead of bootstrapping ------------------------


class CoveredSource:
    """Pure logic: a ready source, always the same server, that still holds the log."""

    def require_ready(self) -> None: ...

    def identity(self) -> str:
        return "server 1"

    def judge(self, position: str) -> Verdict:
        return Verdict(Coverage.COVERED, "the source holds the log")


class Warnings:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def step(self, shard: str, step: str) -> None: ...

    def progress(self, shard: str, done: int, total: int) -> None: ...

    def warn(self, shard: str, message: str) -> None:
        self.messages.append(message)


SHARD = Shard(keyspace="ks", shard="s1", source="db:3306")


def plan(repo: Repository, **options: bool) -> Plan:
    return precheck(repo, CoveredSource(), SHARD, CycleOptions(**options), Warnings())


def test_a_key_removed_from_the_config_fails_the_cycle_naming_the_key(tmp_path, key_file):
    repo_dir = tmp_path / "repo"
    data = make_data_dir(tmp_path)
    old_key = Keyring.from_files([key_file])
    older = backup(Repository(LocalStore(repo_dir), old_key), data, shard="s1")
    generate_key_file(tmp_path / "new.json")
    new_key = Keyring.from_files([tmp_path / "new.json"])
    newest = backup(Repository(LocalStore(repo_dir), new_key), data, shard="s1")
    assert plan(Repository(LocalStore(repo_dir), new_key)).parent.backup_id == newest.backup_id
    # The new key file "removed early": the newest backup needs it; no bootstrap, no
    # catching up the older one either.
    with pytest.raises(KeyUnavailableError) as raised:
        plan(Repository(LocalStore(repo_dir), old_key))
    message = str(raised.value)
    assert f"newest backup {newest.backup_id} cannot be opened" in message, message
    assert new_key.active.key_id in message and "\n" not in message
    # With no key configured any more, every backup is locked out: still no bootstrap.
    with pytest.raises(KeyUnavailableError, match=newest.backup_id):
        plan(Repository(LocalStore(repo_dir), Keyring.from_files([tmp_path / "new.json"][:0])))
    # --bootstrap is the operator's way out when a key is gone for good.
    assert plan(Repository(LocalStore(repo_dir), old_key), force_bootstrap=True).parent is None
    # A key missing only for backups older than the one used blocks nothing.
    assert plan(Repository(LocalStore(repo_dir), new_key)).parent.backup_id == newest.backup_id
    assert older.backup_id < newest.backup_id


def test_real_damage_still_builds_on_the_newest_intact_backup(tmp_path, key_file):
    repo_dir = tmp_path / "repo"
    keyring = Keyring.from_files([key_file])
    repo = Repository(LocalStore(repo_dir), keyring)
    data = make_data_dir(tmp_path)
    older, newer = backup(repo, data, shard="s1"), backup(repo, data, shard="s1")
    flip(repo_dir / "ks" / "s1" / newer.backup_id / "manifest.json")
    assert plan(Repository(LocalStore(repo_dir), keyring)).parent.backup_id == older.backup_id


class DecryptRevoked:
    """A key whose wrap works but whose unwrap is refused (kms:Decrypt taken away)."""

    key_id = "kms:arn:aws:kms:eu-west-1:111122223333:key/revoked"

    def wrap(self, data_key: bytes, context: bytes) -> tuple[str, bytes]:
        return self.key_id, b"wrapped"

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        raise KeyUnavailableError(
            f"KMS at eu-west-1: the wrapped data key does not open with KMS key {self.key_id} "
            "(AccessDeniedException)"
        )


def test_check_encryption_unwraps_too(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"), Keyring((DecryptRevoked(),)))
    with pytest.raises(KeyUnavailableError, match="AccessDeniedException"):
        repo.check_encryption()


# --- item 9: a target that cannot be created or written is one line -------------------------


def restore_cli(config: Path, target: Path | str, limit_file_size: int | None = None):
    def limit() -> None:  # in the child: a write past the limit fails (EFBIG), like ENOSPC
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    return subprocess.run(
        [sys.executable, "-m", "catchup", "restore", "ks/s1", "-t", str(target), "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limit if limit_file_size else None,
    )


def test_restore_into_an_unwritable_target_is_one_line_naming_it(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    backup(repo, make_data_dir(tmp_path), shard="s1")
    config = plain_config(tmp_path)
    (tmp_path / "a-file").write_bytes(b"")
    targets = {
        "/proc/catchup-nowhere/target": None,
        str(tmp_path / ("x" * 300)): "File name too long",
        str(tmp_path / "a-file" / "target"): "a-file')",  # a file where a dir must be
        str(tmp_path / "full"): "File too large",
    }
    for target, reason in targets.items():
        done = restore_cli(config, target, 1_000_000 if target.endswith("full") else None)
        assert done.returncode == 1, (target, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert f"cannot restore into '{target}'" in line, line
        assert reason is None or reason in line, line
    assert not (tmp_path / "full").exists()  # what was written is removed again


# --- item 12: warn only about what the cycle passed over -----------------------------------


def test_precheck_warns_only_about_skipped_backups_newer_than_the_one_used(tmp_path):
    repo_dir = tmp_path / "repo"
    repo = Repository(LocalStore(repo_dir))
    data = make_data_dir(tmp_path)
    old, used, newest = (backup(repo, data, shard="s1") for _ in range(3))
    flip(repo_dir / "ks" / "s1" / old.backup_id / "manifest.json")
    reporter = Warnings()
    chosen = precheck(repo, CoveredSource(), SHARD, CycleOptions(), reporter)
    assert chosen.parent.backup_id == newest.backup_id and reporter.messages == []
    flip(repo_dir / "ks" / "s1" / newest.backup_id / "manifest.json")
    chosen = precheck(repo, CoveredSource(), SHARD, CycleOptions(), reporter)
    assert chosen.parent.backup_id == used.backup_id
    [warning] = reporter.messages
    assert f"damaged backup {newest.backup_id}" in warning and old.backup_id not in warning


# --- item 10: restored files keep only their owner's permission bits -----------------------


def test_restored_files_get_no_group_or_other_bits(tmp_path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    data = make_data_dir(tmp_path)
    (data / "ibdata1").chmod(0o666)
    (data / "shop" / "orders.ibd").chmod(0o640)
    manifest = backup(repo, data, shard="s1")
    repo.restore(manifest, tmp_path / "target", jobs=2)
    modes = {
        str(p.relative_to(tmp_path / "target")): stat.S_IMODE(p.stat().st_mode)
        for p in (tmp_path / "target").rglob("*")
    }
    assert modes["ibdata1"] == 0o600 and modes["shop/orders.ibd"] == 0o600, modes
    assert all(mode & 0o077 == 0 for mode in modes.values()), modes


# --- item 14: an encrypted TLS key is one line, not a pass phrase prompt -------------------


def test_an_encrypted_tls_key_fails_in_one_line_even_on_a_terminal(tmp_path):
    from tests.unit.test_serve import ENV, certificate, pem

    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "cert.pem").write_bytes(pem(certificate("catchup", key, None, key, ca=True)))
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass phrase"),
        )
    )
    key_file.chmod(0o600)
    config = plain_config(
        tmp_path,
        f'[daemon]\ntls_cert = "{tmp_path / "cert.pem"}"\ntls_key = "{key_file}"\n',
    )
    # On a terminal (the child's controlling tty), OpenSSL would prompt and wait.
    pid, terminal = pty.fork()
    if pid == 0:  # the child
        os.chdir(REPO)
        os.environ.update(ENV)
        os.execv(sys.executable, [sys.executable, "-m", "catchup", "serve", "-c", str(config),
                                  "--listen", "127.0.0.1:0"])  # fmt: skip
    output, finished, status = b"", 0, 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([terminal], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(terminal, 4096)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            if b"pass phrase:" in output.lower():
                break
        finished, status = os.waitpid(pid, os.WNOHANG)
        if not finished:
            time.sleep(2)
            finished, status = os.waitpid(pid, os.WNOHANG)
    finally:
        if not finished:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(terminal)
    text = output.decode(errors="replace")
    assert finished and os.waitstatus_to_exitcode(status) == 2, text
    assert "the key is encrypted with a pass phrase" in text and "Traceback" not in text, text
