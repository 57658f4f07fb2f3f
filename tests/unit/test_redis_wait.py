"""wait_for_redis: a process waits for Redis' PONG, whatever the port answers meanwhile (issue 10's CI run:
a scheduler started during an outage exited with an AttributeError from redis-py's handshake)."""

from __future__ import annotations

import socket
import threading

import pytest
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from rq.exceptions import StopRequested

from workers import worker
from workers.worker import wait_for_redis


@pytest.fixture
def echo_port():
    """A port that sends back whatever it is sent: what a socket connected to itself reads (TCP
    simultaneous open, when a client's ephemeral port is the one it dials while nothing listens)."""
    server = socket.create_server(("127.0.0.1", 0))

    def echo(connection: socket.socket) -> None:
        with connection:
            while data := connection.recv(65536):
                connection.sendall(data)

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr(worker.time, "sleep", lambda _seconds: None)


def stop_after(tries: int):
    calls = iter(range(tries))
    return lambda: next(calls, None) is None


def test_a_port_echoing_the_handshake_is_waited_on_not_a_crash(echo_port, caplog):
    ping = Redis(port=echo_port, socket_timeout=2).ping
    with pytest.raises(StopRequested):
        wait_for_redis(ping, stop_after(3), what="worker start: ")
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] == ["redis unavailable; waiting for it"]
    assert caplog.records[-1].reason.startswith("worker start: ")


def test_a_ping_without_pong_is_waited_on():
    with pytest.raises(StopRequested):
        wait_for_redis(lambda: False, stop_after(2))


def test_a_refused_connection_is_waited_on_until_pong(caplog):
    answers = iter([ConnectionRefusedError(), OSError(), True])

    def ping():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    wait_for_redis(ping)
    assert [r.message for r in caplog.records] == ["redis unavailable; waiting for it", "redis available again"]


def test_rqs_suspension_check_waits_for_redis_instead_of_ending_the_worker(monkeypatch):
    """Found in CI: a worker starting as Redis died exited (`rq worker` checks suspension once, before the
    worker exists, and exits on a connection error); the check now waits for Redis and asks again."""
    monkeypatch.setattr(worker.time, "sleep", lambda seconds: None)
    answers: list = [RedisConnectionError("Connection reset by peer"), False]
    asked = []

    def check(connection, *args):
        asked.append(args)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    class Answering:
        def ping(self):
            return True

    assert worker.riding_out_outages(check)(Answering(), None) is False
    assert asked == [(None,), (None,)]
