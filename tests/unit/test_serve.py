"""`catchup serve` as a real process, without database servers: with daemon.tls_cert and
tls_key it serves its API over HTTPS with a certificate signed by a CA made here and
refuses plain HTTP on that port; with the Kubernetes executor it starts without the
source password, which only the cycle Jobs use."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from catchup.engines.relay import free_port
from tests.conftest import REPO, run_cli, wait_until_ready

TOKEN = "tls-test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey, ca: bool,
) -> x509.Certificate:  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 it signed: (ca.pem, cert.pem, key.pem)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("catchup test CA", ca_key, None, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate("catchup daemon", key, ca, ca_key, ca=False)
    (tmp_path / "ca.pem").write_bytes(pem(ca))
    (tmp_path / "cert.pem").write_bytes(pem(cert))
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return tmp_path / "ca.pem", tmp_path / "cert.pem", key_file


def write_config(tmp_path: Path, cert: Path, key: Path) -> Path:
    config = tmp_path / "catchup.toml"
    config.write_text(
        f'repository = "{tmp_path / "repo"}"\nwork_dir = "{tmp_path / "work"}"\n'
        '[credentials]\npassword_env = "TLS_TEST_PW"\n'
        f'[daemon]\ntls_cert = "{cert}"\ntls_key = "{key}"\n'
        '[[shards]]\nkeyspace = "ks"\nshard = "0"\nsource = "127.0.0.1:1"\n'
    )
    return config


ENV = {"CATCHUP_API_TOKEN": TOKEN, "TLS_TEST_PW": "unused"}


@contextmanager
def serving(config: Path, ca: Path | None) -> Iterator[tuple[int, httpx.Client]]:
    """The daemon on a free port, over HTTPS trusting `ca`, or plain HTTP without one."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "catchup", "serve", "-c", str(config), "--listen",
         f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **ENV}, cwd=REPO,
    )  # fmt: skip
    if ca is None:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    else:
        trust = ssl.create_default_context(cafile=str(ca))
        client = httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trust, timeout=10)
    try:
        wait_until_ready(process, client, lambda: process.communicate()[0])
        yield port, client
    finally:
        client.close()
        process.terminate()
        process.wait(30)


def test_the_daemon_serves_https_with_the_configured_certificate(tmp_path, tls_files):
    ca, cert, key = tls_files
    with serving(write_config(tmp_path, cert, key), ca) as (port, client):
        metrics = client.get("/metrics", headers=AUTH)
        assert metrics.status_code == 200
        assert "catchup_" in metrics.text
        assert client.get("/api/shards", headers=AUTH).json()[0]["shard"] == "ks/0"
        assert client.get("/api/shards").status_code == 401  # TLS does not replace the token
        # Plain HTTP on the TLS port gets no answer.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        # Nor does a client that does not trust the daemon's CA.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"https://127.0.0.1:{port}/healthz", timeout=10)


def test_a_world_readable_tls_key_stops_the_daemon_in_one_line(tmp_path, tls_files):
    _, cert, key = tls_files
    key.chmod(0o644)
    result = run_cli("serve", "-c", str(write_config(tmp_path, cert, key)), env=ENV)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: daemon.tls_key = '{key}': mode 0644 lets other users read or change it; "
        f"run `chmod 600 {key}`"
    )


def test_a_key_that_does_not_match_the_certificate_stops_the_daemon_in_one_line(
    tmp_path, tls_files
):
    _, cert, _ = tls_files
    other = tmp_path / "other.pem"
    other.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    other.chmod(0o600)
    result = run_cli("serve", "-c", str(write_config(tmp_path, cert, other)), env=ENV)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: daemon.tls_cert = '{cert}', daemon.tls_key = '{other}': ")
    assert "cannot be loaded" in line


def test_a_certificate_without_its_key_is_a_config_error(tmp_path, tls_files):
    _, cert, _ = tls_files
    config = write_config(tmp_path, cert, cert)
    config.write_text(config.read_text().replace(f'tls_key = "{cert}"\n', ""))
    result = run_cli("serve", "-c", str(config), env=ENV)
    assert result.returncode == 2
    assert "tls_cert and tls_key go together" in result.stderr


def test_with_the_kubernetes_executor_the_daemon_needs_no_source_password(tmp_path):
    """The daemon only creates Jobs; their pods read the password. The shipped Deployment
    does not mount it (tests/unit/test_deploy.py), so the daemon must start without it."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(  # never dialled: nothing is scheduled or triggered here
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n"
        "users:\n- name: u\n  user:\n    token: unused\n"
        "contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n"
    )
    config = tmp_path / "catchup.toml"
    config.write_text(
        f'repository = "{tmp_path / "repo"}"\nwork_dir = "{tmp_path / "work"}"\n'
        f'[credentials]\npassword_file = "{tmp_path / "not-mounted-here"}"\n'
        f'[executor]\nkind = "kubernetes"\n[kubernetes]\nkubeconfig = "{kubeconfig}"\n'
        '[[shards]]\nkeyspace = "ks"\nshard = "0"\nsource = "127.0.0.1:1"\n'
    )
    with serving(config, None) as (_, client):
        assert client.get("/api/shards", headers=AUTH).json()[0]["shard"] == "ks/0"
    # The local executor logs in itself: there, a missing password stops it at once.
    config.write_text(config.read_text().replace('kind = "kubernetes"', 'kind = "local"'))
    result = run_cli("serve", "-c", str(config), env=ENV)
    assert result.returncode == 2
    assert "credentials.password_file" in result.stderr and "cannot be read" in result.stderr
