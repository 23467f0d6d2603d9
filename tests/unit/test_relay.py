import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from catchup.engines.relay import CountingRelay


def test_relay_forwards_both_ways_and_counts_only_source_bytes():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve():
        conn, _ = server.accept()
        with conn:
            data = conn.recv(100)
            conn.sendall(data * 1000)  # the "source" sends 1000x what it got

    threading.Thread(target=serve, daemon=True).start()
    with CountingRelay("127.0.0.1", port, None) as relay:
        client = socket.create_connection(("127.0.0.1", relay.port))
        client.sendall(b"0123456789")
        received = b""
        while len(received) < 10_000:
            chunk = client.recv(65536)
            assert chunk
            received += chunk
        client.close()
        assert received == b"0123456789" * 1000
        assert relay.bytes_from_source == 10_000
    server.close()


def test_relay_reports_why_the_source_is_unreachable():
    probe = socket.create_server(("127.0.0.1", 0))
    dead_port = probe.getsockname()[1]
    probe.close()
    with CountingRelay("127.0.0.1", dead_port, None) as relay:
        client = socket.create_connection(("127.0.0.1", relay.port))
        assert client.recv(10) == b""  # dropped, as the source itself would
        client.close()
        for _ in range(100):
            if relay.last_error:
                break
            threading.Event().wait(0.01)
        assert relay.last_error and "refused" in relay.last_error.lower()


# --- who may use the relay: catchup's own processes only ---------------------------------

PEER = """
import os, socket, sys
port, out, detach = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "detach"
if detach:  # leave catchup's process tree: the grandchild is reparented
    parent = os.getpid()
    if os.fork():
        os._exit(0)
    while os.getppid() == parent:
        pass
client = socket.create_connection(("127.0.0.1", port), timeout=10)
client.sendall(b"ping")
try:
    answer = client.recv(100)
except OSError as exc:
    answer = repr(exc).encode()
open(out, "wb").write(answer or b"(closed)")
"""


def echo_source() -> socket.socket:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(conn.recv(100))

    threading.Thread(target=serve, daemon=True).start()
    return server


def peer_answer(relay: CountingRelay, prefix: list[str], detach: bool) -> bytes:
    """What a peer process got back after sending "ping" through the relay."""
    drop = Path(tempfile.mkdtemp(prefix="cu-relay-"))
    drop.chmod(0o777)  # a peer running as nobody writes its answer here
    out = drop / "answer"
    command = [*prefix, sys.executable, "-I", "-c", PEER, str(relay.port), str(out)]
    subprocess.run([*command, "detach" if detach else "stay"], check=True, timeout=30)
    deadline = time.monotonic() + 20
    while not out.exists():
        assert time.monotonic() < deadline, "the peer never answered"
        time.sleep(0.05)
    time.sleep(0.05)  # written in one call; let it land
    answer = out.read_bytes()
    shutil.rmtree(drop)
    return answer


def test_relay_serves_catchup_and_the_processes_it_started() -> None:
    source = echo_source()
    with CountingRelay("127.0.0.1", source.getsockname()[1], None) as relay:
        assert peer_answer(relay, [], detach=False) == b"ping"
        assert not relay.refused
    source.close()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_relay_refuses_another_uid() -> None:
    source = echo_source()
    with CountingRelay("127.0.0.1", source.getsockname()[1], None) as relay:
        nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        assert peer_answer(relay, nobody, detach=False) != b"ping"
        assert len(relay.refused) == 1 and "uid 65534" in relay.refused[0]
        assert relay.bytes_from_source == 0  # the source never heard of it
    source.close()


def test_relay_refuses_a_process_outside_catchups_tree() -> None:
    source = echo_source()
    with CountingRelay("127.0.0.1", source.getsockname()[1], None) as relay:
        assert peer_answer(relay, [], detach=True) != b"ping"
        assert (
            len(relay.refused) == 1 and "not catchup or a process it started" in (relay.refused[0])
        )
    source.close()
