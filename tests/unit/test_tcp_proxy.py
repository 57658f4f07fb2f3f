"""scripts/tcp_proxy.py: forwards, cuts open connections, resets or swallows new ones, and forwards again."""

from __future__ import annotations

import socket
import threading

import pytest

from scripts.tcp_proxy import TcpProxy


@pytest.fixture
def echo_port():
    """A loopback echo server on a free port (each connection on its own thread)."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve_one(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def _connect(proxy: TcpProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=2)


def _echo(sock: socket.socket, data: bytes = b"ping") -> bytes:
    sock.sendall(data)
    return sock.recv(4096)


def _is_dead(sock: socket.socket) -> bool:
    """The peer reset or closed the connection (a send may still be buffered; the read tells)."""
    try:
        sock.sendall(b"x")
        return sock.recv(4096) == b""
    except OSError:
        return True


def test_forwards_cuts_resets_swallows_and_recovers(echo_port):
    with TcpProxy("127.0.0.1", echo_port) as proxy:
        first = _connect(proxy)
        assert _echo(first) == b"ping"

        proxy.set_mode("reset")
        assert proxy.cut() == 1
        assert _is_dead(first)
        try:  # the reset may come before connect() returns
            refused = _connect(proxy)
            assert _is_dead(refused)
            refused.close()
        except ConnectionResetError:
            pass

        proxy.set_mode("blackhole")
        swallowed = _connect(proxy)
        swallowed.settimeout(0.3)
        swallowed.sendall(b"hello?")
        with pytest.raises(TimeoutError):
            swallowed.recv(4096)
        assert proxy.cut() == 1
        swallowed.settimeout(2)
        assert _is_dead(swallowed)

        proxy.set_mode("forward")
        again = _connect(proxy)
        assert _echo(again, b"back") == b"back"
        assert proxy.open_connections() == 1
        for sock in (first, swallowed, again):
            sock.close()
        assert proxy.counts["reset"] == 1 and proxy.counts["blackholed"] == 1 and proxy.counts["forwarded"] == 2


def test_a_refusing_target_resets_the_client():
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        closed_port = spare.getsockname()[1]  # nothing listens here once closed
    with TcpProxy("127.0.0.1", closed_port) as proxy:
        try:
            client = _connect(proxy)
            assert _is_dead(client)
            client.close()
        except ConnectionResetError:
            pass
        assert proxy.counts["target_refused"] == 1


def test_unknown_mode_is_refused():
    proxy = TcpProxy("127.0.0.1", 1)
    with pytest.raises(ValueError):
        proxy.set_mode("drop")
