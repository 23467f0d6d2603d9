"""A TCP proxy that injects faults between an HTTP client and a server.

Each new connection gets the action `plan(n)` returns for its index n:
"pass" forwards it; "503" answers the first request with a 503 and closes;
"drop:N" forwards N request bytes, then cuts both sides (a dropped upload);
"stall" never answers (a timeout). Counts what it did in `done`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter
from collections.abc import Callable

Plan = Callable[[int], str]


class FaultProxy:
    def __init__(self, upstream_port: int, plan: Plan) -> None:
        self.upstream_port = upstream_port
        self.plan = plan
        self.done: Counter[str] = Counter()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._count = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closing.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                index, self._count = self._count, self._count + 1
            action = self.plan(index)
            self.done[action.split(":")[0]] += 1
            threading.Thread(target=self._serve, args=(client, action), daemon=True).start()

    def _serve(self, client: socket.socket, action: str) -> None:
        with client:
            if action == "503":
                _read_head(client)
                with contextlib.suppress(OSError):
                    client.sendall(
                        b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                return
            if action == "stall":
                self._closing.wait(30)
                return
            limit = int(action.split(":")[1]) if action.startswith("drop:") else None
            with socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
                back = threading.Thread(target=_pump, args=(upstream, client, None), daemon=True)
                back.start()
                _pump(client, upstream, limit)
                if limit is not None:  # cut both directions at once, mid-request
                    for sock in (client, upstream):
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                back.join(30)


def _read_head(sock: socket.socket) -> None:
    data = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                return
            data += chunk


def _pump(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
    sent = 0
    with contextlib.suppress(OSError):
        while True:
            data = src.recv(65536)
            if not data:
                break
            if limit is not None and sent + len(data) >= limit:
                dst.sendall(data[: limit - sent])
                return
            dst.sendall(data)
            sent += len(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)
