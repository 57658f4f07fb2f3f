"""The host notifications' queue: one delivery job per user, queued once however many changes ask (docs/contracts.md
§9). A pending mark per user, cleared by the delivery as it starts, keeps a burst of changes and the sweep from
queueing a second delivery beside one already waiting; the delivery sends the user's latest notification, so a
burst is coalesced into it. The job runs `workers.jobs.deliver_notification`, named so the web can queue one.
"""

from __future__ import annotations

from redis import Redis
from redis.client import Pipeline
from redis.exceptions import RedisError
from rq import Queue, Retry

from runtime.config import Config
from store.pending import enqueue_unless_pending

DELIVER_NOTIFICATION = "workers.jobs.deliver_notification"
PENDING_PREFIX = "persona-events:notify-pending:"
# The delivery clears the mark as it starts, so a change made while a delivery waits for its retry queues another,
# which sends the latest at once (the waiting retry then finds nothing newer, or sends it again: at least once).
# The TTL only frees a mark whose job was lost; the sweep then finds the notification never tried.
PENDING_TTL = 3600
# One POST with the client's timeouts (clients/host_webhook.py) and two short transactions.
DELIVERY_TIMEOUT = 30
# A dead-lettered delivery stays in the failed registry for operators to see and requeue.
DELIVERY_FAILURE_TTL = 30 * 24 * 3600


def request_delivery(connection: Redis, queue: Queue, reference_id: str, retries: tuple[int, ...]) -> bool:
    """Queue a delivery of the user's latest notification unless one is pending; True when queued now. `retries`:
    the waits in seconds before each retry (runtime/config.py HOST_WEBHOOK_RETRIES)."""

    def enqueue(pipeline: Pipeline) -> None:
        queue.enqueue_call(
            DELIVER_NOTIFICATION,
            args=(reference_id,),
            description=f"deliver_notification {reference_id}",
            timeout=DELIVERY_TIMEOUT,
            retry=Retry(max=len(retries), interval=list(retries)),
            result_ttl=3600,
            failure_ttl=DELIVERY_FAILURE_TTL,
            pipeline=pipeline,
        )

    return enqueue_unless_pending(connection, PENDING_PREFIX + reference_id, PENDING_TTL, enqueue)


def request_delivery_unless_away(connection: Redis, config: Config, reference_id: str) -> str | None:
    """`request_delivery` after a commit that may have written the user's notification, on `config`'s queue and
    retry schedule (nothing without HOST_WEBHOOK_URL; a delivery that finds nothing new sends nothing). With Redis
    away, why (the error's name) instead of raising: the notification is in the outbox, and the sweep queues its
    delivery once Redis is back."""
    if not config.host_webhook_url:
        return None
    try:
        request_delivery(connection, Queue(config.notify_queue, connection=connection), reference_id,
                         config.host_webhook_retries)  # fmt: skip
    except RedisError as error:
        return type(error).__name__
    return None
