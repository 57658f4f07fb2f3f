"""RQ job entry points. Each runs in one database transaction and is safe to run again."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from functools import lru_cache

from rq import get_current_job
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError, OperationalError

from app.config import load_config
from app.db import Database
from app.models import Event
from workers.event_log import DUPLICATE, record_event
from workers.records import apply_event

log = logging.getLogger(__name__)


class PermanentJobError(Exception):
    """A failure that retrying cannot fix; the job goes straight to the failed registry with this reason."""


@lru_cache(maxsize=1)
def database() -> Database:
    """One engine per process: RQ forks a work horse per job, so each horse builds its own."""
    return Database(load_config().database_url)


def is_transient(error: DBAPIError) -> bool:
    """Lost connections, a restarting server, lock timeouts, serialisation failures: worth a retry."""
    return isinstance(error, OperationalError) or error.connection_invalidated


def _stop_retrying() -> None:
    job = get_current_job()
    if job is not None:
        job.retries_left = 0


def _fail_permanently(event_id: object, error: Exception) -> PermanentJobError:
    _stop_retrying()
    reason = f"event {event_id}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    log.error("process_event failed permanently", extra={"event_id": event_id, "reason": reason})
    return PermanentJobError(reason)


def _process(session, event: dict) -> str:
    """Log the event, then apply it to the user record, in the caller's transaction."""
    if not record_event(session, event, datetime.now(timezone.utc)):
        return DUPLICATE
    outcome = apply_event(session, event)
    session.execute(update(Event).where(Event.event_id == event["event_id"]).values(outcome=outcome))
    return outcome


def process_event(event: dict) -> str:
    """Apply a queued event once: `applied`, `unexpected`, `stale` or `ignored`; `duplicate` if already logged."""
    try:
        with database().transaction() as session:
            outcome = _process(session, event)
    except DBAPIError as error:
        if is_transient(error):
            raise  # RQ's Retry, set at enqueue, backs off and runs the job again
        raise _fail_permanently(event.get("event_id"), error) from error
    except (KeyError, TypeError, ValueError) as error:
        raise _fail_permanently(event.get("event_id") if isinstance(event, dict) else None, error) from error
    log.info("event processed", extra={"event_id": event["event_id"], "event_name": event["name"], "outcome": outcome})
    return outcome
