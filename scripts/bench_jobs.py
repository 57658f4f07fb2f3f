"""Jobs scripts/bench.py queues next to the service's own, run by the Procfile's worker command.

- `noop()`: the no-op job, the worker's ceiling: what RQ and the worker class cost per job.
- `barrier(name, workers)`: a phase boundary. The bench queues one per worker process between phases;
  each worker that takes one waits until the bench says go, which it does once all have (so every
  job before the barrier is finished). The last worker in records the time; the bench snapshots what
  it counts (e.g. the round-trip proxy) while all are parked, so a phase is timed and counted exactly: worker
  start-up, warm-up and the Verisoul syncs queued after the events (served only once the events queue
  is empty) fall outside it.

Kept free of the service's imports: a worker imports this module when it runs the first such job.
"""

from __future__ import annotations

import time

from rq import get_current_job

PREFIX = "bench:barrier:"
WAIT_LIMIT = 600.0  # seconds a worker waits at a barrier before giving up (the bench died)


def noop() -> None:
    return None


def barrier(name: str, workers: int) -> None:
    job = get_current_job()
    if job is None:
        raise RuntimeError("barrier() runs only as an RQ job: it meets the other workers through the job's Redis")
    connection = job.connection
    key = PREFIX + name
    arrived = connection.incr(key + ":arrived")
    if arrived == workers:
        # The last one in: every job queued before the barrier is done.
        connection.set(key + ":complete_at", repr(time.time()))
    # The bench pushes one token per worker when it says go; BLPOP wakes at once without spinning (a
    # spinning worker would take CPU from the others still starting or finishing). One-second slices
    # keep each call under any socket timeout the worker's connection may have.
    deadline = time.monotonic() + WAIT_LIMIT
    while not connection.blpop([key + ":go"], timeout=1):
        if time.monotonic() > deadline:
            raise TimeoutError(f"barrier {name}: no go from the bench within {WAIT_LIMIT:.0f} s")
