"""`catchup serve`: the daemon process. It listens, runs the daemon and the API
until SIGTERM or SIGINT, then stops taking work and drops queued cycles;
running cycles either finish (`on_terminate = "finish"`) or are cancelled and
unwind through their cleanup (`"abandon"`). A second signal abandons.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn
from fastapi import FastAPI

from catchup.config import Config
from catchup.daemon.api import create_app
from catchup.daemon.service import Daemon
from catchup.errors import ConfigError, UsageError
from catchup.repository import Repository

log = logging.getLogger("catchup.daemon")


def bind(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise UsageError(f"daemon.listen = {listen!r}: cannot listen ({exc.strerror})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def server_config(app: FastAPI, tls: tuple[Path, Path] | None) -> uvicorn.Config:
    """uvicorn's settings, with the TLS certificate and key loaded now: a bad pair stops
    the daemon with one line before it listens, not later in the server's thread."""
    cert, key = tls or (None, None)
    if cert and key:
        refuse_encrypted_key(cert, key)
    settings = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        ssl_certfile=cert,
        ssl_keyfile=key,
    )
    try:
        settings.load()
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise ConfigError(
            f"daemon.tls_cert = '{cert}', daemon.tls_key = '{key}': cannot be loaded "
            f"({reason}); give a PEM certificate and the PEM key that matches it"
        ) from None
    return settings


def refuse_encrypted_key(cert: Path, key: Path) -> None:
    """Load the pair once with a password callback that refuses: without one, OpenSSL
    asks for an encrypted key's pass phrase on the terminal and the daemon hangs there."""

    def no_password() -> str:
        raise ConfigError(
            f"daemon.tls_key = '{key}': the key is encrypted with a pass phrase, which catchup "
            "cannot ask for; give it unencrypted (e.g. `openssl pkey -in KEY -out NEW`), "
            "mode 0600"
        )

    with contextlib.suppress(OSError, ssl.SSLError):  # reported by the settings' own load
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, no_password)


def serve(
    config: Config,
    repository: Repository,
    on_terminate: str,
    announce: Callable[[str], None] = print,
) -> None:
    """Run the daemon until SIGTERM or SIGINT."""
    token = config.daemon.token()
    tls = config.daemon.tls_files()
    daemon = Daemon(config, repository)
    app = create_app(daemon, token)
    server = uvicorn.Server(server_config(app, tls))  # a bad TLS pair stops us before we listen
    sock = bind(config.daemon.listen)
    web = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="http")

    signals: list[int] = []
    received = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals.append(signum)
        received.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    daemon.start()
    web.start()
    host, port = sock.getsockname()[:2]
    url = f"{'https' if tls else 'http'}://{host}:{port}/"
    log.info("listening on %s", url)
    announce(url)
    received.wait()
    log.info("received %s", signal.Signals(signals[0]).name)
    abandon = on_terminate == "abandon"
    stopper = threading.Thread(target=daemon.stop, args=(abandon,), name="stop")
    stopper.start()
    while stopper.is_alive():
        received.clear()
        if received.wait(0.5) and not abandon:
            log.info("second signal: abandoning running cycles")
            abandon = True
            daemon.stop(abandon=True, timeout=0)
    server.should_exit = True
    web.join(10)
    log.info("stopped")
