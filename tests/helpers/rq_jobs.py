"""What store/queue.py's enqueue is compared with: RQ's own enqueue, and a job as RQ reads it and Redis holds it."""

from __future__ import annotations

import pickle
import zlib
from datetime import UTC, datetime, timedelta

from rq import Queue
from rq.job import Job

from runtime.config import Config
from store.queue import (
    DEDUPE_PREFIX,
    FAILURE_TTL,
    PROCESS_EVENT,
    PROCESS_EVENT_RETRY,
    PROCESS_EVENT_TIMEOUT,
    RESULT_TTL,
    job_id_for,
)

# What RQ reads back from a job hash (Job.restore), but the two times of the enqueue.
JOB_ATTRIBUTES = (
    "id",
    "func_name",
    "args",
    "kwargs",
    "timeout",
    "retries_left",
    "retry_intervals",
    "enqueue_at_front_on_retry",
    "number_of_retries",
    "result_ttl",
    "failure_ttl",
    "ttl",
    "origin",
    "description",
    "meta",
    "worker_name",
    "group_id",
    "started_at",
    "ended_at",
    "last_heartbeat",
    "enqueue_at_front",
    "allow_dependency_failures",
    "dependency_ids",
    "repeats_left",
    "repeat_intervals",
    "rate_limit_key",
    "rate_limit_concurrency",
    "_success_callback_name",
    "_failure_callback_name",
    "_stopped_callback_name",
)
RQ_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"


def enqueue_with_rq(redis, config: Config, event: dict) -> Job:
    """RQ's own enqueue of the event job, with the parameters store/queue.py gives its jobs."""
    return Queue(config.events_queue, connection=redis).enqueue_call(
        PROCESS_EVENT,
        args=(event,),
        job_id=job_id_for(event["event_id"]),
        description=f"process_event {event['event_id']} {event['name']}",
        retry=PROCESS_EVENT_RETRY,
        timeout=PROCESS_EVENT_TIMEOUT,
        result_ttl=RESULT_TTL,
        failure_ttl=FAILURE_TTL,
    )


def job_attributes(redis, job_id: str) -> dict:
    job = Job.fetch(job_id, connection=redis)
    return {name: getattr(job, name) for name in JOB_ATTRIBUTES} | {"status": job.get_status(refresh=False)}


def stored(redis) -> dict:
    """Every key but the dedupe marks: its type, time to live and contents; a job hash's call unpickled (RQ
    compresses it, the script does not) and its times checked for RQ's format, then left out."""
    found = {}
    for key in redis.keys("*"):
        if key.startswith(DEDUPE_PREFIX.encode()):
            continue
        kind = redis.type(key).decode()
        contents = {"hash": redis.hgetall, "list": lambda k: redis.lrange(k, 0, -1), "set": redis.smembers}[kind](key)
        if key.startswith(Job.redis_job_namespace_prefix.encode()):
            contents[b"data"] = pickle.loads(inflated(contents[b"data"]))
            for name in (b"created_at", b"enqueued_at"):
                moment = datetime.strptime(contents.pop(name).decode(), RQ_TIME).replace(tzinfo=UTC)
                assert abs(moment - datetime.now(UTC)) < timedelta(minutes=1)
        found[key] = (kind, redis.ttl(key), contents)
    return found


def inflated(data: bytes) -> bytes:
    try:
        return zlib.decompress(data)
    except zlib.error:
        return data
