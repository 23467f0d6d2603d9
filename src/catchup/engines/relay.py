"""A loopback TCP relay that counts the bytes a source sends.

The ephemeral instance and its tools connect to the relay instead of the
source, so `bytes_from_source` is measured on the wire, the same way for every
engine, and a source reachable only by a Unix socket can still be replicated
from.

Whoever reaches the relay talks to the source as catchup, so it serves only its
own cycle: a connection is accepted only from catchup's own process or one of
its descendants (the ephemeral server, the dump and backup tools), running as
one of the uids catchup runs its servers as. Any other local user or process is
refused. The peer is identified by the kernel: its socket's owner uid and inode
in /proc/net/tcp, and the process holding that inode among catchup's own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
from collections.abc import Collection, Iterator
from pathlib import Path

BUFFER = 256 * 1024
log = logging.getLogger("catchup.relay")


def _decode_address(text: str) -> tuple[str, int]:
    """An address of /proc/net/tcp{,6}: 32-bit words in host order, then the port in hex."""
    address, _, port = text.partition(":")
    raw = b"".join(
        int(address[i : i + 8], 16).to_bytes(4, sys.byteorder) for i in range(0, len(address), 8)
    )
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw), int(port, 16)
    host = socket.inet_ntop(socket.AF_INET6, raw)
    return host.removeprefix("::ffff:"), int(port, 16)


def socket_owner(local: tuple[str, int], remote: tuple[str, int]) -> tuple[int, int] | None:
    """(uid, inode) of the TCP socket of this network namespace from `local` to `remote`."""
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/self/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            if _decode_address(fields[1]) == local and _decode_address(fields[2]) == remote:
                return int(fields[7]), int(fields[9])
    return None


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    return children


def own_processes() -> Iterator[int]:
    """This process, then its descendants, breadth first."""
    children = _children_by_parent()
    queue = [os.getpid()]
    while queue:
        pid = queue.pop(0)
        yield pid
        queue.extend(children.get(pid, ()))


def holder_of(inode: int) -> int | None:
    """The pid among this process and its descendants that holds socket `inode`, if any."""
    wanted = f"socket:[{inode}]"
    for pid in own_processes():
        try:
            descriptors = os.scandir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone, or not ours to inspect: then it is not a holder we accept
        with descriptors:
            for fd in descriptors:
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) == wanted:
                        return pid
    return None


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class CountingRelay:
    def __init__(
        self,
        host: str | None,
        port: int | None,
        unix_socket: Path | None,
        peer_uids: Collection[int] | None = None,
    ) -> None:
        self._target = (host, port, unix_socket)
        # By default only catchup's own uid; an engine whose servers run as another OS
        # user names it too.
        self._peer_uids = frozenset({os.geteuid()} if peer_uids is None else peer_uids)
        self.refused: list[str] = []  # why each refused connection was refused
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
                client, peer = self._listener.accept()
            except OSError:
                return
            refusal = self._refusal(peer)
            if refusal is not None:
                log.warning("relay on port %d refused a connection: %s", self.port, refusal)
                self.refused.append(refusal)
                client.close()
                continue
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

    def _refusal(self, peer: tuple[str, int]) -> str | None:
        """Why the connection from `peer` must be refused, or None when it is our own."""
        owner = socket_owner((peer[0], peer[1]), ("127.0.0.1", self.port))
        if owner is None:
            return f"{peer[0]}:{peer[1]} is not a socket of this host's network namespace"
        uid, inode = owner
        if uid not in self._peer_uids:
            return f"{peer[0]}:{peer[1]} belongs to uid {uid}, not to catchup or its servers"
        if holder_of(inode) is None:
            return f"{peer[0]}:{peer[1]} (uid {uid}) is not catchup or a process it started"
        return None

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
