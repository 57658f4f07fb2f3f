"""`GET /metrics`: Prometheus text for the whole host (bind it privately, docs/contracts.md §3)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from runtime.metrics import QueueCollector, host_registry
from store.db import Database
from store.outbox import dead_count, oldest_undelivered_age

bp = Blueprint("metrics", __name__)
log = logging.getLogger(__name__)


class OutboxCollector(Collector):
    """The host notifications' outbox, read from the database at scrape time: how long the oldest notification
    still to deliver has waited (0 when none), and how many are dead-lettered. A database away skips them."""

    def __init__(self, database: Database):
        self.database = database

    def collect(self):
        try:
            with self.database.sessions() as session:
                age, dead = oldest_undelivered_age(session, datetime.now(UTC)), dead_count(session)
        except SQLAlchemyError as error:
            log.warning("metrics: outbox unreadable", extra={"reason": type(error).__name__})
            return
        oldest = GaugeMetricFamily(
            "persona_outbox_oldest_undelivered_seconds", "Age of the oldest host notification not yet delivered"
        )
        oldest.add_metric([], age.total_seconds() if age is not None else 0.0)
        dead_letters = GaugeMetricFamily("persona_outbox_dead", "Host notifications whose retries are exhausted")
        dead_letters.add_metric([], dead)
        yield from (oldest, dead_letters)


@bp.get("/metrics")
def scrape():
    registry = host_registry()
    event_queue = current_app.extensions["event_queue"]
    registry.register(QueueCollector(event_queue.connection, current_app.config["PERSONA"].queues))
    registry.register(OutboxCollector(current_app.extensions["database"]))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
