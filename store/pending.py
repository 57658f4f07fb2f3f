"""One pending job per key: a Redis mark says a job is queued for it, and the job clears the mark as it starts, so a
burst of requests queues one job (store/sync_queue.py, store/notify_queue.py)."""

from __future__ import annotations

from collections.abc import Callable

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError


def enqueue_unless_pending(connection: Redis, mark: str, ttl: int, enqueue: Callable[[Pipeline], object]) -> bool:
    """Run `enqueue` (which queues the job on the pipeline it is given) unless `mark` exists; True when queued now.

    The mark and the job are written in one transaction (WATCH on the mark, then MULTI): a process killed between
    the two would leave a mark without a job, holding back the key's jobs for `ttl` seconds."""
    with connection.pipeline() as pipeline:
        try:
            pipeline.watch(mark)
            if pipeline.exists(mark):
                return False
            pipeline.multi()
            pipeline.set(mark, 1, ex=ttl)
            enqueue(pipeline)
            pipeline.execute()
        except WatchError:
            return False  # another process set the mark meanwhile: its job is the pending one
    return True
