"""The erasure job, `erase(erasure_id)` (docs/contracts.md §10; the steps and their order: domain/erasure.py).

It runs on the sync queue, so the Procfile's ordinary `rq worker` serves it. Each step is recorded on the receipt
once done, and progress within the Persona step (each inquiry redacted) as it is made, so a job killed anywhere
runs again from where it stopped, and a second run of a finished erasure does nothing. Persona, Verisoul, the
database or Redis away: raised, and RQ's Retry (store/erasures.py ERASE_RETRY) runs the job again after a
back-off; once the retries are spent, or when a vendor refuses a call (a 4xx), the receipt says `failed` with why,
and erasing the user again resumes it. The job's one argument is the erasure id; the ids it acts on are read from
the receipt's `pending`, so nothing in Redis names the user.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from redis import Redis
from redis.exceptions import LockError
from rq import Queue, get_current_job
from rq.job import Job
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)

from clients.persona import PersonaError, PersonaUnavailable, make_persona_client
from clients.rate_limit import RateLimited
from clients.verisoul import VerisoulError, VerisoulUnavailable, account_deleter
from domain.erasure import DONE, PERSONA, REDIS, ROWS, STEP_DONE, STEP_SKIPPED, VERISOUL, names_any, steps_left
from runtime import metrics
from runtime.config import load_config
from store.erasures import (
    ERASE_TIMEOUT,
    delete_user_rows,
    fail,
    finish,
    load_erasure,
    record_pending,
    record_step,
)
from store.notify_queue import PENDING_PREFIX as NOTIFY_PENDING_PREFIX
from store.sync_queue import FAILED_SYNCS_PREFIX, PENDING_PREFIX
from workers.jobs import PermanentJobError, database, is_transient, now, redis, syncer
from workers.notify import LOCK_PREFIX as NOTIFY_LOCK_PREFIX
from workers.sync import LOCK_PREFIX as SYNC_LOCK_PREFIX
from workers.sync import LOCK_TTL as SYNC_LOCK_TTL

log = logging.getLogger(__name__)

# One run of an erasure at a time: a second job (a DELETE repeated while the first runs) returns at once.
LOCK_PREFIX = "persona-events:erasure-lock:"
# Job hashes are read this many at a time while looking for those that name the user.
SCAN_BATCH = 500
_REGISTRIES = (
    StartedJobRegistry,
    FinishedJobRegistry,
    FailedJobRegistry,
    DeferredJobRegistry,
    ScheduledJobRegistry,
    CanceledJobRegistry,
)
# Worth a retry: a vendor away or over its rate limit.
_VENDOR_AWAY = (PersonaUnavailable, VerisoulUnavailable, RateLimited)


@metrics.timed_job("erase")
def erase(erasure_id: str) -> str:
    """Run the erasure's steps not yet done; `done`, or `running` when another job holds it."""
    lock = redis().lock(LOCK_PREFIX + erasure_id, timeout=ERASE_TIMEOUT + 60, blocking_timeout=0)
    if not lock.acquire():
        return "running"
    try:
        return _run(erasure_id)
    finally:
        try:
            lock.release()
        except LockError:
            pass  # expired meanwhile: nothing to release


def _run(erasure_id: str) -> str:
    erasure = load_erasure(database(), erasure_id)
    if erasure is None:
        _stop_retrying()
        raise PermanentJobError(f"erasure {erasure_id}: no such erasure")
    if erasure.status == DONE:
        return DONE
    for step in steps_left(erasure.steps):
        _attempt(erasure_id, step)
    finish(database(), erasure_id, now())
    log.info("erasure done", extra={"outcome": erasure_id})
    return DONE


def _attempt(erasure_id: str, step: str) -> None:
    """One step; a failure is retried by RQ when it may pass, else the receipt says why and the job fails."""
    try:
        STEPS[step](erasure_id)
    except (PersonaError, VerisoulError) as error:
        _give_up(erasure_id, step, f"refused: {error}")
        raise PermanentJobError(f"erasure {erasure_id}, step {step}: {error}") from error
    except Exception as error:
        if not isinstance(error, _VENDOR_AWAY) and not is_transient(error):
            _give_up(erasure_id, step, f"failed: {type(error).__name__}")
            raise PermanentJobError(f"erasure {erasure_id}, step {step}: {type(error).__name__}") from error
        if _last_attempt():
            _give_up(erasure_id, step, f"unavailable, retries spent: {type(error).__name__}")
        raise


def _give_up(erasure_id: str, step: str, detail: str) -> None:
    _stop_retrying()
    log.error("erasure failed", extra={"outcome": erasure_id, "reason": f"{step}: {detail}"})
    fail(database(), erasure_id, step, detail, now())


def _last_attempt() -> bool:
    """Whether RQ will not run this job again after a failure (its retries spent)."""
    job = get_current_job()
    return job is not None and not job.retries_left


def _stop_retrying() -> None:
    job = get_current_job()
    if job is not None:
        job.retries_left = 0


def _pending(erasure_id: str) -> dict:
    erasure = load_erasure(database(), erasure_id)
    assert erasure is not None and erasure.pending is not None, "an unfinished erasure keeps its ids"
    return dict(erasure.pending)


# --- the steps ----------------------------------------------------------------------------------------


