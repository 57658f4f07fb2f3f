"""Faults under the Procfile's worker and scheduler processes: a Redis of the test's own (killed and
restarted at will; never the shared one), a SQLite database, and the processes with no supervisor."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue

from scripts.embedded_redis import EmbeddedRedis, free_port
from store.db import migrate
from tests.helpers.stack import Stack

EVENTS, SYNC = "persona-events", "persona-sync"


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


def wait_until(condition, timeout: float, what: str, stack: Stack | None = None):
    """Poll `condition` until it is truthy; fail naming `what` (and the logs) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # Redis restarting: keep polling
            value = None
        if value:
            return value
        time.sleep(0.2)
    logs = f"; logs in {stack.log_dir}" if stack else ""
    pytest.fail(f"not within {timeout:.0f} s: {what}{logs}")


def runs(redis: Redis, key: str) -> int:
    return int(redis.get(key) or 0)


def enqueue_counted(redis: Redis, key: str, seconds: float = 0.0, timeout: int = 10, queue: str = EVENTS):
    return Queue(queue, connection=redis).enqueue(
        "tests.resilience.jobs.count_run", key, seconds, job_timeout=timeout, result_ttl=600
    )


def exited(stack: Stack) -> list[str]:
    """The processes that exited, as `program pid exit-status: last log line`, so a failure says why."""
    return [
        f"{program(p)} pid {p.pid} exit {p.returncode}: {last_line(log)}"
        for p, log in zip(stack.processes, stack.logs, strict=True)
        if p.poll() is not None
    ]


def program(process: subprocess.Popen) -> str:
    """The file name of the program `process` runs (a Stack starts each from a command list)."""
    assert isinstance(process.args, list), process.args
    return Path(process.args[0]).name


def last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1][-500:] if lines else "(no output)"
