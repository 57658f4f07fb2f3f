"""RQ job entry points. Each runs in one database transaction and is safe to run again."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from functools import lru_cache

from redis import Redis
from rq import Queue, get_current_job
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from app.config import load_config
from app.db import Database
from app.models import Event
from app.queue import connect_redis
from workers.event_log import DUPLICATE, record_event
from workers.rate_limit import RateLimiter
from workers.records import apply_event
from workers.sync import SWEEP_EVERY, SWEEP_VERISOUL, Syncer, mark_sync, request_sync
from workers.verisoul import VerisoulError, VerisoulUnavailable, make_client

log = logging.getLogger(__name__)


class PermanentJobError(Exception):
    """A failure that retrying cannot fix; the job goes straight to the failed registry with this reason."""


@lru_cache(maxsize=1)
def database() -> Database:
    """One engine per worker process, built before the first job (workers/rq_settings.py)."""
    return Database(load_config().database_url)


@lru_cache(maxsize=1)
def redis() -> Redis:
    return connect_redis(load_config().redis_url)


def queue() -> Queue:
    return Queue(load_config().events_queue, connection=redis())


def now() -> datetime:
    """The worker's clock; tests replace it to reach a block's expiry without waiting."""
    return datetime.now(timezone.utc)


@lru_cache(maxsize=1)
def syncer() -> Syncer:
    config = load_config()
    client = None
    if config.verisoul_api_url:
        limiter = RateLimiter(redis(), "verisoul", config.verisoul_rate_limit)
        client = make_client(config.verisoul_api_url, config.verisoul_api_key or "", config.verisoul_api_flavor, limiter.acquire)
    return Syncer(database(), client, redis(), queue(), clock=lambda: now())


def is_transient(error: DBAPIError) -> bool:
    """Lost connections, a restarting server, lock timeouts, serialisation failures, and integrity
    errors (a concurrent writer won a race; the transaction rolled back whole): worth a retry."""
    return isinstance(error, (OperationalError, IntegrityError)) or error.connection_invalidated


def _stop_retrying() -> None:
    job = get_current_job()
    if job is not None:
        job.retries_left = 0


def _fail_permanently(event_id: object, error: Exception) -> PermanentJobError:
    _stop_retrying()
    reason = f"event {event_id}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    log.error("process_event failed permanently", extra={"event_id": event_id, "reason": reason})
    return PermanentJobError(reason)


def _process(session, event: dict) -> tuple[str, str | None]:
    """Log the event, apply it to the user record and derive Verisoul's desired state, in the caller's
    transaction; returns the outcome and the user whose Verisoul state must change, if any."""
    processed_at = now()
    if not record_event(session, event, processed_at):
        return DUPLICATE, None
    outcome, user = apply_event(session, event)
    session.execute(update(Event).where(Event.event_id == event["event_id"]).values(outcome=outcome))
    if user is not None and mark_sync(session, user, processed_at):
        return outcome, user.reference_id
    return outcome, None


def process_event(event: dict) -> str:
    """Apply a queued event once: `applied`, `unexpected`, `stale` or `ignored`; `duplicate` if already logged."""
    try:
        with database().transaction() as session:
            outcome, to_sync = _process(session, event)
    except DBAPIError as error:
        if is_transient(error):
            raise  # RQ's Retry, set at enqueue, backs off and runs the job again
        raise _fail_permanently(event.get("event_id"), error) from error
    except (KeyError, TypeError, ValueError) as error:
        raise _fail_permanently(event.get("event_id") if isinstance(event, dict) else None, error) from error
    if to_sync:
        # After the commit, so the sync reads this event's effect; if Redis fails here, the sweep
        # finds the record unsynced and queues the sync later.
        request_sync(redis(), queue(), to_sync)
    log.info("event processed", extra={"event_id": event["event_id"], "event_name": event["name"], "outcome": outcome})
    return outcome


def sync_verisoul(reference_id: str) -> str:
    """Converge Verisoul to the user's desired state; calls only what differs (workers/sync.py)."""
    try:
        result = syncer().sync(reference_id)
    except VerisoulError as error:
        raise PermanentJobError(f"user {reference_id}: {error}") from error
    except VerisoulUnavailable as error:
        raise PermanentJobError(f"user {reference_id}: {error}; the sweep retries it") from error
    log.info("verisoul synced", extra={"outcome": result})
    return result


def sweep_verisoul() -> int:
    """Queue syncs for expired blocks whose unblock job was lost and for failed syncs; then plan the next sweep."""
    queued = syncer().sweep()
    schedule_sweep(queue(), delay=SWEEP_EVERY)
    log.info("verisoul sweep", extra={"outcome": f"{queued} syncs queued"})
    return queued


def schedule_sweep(target: Queue, delay: timedelta = timedelta(0)) -> None:
    """One sweep per time slot, whoever schedules it (every worker does at start)."""
    at = now() + delay
    slot = int(at.timestamp() // SWEEP_EVERY.total_seconds())
    job_id = f"sweep-verisoul-{slot}"
    if target.fetch_job(job_id) is None:
        target.enqueue_at(at, SWEEP_VERISOUL, job_id=job_id, result_ttl=3600)
