"""The daily retention job (EVENT_RETENTION_DAYS; store/retention.py says what it deletes)."""

from __future__ import annotations

import logging

from domain.erasure import retention_cutoff
from runtime import metrics
from runtime.config import load_config
from store.retention import prune_events
from workers.jobs import database, now

log = logging.getLogger(__name__)


@metrics.timed_job("prune_events")
def prune_event_log() -> int:
    """Delete the logged events of decided inquiries past the retention; how many (0 when it is off)."""
    days = load_config().event_retention_days
    if days is None:
        return 0
    deleted = prune_events(database(), retention_cutoff(now(), days))
    log.info("event log pruned", extra={"outcome": f"{deleted} events older than {days} days deleted"})
    return deleted
