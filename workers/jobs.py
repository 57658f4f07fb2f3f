"""RQ job entry points. Each runs in one database transaction and is safe to run again."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from functools import lru_cache

from redis import Redis
from rq import Queue, get_current_job
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from app import metrics
from app.config import load_config
from app.db import Database
from app.models import Event
from app.queue import connect_redis
from workers.event_log import DUPLICATE, record_event
from workers.persona import make_persona_client
from workers.rate_limit import RateLimiter
from workers.reconcile import reconcile
from workers.records import Applied, apply_event
from workers.replay import RECONCILED, Replayer
from workers.sync import SWEEP_EVERY, SWEEP_VERISOUL, Syncer, mark_sync, request_sync
from workers.verisoul import VerisoulError, VerisoulUnavailable, make_client

RECONCILE_INQUIRIES = "workers.jobs.reconcile_inquiries"
# Inquiries are asked about once per expiry window anyway; an hourly pass keeps the lag under the grace.
RECONCILE_EVERY = timedelta(hours=1)

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


def replayer(command: str, dry_run: bool = False) -> Replayer:
    """Replays (the CLI, reconciliation) apply events with this worker's code, database and clock."""
    return Replayer(database(), now, command, dry_run, request_sync=lambda key: request_sync(redis(), queue(), key))


def _process(session, event: dict) -> tuple[Applied | None, str | None]:
    """Log the event, apply it to the user record and derive Verisoul's desired state, in the caller's
    transaction; returns what applying did (None for a duplicate) and the user to sync, if any."""
    processed_at = now()
    if not record_event(session, event, processed_at):
        return None, None
    applied = apply_event(session, event)
    session.execute(update(Event).where(Event.event_id == event["event_id"]).values(outcome=applied.outcome))
    if applied.user is not None and mark_sync(session, applied.user, processed_at):
        return applied, applied.user.reference_id
    return applied, None


def _count(applied: Applied | None) -> str:
    """Metrics are counted after the commit, so a rolled-back attempt that is retried counts once."""
    outcome = applied.outcome if applied else DUPLICATE
    metrics.EVENTS_PROCESSED.labels(outcome).inc()
    if applied is not None and applied.verdict.changes_state:
        metrics.count_transition(applied.kind, applied.verdict.before, applied.verdict.after)
    return outcome


@metrics.timed_job("process_event")
def process_event(event: dict) -> str:
    """Apply a queued event once: `applied`, `unexpected`, `stale` or `ignored`; `duplicate` if already logged."""
    try:
        with database().transaction() as session:
            applied, to_sync = _process(session, event)
    except DBAPIError as error:
        if is_transient(error):
            raise  # RQ's Retry, set at enqueue, backs off and runs the job again
        raise _fail_permanently(event.get("event_id"), error) from error
    except (KeyError, TypeError, ValueError) as error:
        raise _fail_permanently(event.get("event_id") if isinstance(event, dict) else None, error) from error
    outcome = _count(applied)
    if to_sync:
        # After the commit, so the sync reads this event's effect; if Redis fails here, the sweep
        # finds the record unsynced and queues the sync later.
        request_sync(redis(), queue(), to_sync)
    log.info("event processed", extra={"event_id": event["event_id"], "event_name": event["name"], "outcome": outcome})
    return outcome


@metrics.timed_job("sync_verisoul")
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


@metrics.timed_job("sweep_verisoul")
def sweep_verisoul() -> int:
    """Queue syncs for expired blocks whose unblock job was lost and for failed syncs; then plan the next sweep."""
    queued = syncer().sweep()
    schedule_sweep(queue(), delay=SWEEP_EVERY)
    log.info("verisoul sweep", extra={"outcome": f"{queued} syncs queued"})
    return queued


@metrics.timed_job("reconcile_inquiries")
def reconcile_inquiries() -> int:
    """Ask Persona about inquiries whose webhooks may be lost (workers/reconcile.py); then plan the next pass."""
    schedule_reconcile(queue(), delay=RECONCILE_EVERY)  # first, so a failing pass does not end the chain
    config = load_config()
    client = make_persona_client(config)
    changed = 0
    if client is not None:
        result = reconcile(database(), client, replayer("reconcile (scheduled)"), queue(), config.reconcile_after)
        changed = sum(1 for event in result.report.events if event.outcome == RECONCILED)
        summary = f"{len(result.checked)} checked, {changed} reconciled, {len(result.errors)} not fetched"
        log.info("reconciliation", extra={"outcome": summary})
    return changed


def _schedule(target: Queue, function: str, name: str, every: timedelta, delay: timedelta) -> None:
    """One run per time slot, whoever schedules it (every worker does at start)."""
    at = now() + delay
    job_id = f"{name}-{int(at.timestamp() // every.total_seconds())}"
    if target.fetch_job(job_id) is None:
        target.enqueue_at(at, function, job_id=job_id, result_ttl=3600)


def schedule_sweep(target: Queue, delay: timedelta = timedelta(0)) -> None:
    _schedule(target, SWEEP_VERISOUL, "sweep-verisoul", SWEEP_EVERY, delay)


def schedule_reconcile(target: Queue, delay: timedelta = timedelta(0)) -> None:
    """Only where Persona's API is configured: reconciliation has nothing to ask otherwise."""
    if load_config().persona_api_key:
        _schedule(target, RECONCILE_INQUIRIES, "reconcile-inquiries", RECONCILE_EVERY, delay)
