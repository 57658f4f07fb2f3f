"""Faults under the Procfile's worker and scheduler processes: a Redis of the test's own (killed and
restarted at will; never the shared one), a SQLite database, and the processes with no supervisor."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from redis import Redis

from scripts.embedded_redis import EmbeddedRedis, free_port
from store.db import migrate
from tests.helpers.stack import Stack


class OwnRedis:
    """An append-only redis-server on a fixed port and data directory, so a restart finds its data."""

    def __init__(self, data_dir: Path):
        self.server = EmbeddedRedis(data_dir, appendonly=True, port=free_port())
        self.url = self.server.url

    def start(self) -> OwnRedis:
        self.server.start()
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown save, no goodbye to clients."""
        process = self.server.process
        assert process is not None, "the Redis server was never started"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def client(self) -> Redis:
        return Redis.from_url(self.url, socket_timeout=5)

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def own_redis(tmp_path):
    redis = OwnRedis(tmp_path / "redis")
    yield redis
    redis.stop()


@pytest.fixture
def processes(own_redis, tmp_path):
    """The Procfile's processes on the test's Redis and a migrated SQLite file; stopped at the end."""
    database_url = f"sqlite:///{tmp_path / 'resilience.db'}"
    migrate(database_url)
    stack = Stack(own_redis.url, database_url, tmp_path)
    yield stack
    stack.stop()
