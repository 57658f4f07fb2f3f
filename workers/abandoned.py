"""Jobs whose worker died mid-job (SIGKILL, OOM, a lost host): found and run again within a minute.

A worker registers each job it starts in the queue's StartedJobRegistry with an expiry: the job's time
limit plus a small margin (workers/worker.py). A live worker removes the entry when the job ends, or
stops the job at its time limit; so an entry past its expiry belongs to a worker that is gone. RQ's own
clean-up treats such a job as failed (or spends one of its retries) at its next maintenance pass, ten
minutes later by default; here it is put back at the front of its queue, its retries untouched, by the
scheduler process every few seconds and by every worker before RQ's clean-up. Every job of this
service is idempotent, so running one again is always safe.
"""

from __future__ import annotations

import logging
import time
from typing import cast

from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.registry import StartedJobRegistry

log = logging.getLogger(__name__)

# An entry this close to its expiry already counts: its job has overrun its time limit by all but a
# second of the margin, which only a dead worker does. It also lets a worker run this just before
# RQ's clean-up and leave that nothing to fail.
EXPIRY_SLACK_SECONDS = 1.0
# A job taken from a queue but still not registered as started after this long was dropped by its worker.
TAKEN_GRACE_SECONDS = 5.0
# A job that every worker running it dies on is a poison pill, not bad luck: it fails with a reason
# for an operator instead of taking workers down forever.
MAX_ABANDONMENTS = 5


def requeue_abandoned(queue: Queue, now: float | None = None) -> list[str]:
    """Put the queue's abandoned jobs back at the front of the queue; returns their ids.

    Each registry or list entry is claimed with ZREM or LREM, so two processes running this at once
    requeue a job once."""
    connection = queue.connection
    registry = StartedJobRegistry(queue=queue)
    cutoff = (time.time() if now is None else now) + EXPIRY_SLACK_SECONDS
    requeued = []
    for entry in _members(connection.zrangebyscore(registry.key, 0, cutoff)):
        if not connection.zrem(registry.key, entry):
            continue  # another process claimed it first
        job = _started_job(registry, entry, queue)
        if job is not None and _run_again(job, queue):
            requeued.append(job.id)
    return requeued + _requeue_taken_but_not_started(queue, registry)


def _requeue_taken_but_not_started(queue: Queue, registry: StartedJobRegistry) -> list[str]:
    """Jobs a worker moved to the queue's intermediate list but never registered as started: it was
    stopped or killed in between (workers/worker.py WorkerQueue). A live worker registers a job within
    milliseconds; one still unregistered TAKEN_GRACE_SECONDS after it was first seen here never will be."""
    intermediate = queue.intermediate_queue
    started = {registry.parse_job_id(entry) for entry in _members(queue.connection.zrange(registry.key, 0, -1))}
    requeued = []
    for job_id in intermediate.get_job_ids():
        if job_id in started or intermediate.set_first_seen(job_id):
            continue  # running, or seen for the first time: look again on the next pass
        seen = intermediate.get_first_seen(job_id)
        if seen is None or time.time() - seen.timestamp() < TAKEN_GRACE_SECONDS:
            continue
        if not queue.connection.lrem(intermediate.key, 1, job_id):
            continue  # registered or claimed meanwhile
        try:
            job = Job.fetch(job_id, connection=queue.connection, serializer=queue.serializer)
        except NoSuchJobError:
            continue
        if _run_again(job, queue):
            requeued.append(job.id)
    return requeued


def _members(reply: object) -> list[str]:
    """A sorted set's members, as redis-py returns them without decode_responses (bytes), as text."""
    return [member.decode() for member in cast("list[bytes]", reply)]


def _started_job(registry: StartedJobRegistry, entry: str, queue: Queue) -> Job | None:
    """The entry's job if it still exists and still says started (else it ended; the entry was a leftover)."""
    try:
        job = Job.fetch(registry.parse_job_id(entry), connection=queue.connection, serializer=queue.serializer)
    except NoSuchJobError:
        return None
    return job if job.get_status(refresh=False) == JobStatus.STARTED else None


def _run_again(job: Job, queue: Queue) -> bool:
    """Requeue at the front, counting abandonments; fail the job once it has killed too many workers."""
    abandonments = int(job.meta.get("abandoned", 0)) + 1
    job.meta["abandoned"] = abandonments
    job.save_meta()
    if abandonments > MAX_ABANDONMENTS:
        reason = f"AbandonedJobError: its worker died each of the {MAX_ABANDONMENTS} times it ran"
        with queue.connection.pipeline() as pipeline:
            record_job_failure(job, reason, pipeline)
            pipeline.execute()
        log.error("abandoned job failed", extra={"job_id": job.id, "reason": reason})
        return False
    queue.enqueue_job(job, at_front=True)
    log.warning(
        "abandoned job requeued", extra={"job_id": job.id, "queue": queue.name, "outcome": f"run {abandonments + 1}"}
    )
    return True
