"""RQ job entry points. Each runs in one database transaction and is safe to run again.

Failures are classified by what they are: a known-transient database or Redis error (a lost
connection, a restarting server, a lock or serialisation conflict) or a job timeout is raised as it
is, and RQ's Retry (set at enqueue) runs the job again after a back-off; anything else is a bug or
data the code cannot apply, and fails at once with its reason (PermanentJobError), because running it
again would fail the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, get_current_job
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.timeouts import JobTimeoutException
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from clients.host_webhook import HostWebhook
from clients.persona import make_persona_client
from clients.rate_limit import RateLimited, RateLimiter
from clients.verisoul import VerisoulError, VerisoulUnavailable, make_client
from domain.erasure import ERASED
from domain.events import QueuedEvent
from runtime import metrics
from runtime.config import RecordSettings, load_config
from store.db import Database
from store.event_log import DUPLICATE
from store.notify_queue import request_delivery_unless_away
from store.outbox import never_attempted
from store.queue import connect_redis
from store.records import Applied, DuplicateEvent, announce_ended_blocks, apply_and_log
from store.sync_queue import FAILED_SYNCS_PREFIX, SYNC_FAILURE_TTL, request_sync
from workers.notify import Notifier
from workers.reconcile import reconcile
from workers.replay import RECONCILED, Replayer
from workers.sync import Syncer
from workers.worker import REDIS_OUTAGE

log = logging.getLogger(__name__)
# A notification never tried this long after its commit lost its delivery job (its own is queued at once).
NOTIFY_SWEEP_GRACE = timedelta(seconds=30)


class PermanentJobError(Exception):
    """A failure that retrying cannot fix; the job goes straight to the failed registry with this reason."""


@lru_cache(maxsize=1)
def database() -> Database:
    """One engine per worker process, built before the first job (workers/rq_settings.py)."""
    return Database(load_config().database_url, pre_ping=False)


@lru_cache(maxsize=1)
def redis() -> Redis:
    return connect_redis(load_config().redis_url)


def queue() -> Queue:
    return Queue(load_config().events_queue, connection=redis())


def sync_queue() -> Queue:
    return Queue(load_config().sync_queue, connection=redis())


def now() -> datetime:
    """The worker's clock; tests replace it to reach a block's expiry without waiting."""
    return datetime.now(UTC)


@lru_cache(maxsize=1)
def syncer() -> Syncer:
    config = load_config()
    client = None
    if config.verisoul_api_url:
        limiter = RateLimiter(redis(), "verisoul", config.verisoul_rate_limit)
        client = make_client(
            config.verisoul_api_url, config.verisoul_api_key or "", config.verisoul_api_flavor, limiter.acquire
        )
    return Syncer(
        database(),
        client,
        redis(),
        sync_queue(),
        clock=lambda: now(),
        settings=load_config().record_settings,
        request_notification=request_notification,
    )


def is_transient(error: BaseException) -> bool:
    """Worth a retry: lost database connections, a restarting server, lock timeouts, serialisation
    failures and integrity errors (a concurrent writer won a race; the transaction rolled back whole);
    an exhausted connection pool; Redis unreachable or timing out; the job's own time limit."""
    if isinstance(error, DBAPIError):
        return isinstance(error, (OperationalError, IntegrityError)) or error.connection_invalidated
    return isinstance(error, (PoolTimeoutError, JobTimeoutException, *REDIS_OUTAGE))


def _stop_retrying() -> None:
    job = get_current_job()
    if job is not None:
        job.retries_left = 0