def _redact_at_persona(erasure_id: str) -> None:
    """Each inquiry redacted at Persona (404: already gone), each one recorded as it is done."""
    client = make_persona_client(load_config())
    if client is None:
        detail = "PERSONA_API_KEY is not set: nothing was redacted at Persona"
        record_step(database(), erasure_id, PERSONA, STEP_SKIPPED, detail, now())
        return
    pending = _pending(erasure_id)
    progress = pending.setdefault("persona", {"redacted": [], "gone": []})
    try:
        for inquiry_id in pending["inquiry_ids"]:
            if inquiry_id in progress["redacted"] or inquiry_id in progress["gone"]:
                continue
            progress["redacted" if client.redact_inquiry(inquiry_id) else "gone"].append(inquiry_id)
            record_pending(database(), erasure_id, pending)
    finally:
        client.close()
    counts = {"redacted": len(progress["redacted"]), "already_gone": len(progress["gone"])}
    detail = f"{counts['redacted']} inquiries redacted, {counts['already_gone']} already gone"
    record_step(database(), erasure_id, PERSONA, STEP_DONE, detail, now(), {"persona": counts})


def _delete_rows(erasure_id: str) -> None:
    delete_user_rows(database(), erasure_id, now())


# Redis keys named after a user: its sync's pending mark, lock and failed jobs' list, its notification's pending
# mark and delivery lock.
USER_KEY_PREFIXES = (PENDING_PREFIX, SYNC_LOCK_PREFIX, FAILED_SYNCS_PREFIX, NOTIFY_PENDING_PREFIX, NOTIFY_LOCK_PREFIX)


def _clear_redis(erasure_id: str) -> None:
    """The keys named after the user (USER_KEY_PREFIXES) and every job of ours
    whose arguments name the user, an inquiry or an account of it (event jobs carry the event, with both)."""
    pending = _pending(erasure_id)
    config = load_config()
    connection = redis()
    references = pending.get("verisoul_accounts") or [pending["reference_id"]]
    keys = [prefix + key for key in references for prefix in USER_KEY_PREFIXES]
    deleted_keys = connection.delete(*keys)
    names = frozenset([*references, *pending["inquiry_ids"], *pending["account_ids"]])
    deleted_jobs = delete_jobs_naming(connection, config.queues, names)
    detail = f"{deleted_keys} keys and {deleted_jobs} jobs deleted"
    counts = {"redis": {"keys": deleted_keys, "jobs": deleted_jobs}}
    record_step(database(), erasure_id, REDIS, STEP_DONE, detail, now(), counts)


def delete_jobs_naming(connection: Redis, queue_names: list[str], names: frozenset[str]) -> int:
    """Delete the jobs of these queues (waiting, running, scheduled, finished, failed...) whose arguments name one
    of `names`, with their results; how many. Every job hash is looked at, so one no registry lists goes too."""
    deleted = 0
    queues = [Queue(name, connection=connection) for name in queue_names]
    registries = [registry(queue=queue) for queue in queues for registry in _REGISTRIES]
    for batch in _job_id_batches(connection):
        for job in Job.fetch_many(batch, connection=connection):
            if job is None or job.origin not in queue_names or not _names(job, names):
                continue
            with connection.pipeline() as pipeline:
                job.delete(pipeline=pipeline, remove_from_queue=True)
                for registry in registries:
                    pipeline.zrem(registry.key, job.id)
                pipeline.execute()
            deleted += 1
    return deleted


def _job_id_batches(connection: Redis) -> Iterator[list[str]]:
    batch: list[str] = []
    for key in connection.scan_iter(match=f"{Job.redis_job_namespace_prefix}*", count=1000):
        job_id = (key.decode() if isinstance(key, bytes) else key).removeprefix(Job.redis_job_namespace_prefix)
        if ":" not in job_id:  # rq:job:<id>:dependents and the like are not jobs
            batch.append(job_id)
        if len(batch) >= SCAN_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _names(job: Job, names: frozenset[str]) -> bool:
    """Whether the job's arguments name one of `names`; a job whose arguments cannot be read is not ours to judge."""
    try:
        return names_any([job.args, job.kwargs], names)
    except Exception:  # noqa: BLE001 - an unreadable job (another app's pickle) is left as it is
        return False


def _delete_at_verisoul(erasure_id: str) -> None:
    """The account (the reference id) deleted at Verisoul, after a sync in flight for it has finished."""
    client = syncer().client
    if client is None:
        detail = "VERISOUL_API_URL is not set: no account to delete at Verisoul"
        record_step(database(), erasure_id, VERISOUL, STEP_SKIPPED, detail, now())
        return
    delete = account_deleter(client)
    if delete is None:
        detail = "Verisoul's account API (VERISOUL_API_FLAVOR=account) has no delete: the account stays at Verisoul"
        record_step(database(), erasure_id, VERISOUL, STEP_SKIPPED, detail, now())
        return
    pending = _pending(erasure_id)
    accounts = pending.get("verisoul_accounts") or [pending["reference_id"]]
    deleted = sum(_delete_account(delete, account) for account in accounts)
    detail = f"{deleted} accounts deleted, {len(accounts) - deleted} not held by Verisoul"
    counts = {"verisoul": {"deleted": deleted, "not_found": len(accounts) - deleted}}
    record_step(database(), erasure_id, VERISOUL, STEP_DONE, detail, now(), counts)


def _delete_account(delete: Callable[[str], bool], account_id: str) -> bool:
    lock = redis().lock(SYNC_LOCK_PREFIX + account_id, timeout=SYNC_LOCK_TTL, blocking_timeout=5)
    if not lock.acquire():
        raise VerisoulUnavailable("a sync of the account is still running")
    try:
        return delete(account_id)
    finally:
        try:
            lock.release()
        except LockError:
            pass


STEPS: dict[str, Callable[[str], None]] = {
    PERSONA: _redact_at_persona,
    ROWS: _delete_rows,
    REDIS: _clear_redis,
    VERISOUL: _delete_at_verisoul,
}
