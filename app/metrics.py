"""`GET /metrics`: Prometheus text for the whole host (bind it privately, docs/contracts.md §3)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from runtime.metrics import QueueCollector, host_registry

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape():
    registry = host_registry()
    event_queue = current_app.extensions["event_queue"]
    registry.register(QueueCollector(event_queue.connection, current_app.config["PERSONA"].queues))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
