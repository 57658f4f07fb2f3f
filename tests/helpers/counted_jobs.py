"""Jobs that count their runs in Redis (tests/resilience/jobs.py's count_run): enqueued, and their runs read."""

from __future__ import annotations

from redis import Redis
from rq import Queue

EVENTS, SYNC = "persona-events", "persona-sync"


def runs(redis: Redis, key: str) -> int:
    """How many times the counted jobs on `key` have run."""
    return int(redis.get(key) or 0)


def enqueue_counted(redis: Redis, key: str, seconds: float = 0.0, timeout: int = 10, queue: str = EVENTS):
    """A job on `queue` that counts its run on `key`, then takes `seconds`."""
    return Queue(queue, connection=redis).enqueue(
        "tests.resilience.jobs.count_run", key, seconds, job_timeout=timeout, result_ttl=600
    )
