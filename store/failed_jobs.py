"""RQ's failed-job registry, for `replay-event --failed`: find jobs by function or error, and requeue them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry


@dataclass(frozen=True)
class FailedJob:
    job_id: str
    function: str
    description: str
    error: str  # the last line of the exception, e.g. `PermanentJobError: event evt_1: KeyError: 'name'`
    failed_at: datetime | None  # when it last failed (aware, UTC: RQ parses its times so); None if no end was recorded


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def jobs_in_failed_registry(queue: Queue) -> Iterator[Job]:
    """The queue's failed jobs that still exist (an expired job's id may linger in the registry)."""
    ids = FailedJobRegistry(queue=queue).get_job_ids()
    return (job for job in Job.fetch_many(ids, connection=queue.connection) if job is not None)


def failed_job(queue: Queue, job_id: str) -> FailedJob | None:
    """The job, if it is in the queue's failed registry (and still exists)."""
    if job_id not in FailedJobRegistry(queue=queue):
        return None
    job = Job.fetch_many([job_id], connection=queue.connection)[0]
    return _described(job, _error_text(job)) if job is not None else None


def _error_text(job: Job) -> str:
    result = job.latest_result()
    return result.exc_string if result is not None and result.exc_string else ""


def _described(job: Job, error_text: str) -> FailedJob:
    return FailedJob(job.id, job.func_name or "", job.description or "", _last_line(error_text), job.ended_at)


def failed_jobs(
    queue: Queue,
    function: str | None = None,
    error_text: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[FailedJob]:
    """Failed jobs, oldest failure first; `function` matches the job's function name or its last part
    (`process_event` or `workers.jobs.process_event`), `error_text` any part of its exception text,
    `since`/`until` (aware) the time it failed, both inclusive."""
    found = []
    for job in jobs_in_failed_registry(queue):
        name = job.func_name or ""
        if function and function not in (name, name.rpartition(".")[2]):
            continue
        text = _error_text(job)
        if error_text and error_text not in text:
            continue
        described = _described(job, text)
        if not _within(described.failed_at, since, until):
            continue
        found.append(described)
    return found


def _within(moment: datetime | None, since: datetime | None, until: datetime | None) -> bool:
    if since is None and until is None:
        return True
    return moment is not None and (since is None or moment >= since) and (until is None or moment <= until)


def requeue(queue: Queue, job_id: str) -> None:
    """Back on its queue, with RQ's retry count and failure forgotten."""
    FailedJobRegistry(queue=queue).requeue(job_id)
