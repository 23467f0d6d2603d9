"""Key, password, token and TLS key files that other users can read are refused,
as ssh refuses such a private key: one line naming the file, its mode and the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from catchup.codec.keys import generate_key_file, load_key_file
from catchup.config import Credentials, DaemonSettings
from catchup.errors import ConfigError
from catchup.files import check_private
from tests.conftest import run_cli

TOKEN = "0123456789abcdef0123456789abcdef"


def secret(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def read_key(path: Path) -> object:
    return load_key_file(path, "encryption.key_files[0]")


def read_password(path: Path) -> object:
    return Credentials(password_file=path).password()


def read_token(path: Path) -> object:
    return DaemonSettings(token_file=path).token()


def read_tls_key(path: Path) -> object:
    cert = path.with_name("cert.pem")
    cert.write_text("not checked here")  # a certificate is public: any mode will do
    return DaemonSettings(tls_cert=cert, tls_key=path).tls_files()


def key_text(tmp_path: Path) -> str:
    generate_key_file(tmp_path / "made.json")
    return (tmp_path / "made.json").read_text()


KINDS = {
    "key": ("encryption.key_files[0]", read_key),
    "password": ("credentials.password_file", read_password),
    "token": ("daemon.token_file", read_token),
    "tls key": ("daemon.tls_key", read_tls_key),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", [0o644, 0o604, 0o640, 0o620, 0o660])
def test_a_secret_file_others_can_read_is_refused_in_one_line(tmp_path, kind, mode):
    setting, read = KINDS[kind]
    text = key_text(tmp_path) if kind == "key" else TOKEN
    path = secret(tmp_path / "secret", text, mode)
    with pytest.raises(ConfigError) as caught:
        read(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{setting} = '{path}': mode {mode:04o} ")
    assert message.endswith(f"run `chmod 600 {path}`")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_secret_file_only_its_owner_can_read_is_accepted(tmp_path, kind, mode):
    _, read = KINDS[kind]
    text = key_text(tmp_path) if kind == "key" else TOKEN
    assert read(secret(tmp_path / "secret", text, mode))


def test_a_secret_file_another_user_owns_is_refused(tmp_path):
    path = secret(tmp_path / "password", "pw\n", 0o600)
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    os.chown(path, 54321, 54321)
    with pytest.raises(ConfigError, match=r"owned by uid 54321, neither you .* nor root"):
        read_password(path)


def stat_of(mode: int, uid: int) -> os.stat_result:
    return os.stat_result((0o100000 | mode, 0, 0, 1, uid, 10001, 0, 0, 0, 0))


def test_root_may_hand_a_secret_to_the_readers_group_as_a_kubernetes_secret_volume_does(
    monkeypatch,
):
    """A Secret volume with an fsGroup: files owned by root, group fsGroup, mode 0440."""
    monkeypatch.setattr(os, "geteuid", lambda: 10001)
    check_private(stat_of(0o440, 0), Path("/s/token"), "daemon.token_file")
    check_private(stat_of(0o640, 0), Path("/s/token"), "daemon.token_file")
    for too_open in (0o444, 0o460, 0o442):  # world-readable, group-writable, world-writable
        with pytest.raises(ConfigError, match=f"mode {too_open:04o} lets other users"):
            check_private(stat_of(too_open, 0), Path("/s/token"), "daemon.token_file")
    # Root itself gets the owner's rule: its own group-readable file is refused.
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(ConfigError, match="mode 0440 lets other users"):
        check_private(stat_of(0o440, 0), Path("/s/token"), "daemon.token_file")


def test_a_kubernetes_secret_volume_layout_is_accepted(tmp_path, monkeypatch):
    """What the kubelet writes for a Secret with an fsGroup: the file behind two symlinks
    (token -> ..data/token, ..data -> ..<timestamp>), owned by root, mode 0440."""
    if os.geteuid() != 0:
        pytest.skip("only root can make a root-owned file here")
    version = tmp_path / "..2026_12_03_05_00_00.000000001"
    version.mkdir()
    secret(version / "token", TOKEN, 0o440)
    os.chown(version / "token", 0, 10001)
    (tmp_path / "..data").symlink_to(version.name)
    (tmp_path / "token").symlink_to("..data/token")
    monkeypatch.setattr(os, "geteuid", lambda: 10001)  # the pod's user reads it
    assert read_token(tmp_path / "token").get_secret_value() == TOKEN
    (version / "token").chmod(0o444)  # defaultMode 0444 or 0644: world-readable
    with pytest.raises(ConfigError, match=f"'{tmp_path / 'token'}': mode 0444 lets other users"):
        read_token(tmp_path / "token")


def test_keygen_creates_the_key_file_0600_whatever_the_umask(tmp_path):
    previous = os.umask(0)
    try:
        generate_key_file(tmp_path / "key.json")
    finally:
        os.umask(previous)
    assert (tmp_path / "key.json").stat().st_mode & 0o777 == 0o600


def test_the_cli_refuses_a_world_readable_password_file_in_one_line(tmp_path):
    password = secret(tmp_path / "source.password", "pw\n", 0o644)
    config = tmp_path / "catchup.toml"
    config.write_text(
        f'repository = "{tmp_path / "repo"}"\nwork_dir = "{tmp_path / "work"}"\n'
        f'[credentials]\npassword_file = "{password}"\n'
        '[[shards]]\nkeyspace = "ks"\nshard = "0"\nsource = "127.0.0.1:1"\n'
    )
    result = run_cli("backup", "--all", "-c", str(config))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (
        f"error: credentials.password_file = '{password}': mode 0644 lets other users read "
        f"or change it; run `chmod 600 {password}`"
    )
