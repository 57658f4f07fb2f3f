"""Jobs the resilience tests enqueue; the worker processes import them from here (cwd is the repository)."""

from __future__ import annotations

import time

from redis import Redis
from rq import get_current_job


def _connection() -> Redis:
    """The running job's own Redis connection."""
    job = get_current_job()
    assert job is not None, "not run by a worker"
    return job.connection


def count_run(counter_key: str, seconds: float = 0.0) -> int:
    """Count this run in Redis (on the job's own connection), then take `seconds`."""
    runs = _connection().incr(counter_key)
    time.sleep(seconds)
    return runs


def note(list_key: str, label: str) -> None:
    """Append `label` to a Redis list, to see the order jobs ran in."""
    _connection().rpush(list_key, label)
