"""The scheduler process's pass (workers/scheduler.py) and abandoned-job recovery (workers/abandoned.py), on
fakeredis with RQ's own registries.

Issue 9's rows: one failed sweep ended the self-rescheduling chain for good; after any worker death RQ's
scheduler lock stayed with the dead worker for 10-15 minutes; a killed worker's job ran again 860 s later.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from runtime.config import Config
from tests.payloads import SECRET
from workers import abandoned, scheduler
from workers.abandoned import MAX_ABANDONMENTS, requeue_abandoned
from workers.scheduler import Scheduler

SWEEP = "workers.jobs.sweep_verisoul"
RECONCILE = "workers.jobs.reconcile_inquiries"


@pytest.fixture
def connection():
    return fakeredis.FakeRedis()


@pytest.fixture
def config():
    return Config(webhook_secrets=(SECRET,), redis_url="redis://unused")


def jobs_of(connection, queue: str, function: str) -> list[Job]:
    return [job for job in Queue(queue, connection=connection).jobs if job.func_name == function]


def test_the_sweep_is_enqueued_every_interval_whatever_became_of_the_last_run(connection, config, monkeypatch):
    monkeypatch.setattr("workers.sync.SWEEP_EVERY", timedelta(seconds=1))
    leader = Scheduler(connection, config)
    assert leader.tick()
    [first] = jobs_of(connection, config.sync_queue, SWEEP)
    # The run fails (the database was unreachable, say): nothing of the next run depends on it.
    Queue(config.sync_queue, connection=connection).remove(first)
    first.set_status(JobStatus.FAILED)
    time.sleep(1.1)
    leader.tick()
    assert [job.id for job in jobs_of(connection, config.sync_queue, SWEEP)] != [] != [first.id]


def test_reconciliation_is_scheduled_only_with_a_persona_api_key(connection, config):
    unkeyed = Scheduler(connection, config)
    unkeyed.tick()
    assert jobs_of(connection, config.events_queue, RECONCILE) == []
    unkeyed.release()
    keyed = Config(webhook_secrets=(SECRET,), redis_url="redis://unused", persona_api_key="persona_test_key")
    Scheduler(connection, keyed).tick()
    assert len(jobs_of(connection, config.events_queue, RECONCILE)) == 1


def test_one_scheduler_leads_and_a_standby_takes_over_when_its_lease_runs_out(connection, config, monkeypatch):
    monkeypatch.setattr(scheduler, "LEADER_TTL", 1)
    first, standby = Scheduler(connection, config), Scheduler(connection, config)
    assert (first.tick(), standby.tick()) == (True, False)
    time.sleep(1.1)  # the leader died: no tick renewed its lease
    assert standby.tick() is True
    assert first.tick() is False


def test_a_stopping_leader_hands_over_at_once(connection, config):
    first, standby = Scheduler(connection, config), Scheduler(connection, config)
    assert (first.tick(), standby.tick()) == (True, False)
    first.release()
    assert standby.tick() is True


def test_a_due_scheduled_job_is_moved_to_its_queue_even_if_a_dead_process_held_rqs_lock(connection, config):
    # A previous scheduler process (same RQ scheduler name) died holding RQ's 61-second lock.
    connection.set(f"rq:scheduler-lock:{config.sync_queue}", scheduler.RQ_SCHEDULER_NAME, ex=61)
    queue = Queue(config.sync_queue, connection=connection)
    job = queue.enqueue_at(datetime.now(UTC) - timedelta(seconds=1), "tests.resilience.jobs.note", "k", "v")
    Scheduler(connection, config).tick()
    assert job.id in queue.job_ids


def _started_by_a_dead_worker(connection, queue: Queue, expired_seconds_ago: float = 10) -> Job:
    """A job a worker took and registered as started, whose entry has since expired (the worker is gone)."""
    job = queue.enqueue("tests.resilience.jobs.note", "k", "v")
    queue.remove(job)
    job.set_status(JobStatus.STARTED)
    registry = StartedJobRegistry(queue=queue)
    connection.zadd(registry.key, {f"{job.id}:execution1": time.time() - expired_seconds_ago})
    return job


def test_an_abandoned_job_goes_back_to_the_front_of_its_queue_with_its_retries(connection):
    queue = Queue("persona-events", connection=connection)
    waiting = queue.enqueue("tests.resilience.jobs.note", "k", "waiting")
    job = _started_by_a_dead_worker(connection, queue)
    assert requeue_abandoned(queue) == [job.id]
    assert queue.job_ids == [job.id, waiting.id]
    assert Job.fetch(job.id, connection=connection).meta["abandoned"] == 1
    assert StartedJobRegistry(queue=queue).count == 0 and FailedJobRegistry(queue=queue).count == 0
    assert requeue_abandoned(queue) == []  # claimed once


def test_a_running_job_within_its_time_limit_is_left_alone(connection):
    queue = Queue("persona-events", connection=connection)
    _started_by_a_dead_worker(connection, queue, expired_seconds_ago=-(abandoned.EXPIRY_SLACK_SECONDS + 5))
    assert requeue_abandoned(queue) == []
    assert StartedJobRegistry(queue=queue).count == 1


def test_a_job_that_every_worker_dies_on_fails_with_a_reason(connection):
    queue = Queue("persona-events", connection=connection)
    job = _started_by_a_dead_worker(connection, queue)
    job.meta["abandoned"] = MAX_ABANDONMENTS
    job.save_meta()
    assert requeue_abandoned(queue) == []
    assert FailedJobRegistry(queue=queue).get_job_ids() == [job.id]
    assert (
        "its worker died each of the 5 times it ran"
        in Job.fetch(job.id, connection=connection).latest_result().exc_string
    )


def test_a_job_taken_by_a_worker_stopped_before_it_started_it_is_requeued(connection, monkeypatch):
    """A worker serving two queues took the job (it sits in the queue's intermediate list) and was stopped
    or killed before registering it as started: acknowledged, it must still run (issue 9, a deploy)."""
    from workers.worker import WorkerQueue

    monkeypatch.setattr(abandoned, "TAKEN_GRACE_SECONDS", 0.0)
    events, syncs = Queue("persona-events", connection=connection), Queue("persona-sync", connection=connection)
    job = events.enqueue("tests.resilience.jobs.note", "k", "v")
    taken = WorkerQueue.lpop([events.key, syncs.key], timeout=None, connection=connection)
    assert taken is not None and events.count == 0
    assert requeue_abandoned(events) == []  # first seen: a live worker may be registering it right now
    assert requeue_abandoned(events) == [job.id]
    assert events.job_ids == [job.id] and events.intermediate_queue.get_job_ids() == []


def test_a_worker_of_two_queues_leaves_no_job_in_an_intermediate_list(connection):
    from workers.worker import Worker

    events, syncs = Queue("persona-events", connection=connection), Queue("persona-sync", connection=connection)
    for queue in (syncs, events):
        queue.enqueue("tests.resilience.jobs.note", "order", queue.name)
    Worker([events, syncs], connection=connection).work(burst=True)
    assert [label.decode() for label in connection.lrange("order", 0, -1)] == ["persona-events", "persona-sync"]
    assert events.intermediate_queue.get_job_ids() == syncs.intermediate_queue.get_job_ids() == []
