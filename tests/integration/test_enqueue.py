"""The event enqueue (store/queue.py) on a real Redis: the job is the one RQ's own `enqueue_call` makes, a
real worker applies it, and RQ's failed registry, `replay-event --failed` and the abandoned-job requeue
handle it as they handle RQ's own jobs."""

from __future__ import annotations

import threading
import time

import pytest
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from store.failed_jobs import failed_jobs, requeue
from store.queue import EventQueue, job_id_for
from tests.helpers.events import inquiry_event
from tests.helpers.rq_jobs import enqueue_with_rq, job_attributes, stored
from workers import jobs
from workers.abandoned import requeue_abandoned

pytestmark = pytest.mark.integration


@pytest.fixture
def worker(real_config, real_redis, worker_env):
    """Runs every queued event job in this process, as `rq worker --burst` would."""
    jobs.redis.cache_clear()
    queue = Queue(real_config.events_queue, connection=real_redis)
    yield lambda: SimpleWorker([queue], connection=real_redis).work(burst=True)
    jobs.redis.cache_clear()


def test_the_job_is_the_one_rqs_enqueue_call_makes(real_config, real_redis):
    event = inquiry_event("inq_1", "approved", "2024-01-01T00:00:00.000Z", "user_1")
    job_id = job_id_for(event["event_id"])
    enqueue_with_rq(real_redis, real_config, event)
    theirs = job_attributes(real_redis, job_id), stored(real_redis)
    real_redis.flushdb()
    assert EventQueue(real_redis, real_config).enqueue_once(event)
    assert (job_attributes(real_redis, job_id), stored(real_redis)) == theirs


def test_a_worker_applies_it(real_config, real_redis, worker):
    event = inquiry_event("inq_1", "approved", "2024-01-01T00:00:00.000Z", "user_1")
    assert EventQueue(real_redis, real_config).enqueue_once(event)
    worker()
    job = Job.fetch(job_id_for(event["event_id"]), connection=real_redis)
    assert job.get_status() == JobStatus.FINISHED and job.return_value() == "applied"


def test_a_failed_job_is_found_and_requeued_by_replay_event_failed(real_config, real_redis, worker):
    broken = inquiry_event("inq_b", "approved", "2024-01-01T00:00:00.000Z", "user_b")
    del broken["created_at"]
    EventQueue(real_redis, real_config).enqueue_once(broken)
    worker()
    queue = Queue(real_config.events_queue, connection=real_redis)
    [failed] = failed_jobs(queue, function="process_event")
    assert failed.job_id == job_id_for(broken["event_id"])
    assert failed.description == f"process_event {broken['event_id']} inquiry.approved"
    requeue(queue, failed.job_id)
    assert queue.job_ids == [failed.job_id]
    assert Job.fetch(failed.job_id, connection=real_redis).args == (broken,)


def test_an_abandoned_job_is_requeued_with_its_event(real_config, real_redis):
    event = inquiry_event("inq_1", "approved", "2024-01-01T00:00:00.000Z", "user_1")
    EventQueue(real_redis, real_config).enqueue_once(event)
    queue = Queue(real_config.events_queue, connection=real_redis)
    job = Job.fetch(job_id_for(event["event_id"]), connection=real_redis)
    queue.remove(job)
    job.set_status(JobStatus.STARTED)  # taken by a worker that then died
    real_redis.zadd(StartedJobRegistry(queue=queue).key, {f"{job.id}:execution1": time.time() - 10})
    assert requeue_abandoned(queue) == [job.id]
    assert queue.job_ids == [job.id]
    assert Job.fetch(job.id, connection=real_redis).args == (event,)


def test_a_redis_that_lost_the_script_still_queues_each_event_once(real_config, real_redis):
    events = EventQueue(real_redis, real_config)
    first = inquiry_event("inq_1", "created", "2024-01-01T00:00:00.000Z", "user_1")
    assert events.enqueue_once(first)
    real_redis.script_flush()  # as after a restart: Redis keeps no scripts
    second = inquiry_event("inq_2", "created", "2024-01-01T00:00:00.000Z", "user_2")
    assert (events.enqueue_once(second), events.enqueue_once(first)) == (True, False)
    assert Queue(real_config.events_queue, connection=real_redis).job_ids == [
        job_id_for(first["event_id"]),
        job_id_for(second["event_id"]),
    ]


def test_concurrent_deliveries_of_the_same_events_queue_each_once(real_config, real_redis):
    events = EventQueue(real_redis, real_config)
    distinct = [inquiry_event(f"inq_{n}", "created", "2024-01-01T00:00:00.000Z", f"user_{n}") for n in range(10)]
    start = threading.Barrier(len(distinct) * 4)
    answers: list[bool] = []

    def deliver(event: dict) -> None:
        start.wait()
        answers.append(events.enqueue_once(event))

    threads = [threading.Thread(target=deliver, args=(event,)) for event in distinct * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert (answers.count(True), answers.count(False)) == (10, 30)
    queued = Queue(real_config.events_queue, connection=real_redis).job_ids
    assert sorted(queued) == sorted(job_id_for(event["event_id"]) for event in distinct)
