"""The Verisoul sync queue: a sync job per user, queued once however many events ask (docs/contracts.md §1, step 8).

A pending mark per user (a Redis key the sync clears as it starts) keeps a burst of events, the sweep and
operators' actions from queueing a second sync beside one already waiting. The job itself runs
`workers.jobs.sync_verisoul` (workers/sync.py); it is named, not imported, so the web process can queue one.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Callback, Queue, Retry

from store.pending import enqueue_unless_pending

SYNC_VERISOUL = "workers.jobs.sync_verisoul"
PENDING_PREFIX = "persona-events:sync-pending:"
# A pending mark outlives any realistic queue backlog, yet cannot wedge a user's syncs forever.
PENDING_TTL = 3600
# While a failed sync waits for its retry, its user counts as pending, so neither the sweep nor a new event
# queues a second sync beside it (doubling the calls to a Verisoul already failing); a little longer than
# the longest retry interval, so a user whose retries are spent is swept again soon after.
RETRY_PENDING_TTL = 90
# A sync makes at most 4 calls, each bounded by the client's timeouts (clients/verisoul.py): 45 s is
# ample, and short enough that a sync whose worker died runs again within a minute (workers/worker.py).
SYNC_TIMEOUT = 45
# Verisoul, the database or Redis away: retried without holding a worker, soon at first, then every
# minute (the last interval repeats) for about 10 minutes; after that the sweep queues the user again.
SYNC_RETRY = Retry(max=12, interval=[5, 10, 20, 30, 60])
# A failed sync's job id is remembered per user, so the user's next successful sync can clear it from the
# failed registry (workers/jobs.py): recovered failures do not hold the failed-jobs gauge up for a month.
FAILED_SYNCS_PREFIX = "persona-events:failed-syncs:"
SYNC_FAILURE_TTL = 30 * 24 * 3600
ON_SYNC_FAILURE = Callback("workers.jobs.remember_failed_sync")


def request_sync(connection: Redis, queue: Queue, reference_id: str) -> bool:
    """Queue a sync for the user unless one is already pending (store/pending.py); True when queued now."""

    def enqueue(pipeline: Pipeline) -> None:
        queue.enqueue_call(
            SYNC_VERISOUL,
            args=(reference_id,),
            description=f"sync_verisoul {reference_id}",
            timeout=SYNC_TIMEOUT,
            retry=SYNC_RETRY,
            result_ttl=3600,
            failure_ttl=SYNC_FAILURE_TTL,
            on_failure=ON_SYNC_FAILURE,
            pipeline=pipeline,
        )

    return enqueue_unless_pending(connection, PENDING_PREFIX + reference_id, PENDING_TTL, enqueue)


def request_sync_unless_away(connection: Redis, queue: Queue, reference_id: str) -> str | None:
    """`request_sync`, for callers after a commit (replays, overrides): with Redis away, why (the error's name)
    instead of raising. The record says it is unsynced, so the sweep queues the sync once Redis is back."""
    try:
        request_sync(connection, queue, reference_id)
    except RedisError as error:
        return type(error).__name__
    return None


def schedule_unblock(queue: Queue, reference_id: str, at: datetime) -> None:
    """A sync at the block's expiry; one job per (user, expiry), however often the block is confirmed."""
    key = hashlib.sha256(f"{reference_id}|{at.isoformat()}".encode()).hexdigest()[:32]
    job_id = f"unblock-{key}"
    if queue.fetch_job(job_id) is None:
        queue.enqueue_at(
            at,
            SYNC_VERISOUL,
            reference_id,
            job_id=job_id,
            job_timeout=SYNC_TIMEOUT,
            retry=SYNC_RETRY,
            result_ttl=3600,
            failure_ttl=SYNC_FAILURE_TTL,
            on_failure=ON_SYNC_FAILURE,
        )