def _first_line(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def _fail_permanently(event_id: object, error: Exception) -> PermanentJobError:
    _stop_retrying()
    reason = f"event {event_id}: {_first_line(error)}"
    log.error("process_event failed permanently", extra={"event_id": event_id, "reason": reason})
    return PermanentJobError(reason)


def replayer(command: str, dry_run: bool = False) -> Replayer:
    """Replays (the CLI, reconciliation) apply events with this worker's code, database and clock."""
    return Replayer(
        database(),
        now,
        command,
        dry_run,
        request_sync=lambda key: request_sync(redis(), sync_queue(), key),
        settings=record_settings(),
        request_notification=request_notification,
    )


def record_settings() -> RecordSettings:
    """The configuration's (runtime/config.py `RecordSettings`), Verisoul counted as configured when the syncer has
    a client (tests give it a fake one)."""
    return dataclasses.replace(load_config().record_settings, verisoul=verisoul_configured())


def verisoul_configured() -> bool:
    """Without VERISOUL_API_URL no sync is queued; the record says why (store/sync_state.py `sync_state`)."""
    return syncer().client is not None


def _apply_once(event: QueuedEvent) -> Applied:
    """store/records.py `apply_and_log`, at the worker's clock."""
    return apply_and_log(database(), event, now(), record_settings())


def _apply(event: QueuedEvent) -> Applied | None:
    """`_apply_once`, or None for a duplicate. Run once more at once when it found its pooled connection
    dead (the database restarted since): the workers' pool pings no connection before use (store/db.py),
    and a retry through RQ would wait a second."""
    try:
        try:
            return _apply_once(event)
        except DBAPIError as error:
            if not error.connection_invalidated:
                raise
        return _apply_once(event)
    except DuplicateEvent:
        return None


def _count(applied: Applied | None) -> str:
    """Metrics are counted after the commit, so a rolled-back attempt that is retried counts once."""
    outcome = applied.outcome if applied else DUPLICATE
    metrics.EVENTS_PROCESSED.labels(outcome).inc()
    if applied is not None and applied.kind is not None and applied.verdict.changes_state:
        metrics.count_transition(applied.kind, applied.verdict.before, applied.verdict.after)
    return outcome


def _forget_current_job() -> None:
    """The job's hash and result are deleted as it ends instead of kept a day: its event names erased ids."""
    job = get_current_job()
    if job is not None:
        job.result_ttl = 0


@metrics.timed_job("process_event")
def process_event(event: QueuedEvent) -> str:
    """Apply a queued event once: `applied`, `unexpected`, `stale` or `ignored`; `duplicate` if already logged."""
    try:
        applied = _apply(event)
    except Exception as error:
        if is_transient(error):
            raise  # RQ's Retry, set at enqueue, backs off and runs the job again
        raise _fail_permanently(event.get("event_id") if isinstance(event, dict) else None, error) from error
    outcome = _count(applied)
    if outcome == ERASED:
        _forget_current_job()
    if applied is not None and applied.needs_sync and applied.user is not None:
        # After the commit, so the sync reads this event's effect. The event is applied whatever
        # happens here: if Redis fails, the sweep finds the record unsynced and queues the sync.
        try:
            request_sync(redis(), sync_queue(), applied.user)
        except RedisError as error:
            log.warning(
                "sync not queued; the sweep will", extra={"event_id": event["event_id"], "reason": _first_line(error)}
            )
    if applied is not None and applied.announced and applied.user is not None:
        request_notification(applied.user)
    log.info("event processed", extra={"event_id": event["event_id"], "event_name": event["name"], "outcome": outcome})
    return outcome


@metrics.timed_job("sync_verisoul")
def sync_verisoul(reference_id: str) -> str:
    """Converge Verisoul to the user's desired state; calls only what differs (workers/sync.py).

    Verisoul refusing a call (a 4xx) fails the job at once with Verisoul's message; Verisoul, the
    database or Redis unavailable is retried with back-off (store/sync_queue.py SYNC_RETRY), and the sweep
    picks the user up again if every retry is spent."""
    try:
        result = syncer().sync(reference_id)
    except VerisoulError as error:
        _stop_retrying()
        raise PermanentJobError(f"user {reference_id}: {error}") from error
    except (VerisoulUnavailable, RateLimited):
        raise
    except Exception as error:
        if is_transient(error):
            raise
        _stop_retrying()
        raise PermanentJobError(f"user {reference_id}: {_first_line(error)}") from error
    log.info("verisoul synced", extra={"outcome": result, "user": reference_id})
    _forget_failed_syncs(reference_id)
    return result


def remember_failed_sync(job: Job, connection: Redis, *exc_info) -> None:
    """RQ's failure callback of a sync job (each failed try): its id, kept for the user's next success."""
    key = FAILED_SYNCS_PREFIX + job.args[0]
    with connection.pipeline() as pipeline:
        pipeline.sadd(key, job.id)
        pipeline.expire(key, SYNC_FAILURE_TTL)
        pipeline.execute()


def _forget_failed_syncs(reference_id: str) -> None:
    """The user is in step with Verisoul: their earlier failed syncs leave the failed registry (issue 12)."""
    key = FAILED_SYNCS_PREFIX + reference_id
    job_ids = [job_id.decode() if isinstance(job_id, bytes) else job_id for job_id in redis().smembers(key)]
    if job_ids:
        registry = FailedJobRegistry(queue=sync_queue())
        for job_id in job_ids:
            if job_id in registry:  # a try that was retried (or is waiting to be) is not in it: left alone
                registry.remove(job_id, delete_job=True)
    redis().delete(key)


def request_notification(reference_id: str) -> None:
    """Queue the delivery of the user's latest notification, after its commit. With Redis away the notification
    waits in the outbox, and the sweep queues its delivery (`sweep_notifications`)."""
    away = request_delivery_unless_away(redis(), load_config(), reference_id)
    if away:
        log.warning("notification not queued; the sweep will", extra={"user": reference_id, "reason": away})


@lru_cache(maxsize=1)
def notifier() -> Notifier:
    config = load_config()
    webhook = None
    if config.host_webhook_url and config.host_webhook_secret:
        webhook = HostWebhook(config.host_webhook_url, config.host_webhook_secret)
    return Notifier(database(), webhook, redis(), clock=lambda: now())


@metrics.timed_job("deliver_notification")
def deliver_notification(reference_id: str) -> str:
    """POST the user's latest `user.updated` to the host (workers/notify.py); the host refusing or away fails the
    job, retried on HOST_WEBHOOK_RETRIES' schedule, and the last failure dead-letters the notification."""
    job = get_current_job()
    final = job is None or not job.retries_left
    result = notifier().deliver(reference_id, final)
    log.info("notification delivered", extra={"outcome": result, "user": reference_id})
    return result


@metrics.timed_job("sweep_notifications")
def sweep_notifications() -> int:
    """Queue deliveries of notifications whose job was lost (the worker died after the commit, or Redis was away),
    and announce blocks that ended since the last run (no commit marks a block's end). Run every minute by the
    scheduler process."""
    config = load_config()
    if not config.host_webhook_url:
        return 0
    moment = now()
    with database().transaction() as session:
        ended = announce_ended_blocks(session, moment, record_settings())
    with database().sessions() as session:
        waiting = never_attempted(session, moment - NOTIFY_SWEEP_GRACE)
    for reference_id in sorted(set(waiting) | set(ended)):
        request_notification(reference_id)
    log.info("notification sweep", extra={"outcome": f"{len(waiting)} queued, {len(ended)} ended blocks"})
    return len(waiting)


@metrics.timed_job("sweep_verisoul")
def sweep_verisoul() -> int:
    """Queue syncs for expired blocks whose unblock job was lost and for unsynced users.

    Run every minute by the scheduler process (workers/scheduler.py), not by a chain of jobs, so a
    failed run or a dead worker cannot end it."""
    queued = syncer().sweep()
    log.info("verisoul sweep", extra={"outcome": f"{queued} syncs queued"})
    return queued


@metrics.timed_job("reconcile_inquiries")
def reconcile_inquiries() -> int:
    """Ask Persona about inquiries whose webhooks may be lost (workers/reconcile.py); run hourly by
    the scheduler process when PERSONA_API_KEY is set."""
    config = load_config()
    client = make_persona_client(config)
    changed = 0
    if client is not None:
        result = reconcile(database(), client, replayer("reconcile (scheduled)"), queue(), config.reconcile_after)
        changed = sum(1 for event in result.report.events if event.outcome == RECONCILED)
        summary = f"{len(result.checked)} checked, {changed} reconciled, {len(result.errors)} not fetched"
        log.info("reconciliation", extra={"outcome": summary})
    return changed
