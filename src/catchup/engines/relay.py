"""A loopback TCP relay that counts the bytes a source sends.

The ephemeral instance and its tools connect to the relay instead of the
source, so `bytes_from_source` is measured on the wire, the same way for every
engine, and a source reachable only by a Unix socket can still be replicated
from.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

BUFFER = 256 * 1024


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class CountingRelay:
    def __init__(self, host: str | None, port: int | None, unix_socket: Path | None) -> None:
        self._target = (host, port, unix_socket)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._from_source = 0
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self.last_error: str | None = None  # why the last connection to the source failed
        self._accepter = threading.Thread(target=self._accept, name="relay-accept", daemon=True)
        self._accepter.start()

    @property
    def bytes_from_source(self) -> int:
        with self._lock:
            return self._from_source

    def __enter__(self) -> CountingRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _connect_source(self) -> socket.socket:
        host, port, unix_socket = self._target
        if unix_socket is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(unix_socket))
            return sock
        return socket.create_connection((host, port), timeout=30)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = self._connect_source()
                upstream.settimeout(None)
            except OSError as exc:
                self.last_error = exc.strerror or str(exc)
                client.close()  # the client sees a dropped connection, as with the source itself
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for src, dst, counted in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(
                    target=self._pump, args=(src, dst, counted), name="relay-pump", daemon=True
                ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        buffer = bytearray(BUFFER)
        view = memoryview(buffer)
        try:
            while n := src.recv_into(buffer):
                if counted:  # counted on receipt: never less than what the client has seen
                    with self._lock:
                        self._from_source += n
                dst.sendall(view[:n])
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            with self._lock:
                self._sockets.discard(src)
            with contextlib.suppress(OSError):
                src.shutdown(socket.SHUT_RD)
