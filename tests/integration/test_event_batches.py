"""The worker takes waiting event jobs in batches (workers/worker.py): each still ends as its own job."""

from __future__ import annotations

import pytest
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, FinishedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from sqlalchemy import func, select

from domain.events import QueuedEvent
from store.db import Database
from store.models import Event
from store.queue import EventQueue, job_id_for
from tests.helpers.events import inquiry_event
from workers.worker import EVENT_BATCH, Worker

pytestmark = pytest.mark.integration


def _events(count: int, prefix: str) -> list[QueuedEvent]:
    return [
        inquiry_event(f"inq_{prefix}{n}", "created", f"2026-01-01T00:00:{n % 60:02d}.000Z", f"user_{prefix}{n}")
        for n in range(count)
    ]


def _batches_taken_from(waiting: int) -> list[int]:
    """One job dequeued, then up to EVENT_BATCH - 1 more, half of those still waiting at most."""
    batches = []
    while waiting:
        more = min(EVENT_BATCH - 1, (waiting - 1) // 2)
        batches.append(1 + more)
        waiting -= 1 + more
    return batches


def _worker(config, connection) -> Worker:
    return Worker([Queue(name, connection=connection) for name in config.queues], connection=connection)


def _recorded(database_url: str) -> int:
    with Database(database_url).sessions() as session:
        return session.execute(select(func.count()).select_from(Event)).scalar_one()


def test_a_backlog_is_applied_in_batches_of_at_most_half_of_it_each_job_finishing_as_its_own(
    real_config, real_redis, worker_env, monkeypatch
):
    events = _events(EVENT_BATCH * 2 + 3, "b")
    queue = EventQueue(real_redis, real_config)
    assert all(queue.enqueue_once(event) for event in events)
    batches = []
    original = Worker._execute_batch
    monkeypatch.setattr(
        Worker, "_execute_batch", lambda self, jobs, q: batches.append(len(jobs)) or original(self, jobs, q)
    )

    _worker(real_config, real_redis).work(burst=True)

    assert batches == _batches_taken_from(len(events)) == [16, 10, 5, 2, 1, 1]
    assert _recorded(real_config.database_url) == len(events)
    events_queue = Queue(real_config.events_queue, connection=real_redis)
    finished = FinishedJobRegistry(queue=events_queue)
    for event in events:
        job = Job.fetch(job_id_for(event["event_id"]), connection=real_redis)
        assert (job.get_status(), job.return_value()) == (JobStatus.FINISHED, "applied")
        assert job.id in finished
    assert StartedJobRegistry(queue=events_queue).count == 0
    assert real_redis.llen(events_queue.intermediate_queue_key) == 0


def test_a_failing_event_in_a_batch_fails_or_retries_alone(real_config, real_redis, worker_env):
    broken = dict(_events(1, "x")[0], created_at="not a time")  # the worker cannot parse it: permanent
    events = _events(4, "f")
    queue = EventQueue(real_redis, real_config)
    for event in (events[0], broken, *events[1:]):
        assert queue.enqueue_once(event)

    _worker(real_config, real_redis).work(burst=True)

    assert _recorded(real_config.database_url) == len(events)
    events_queue = Queue(real_config.events_queue, connection=real_redis)
    assert FailedJobRegistry(queue=events_queue).get_job_ids() == [job_id_for(broken["event_id"])]
    assert ScheduledJobRegistry(queue=events_queue).count == 0  # failed at once, not retried


def test_a_batch_stops_at_a_job_that_is_not_an_event(real_config, real_redis, worker_env, monkeypatch):
    queue = EventQueue(real_redis, real_config)
    first, second = _events(2, "s")
    queue.enqueue_once(first)
    Queue(real_config.events_queue, connection=real_redis).enqueue("workers.jobs.sweep_verisoul")
    queue.enqueue_once(second)
    batches = []
    original = Worker._execute_batch
    monkeypatch.setattr(
        Worker, "_execute_batch", lambda self, jobs, q: batches.append([j.id for j in jobs]) or original(self, jobs, q)
    )

    _worker(real_config, real_redis).work(burst=True)

    assert batches == [[job_id_for(first["event_id"])], [job_id_for(second["event_id"])]]
    assert _recorded(real_config.database_url) == 2


def test_a_worker_killed_mid_batch_leaves_every_unfinished_job_where_recovery_finds_it(
    real_config, real_redis, worker_env, monkeypatch
):
    events = _events(9, "k")  # the first job, then 4 more (half of the 8 behind it): 5 in the batch
    queue = EventQueue(real_redis, real_config)
    for event in events:
        queue.enqueue_once(event)
    performed, perform = [], Worker.perform_job

    def perform_then_die(self, job, q, execution):
        if len(performed) == 2:
            raise SystemExit("killed")  # as if the process died here: nothing more is recorded
        performed.append(job.id)
        return perform(self, job, q, execution)

    monkeypatch.setattr(Worker, "perform_job", perform_then_die)
    with pytest.raises(SystemExit):
        _worker(real_config, real_redis).work(burst=True)

    events_queue = Queue(real_config.events_queue, connection=real_redis)
    started = {
        StartedJobRegistry.parse_job_id(entry)
        for entry in real_redis.zrange(StartedJobRegistry(queue=events_queue).key, 0, -1)
    }
    batch = {job_id_for(event["event_id"]) for event in events[:5]}
    # Every job of the batch is registered as started, the two applied too (their ends are recorded when
    # the batch ends): recovery requeues them once their entries expire (workers/abandoned.py), and the
    # applied ones then come out duplicates. The jobs the batch did not take are still queued.
    assert started == batch and set(events_queue.get_job_ids()) == {job_id_for(e["event_id"]) for e in events[5:]}
    assert _recorded(real_config.database_url) == len(performed) == 2


def test_a_batch_renews_its_registry_entries_when_its_jobs_run_long(real_config, real_redis, worker_env, monkeypatch):
    events = _events(5, "r")  # the first job and 2 more (half of the 4 behind it)
    queue = EventQueue(real_redis, real_config)
    for event in events:
        queue.enqueue_once(event)
    renewals, renew = [], Worker._renew
    monkeypatch.setattr(
        Worker, "_renew", lambda self, jobs: renewals.append(sorted(j.id for j, _ in jobs)) or renew(self, jobs)
    )
    worker = _worker(real_config, real_redis)
    clock = iter(range(0, 1000, 2))
    worker.clock = lambda: float(next(clock))  # each look is 2 s later: every job begins past BATCH_RENEW_EVERY

    worker.work(burst=True)

    ids = [job_id_for(event["event_id"]) for event in events]
    assert renewals[:3] == [sorted(ids[0:3]), sorted(ids[1:3]), sorted(ids[2:3])]
    assert _recorded(real_config.database_url) == len(events)
