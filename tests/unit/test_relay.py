import socket
import threading

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
