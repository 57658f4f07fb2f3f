"""Delivering the host's notifications (docs/contracts.md §9): the user's latest `user.updated` from the outbox,
signed (clients/host_webhook.py) and POSTed; older undelivered ones are superseded by it, since the host keeps only
the highest sequence. A refusal or no answer fails the job, and RQ retries it on the contract's schedule
(store/notify_queue.py); the last failure dead-letters the notification, which stays in the failed registry for
operators to see and requeue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from redis import Redis

from clients.host_webhook import HostWebhook
from domain.notifications import message, message_id
from runtime import metrics
from store.db import Database
from store.models import Outbox
from store.notify_queue import PENDING_PREFIX
from store.outbox import latest_undelivered, record_attempt, supersede_older

log = logging.getLogger(__name__)
LOCK_PREFIX = "persona-events:notify-lock:"
# Longer than one delivery may take (store/notify_queue.py DELIVERY_TIMEOUT): a killed worker's lock frees soon.
LOCK_TTL = 40
NOT_CONFIGURED = "skipped: HOST_WEBHOOK_URL is unset"


class HostUnavailable(Exception):
    """The host refused the notification or did not answer; the job is retried on the schedule."""


@dataclass
class Notifier:
    """Everything one delivery needs; built by the job entry point (workers/jobs.py)."""

    database: Database
    webhook: HostWebhook | None
    connection: Redis
    clock: Callable[[], datetime]

    def deliver(self, reference_id: str, final: bool) -> str:
        """Deliver the user's latest notification; `final` when this is the job's last try (then a failure
        dead-letters it). Returns what was done; raises HostUnavailable when the host did not take it."""
        self.connection.delete(PENDING_PREFIX + reference_id)  # later changes queue another delivery
        if self.webhook is None:
            return NOT_CONFIGURED
        lock = self.connection.lock(LOCK_PREFIX + reference_id, timeout=LOCK_TTL, blocking_timeout=5)
        if not lock.acquire():
            raise HostUnavailable(f"another delivery to {reference_id} is still running")
        try:
            return self._deliver(reference_id, final)
        finally:
            lock.release()

    def _deliver(self, reference_id: str, final: bool) -> str:
        assert self.webhook is not None
        with self.database.transaction() as session:
            row = latest_undelivered(session, reference_id)
            if row is None:
                return "nothing to deliver"
            superseded = supersede_older(session, row, self.clock())
            row_id, body = row.id, message(row.data, row.sequence, row.created_at)
        if superseded:
            metrics.NOTIFICATIONS.labels("superseded").inc(superseded)
        # Signed at the wall clock's time, not the job clock's: the host checks it against its own clock.
        error = self.webhook.send(message_id(row_id), body, datetime.now(UTC))
        with self.database.transaction() as session:
            stored = session.get(Outbox, row_id)
            if stored is not None:  # erased meanwhile: nothing to record
                record_attempt(stored, self.clock(), error, final)
        result = "delivered" if error is None else ("dead" if final else "failed")
        metrics.NOTIFICATIONS.labels(result).inc()
        log.info("notification", extra={"outcome": result, "user": reference_id, "reason": error})
        if error is not None:
            raise HostUnavailable(f"user {reference_id}, sequence {body['data']['sequence']}: {error}")
        return f"delivered sequence {body['data']['sequence']}"
