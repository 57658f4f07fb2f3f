"""Jobs the resilience tests enqueue; the worker processes import them from here (cwd is the repository)."""

from __future__ import annotations

import time

from rq import get_current_job


def count_run(counter_key: str, seconds: float = 0.0) -> int:
    """Count this run in Redis (on the job's own connection), then take `seconds`."""
    runs = get_current_job().connection.incr(counter_key)
    time.sleep(seconds)
    return runs


def note(list_key: str, label: str) -> None:
    """Append `label` to a Redis list, to see the order jobs ran in."""
    get_current_job().connection.rpush(list_key, label)
