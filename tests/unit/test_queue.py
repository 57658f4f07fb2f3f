"""The event enqueue (store/queue.py) on fakeredis: the job it writes is the one RQ's own `enqueue_call`
writes with the same parameters, field for field, and RQ's workers run it alike; the request builds no
RQ Job and sends the script a handful of arguments."""

from __future__ import annotations

import dataclasses

import fakeredis
import pytest
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from domain.events import QueuedEvent
from runtime.config import Config
from store.queue import (
    FAILURE_TTL,
    PROCESS_EVENT,
    PROCESS_EVENT_RETRY,
    RESULT_TTL,
    EventQueue,
    dedupe_key,
    job_id_for,
)
from tests.helpers.rq_jobs import enqueue_with_rq, job_attributes, stored
from workers import jobs

EVENT = {
    "event_id": "evt_1",
    "name": "inquiry.approved",
    "created_at": "2024-07-08T14:29:24.297Z",
    "body_sha256": "0" * 64,
    "object_type": "inquiry",
    "object_id": "inq_1",
    "status": "approved",
    "reference_id": "user_\U0001f600",
    "checks": [{"name": "id_a", "status": "passed"}],
    "timestamps": {"created_at": "2024-07-08T14:28:41.000Z"},
    "received_at": "2024-07-08T14:29:25.000Z",
}


@pytest.fixture
def config() -> Config:
    return Config(webhook_secrets=("s",), redis_url="redis://unused", database_url="sqlite://")


def fresh_redis() -> fakeredis.FakeRedis:
    """A fake Redis server of its own."""
    return fakeredis.FakeRedis(server=fakeredis.FakeServer())


# --- the job is RQ's own --------------------------------------------------------------------------------


@pytest.mark.parametrize("event_id", ["evt_1", "evt with space/and.dot"], ids=["plain-id", "hashed-id"])
@pytest.mark.parametrize("queue_name", ["persona-events", 'odd "queue" \\ é\n'], ids=["default-queue", "odd-queue"])
def test_the_job_is_the_one_rqs_enqueue_call_makes(config, event_id, queue_name):
    config = dataclasses.replace(config, events_queue=queue_name)
    event = {**EVENT, "event_id": event_id}
    ours, theirs = fresh_redis(), fresh_redis()
    assert EventQueue(ours, config).enqueue_once(event)
    enqueue_with_rq(theirs, config, event)
    job_id = job_id_for(event_id)
    assert job_attributes(ours, job_id) == job_attributes(theirs, job_id)
    assert job_attributes(ours, job_id)["status"] == JobStatus.QUEUED
    assert stored(ours) == stored(theirs)  # the same keys, types, TTLs and fields: for `rq info` and the rest
    assert ours.exists(dedupe_key(event_id)) == 1


def test_the_call_is_rqs_job_data_uncompressed(config):
    """RQ reads `data` compressed or not (Job.restore); compressing a few hundred bytes costs more than
    pickling them, so the script stores the pickle as RQ's serializer makes it."""
    redis = fresh_redis()
    EventQueue(redis, config).enqueue_once(EVENT)
    data = redis.hget(Job.key_for(job_id_for("evt_1")), "data")
    rq_job = Job.create(PROCESS_EVENT, args=(EVENT,), connection=redis)
    assert data == rq_job.data
    assert Job.fetch(job_id_for("evt_1"), connection=redis).args == (EVENT,)


def test_the_request_builds_no_rq_job_and_sends_a_handful_of_arguments(config, monkeypatch):
    redis = fresh_redis()
    event_queue = EventQueue(redis, config)
    calls = []
    script = event_queue._script
    monkeypatch.setattr(event_queue, "_script", lambda keys, args: calls.append((keys, args)) or script(keys, args))

    def no_job(*args, **kwargs):
        raise AssertionError("an RQ Job was built in the request")

    monkeypatch.setattr(Job, "create", no_job)
    monkeypatch.setattr(Job, "to_dict", no_job)
    assert event_queue.enqueue_once(EVENT)
    [(keys, args)] = calls
    assert len(args) == 5
    assert {key.decode() for key in redis.keys("*")} == set(keys)  # it touches only the keys it declares
    monkeypatch.undo()
    assert Job.fetch(job_id_for("evt_1"), connection=redis).args == (EVENT,)


def test_a_second_delivery_writes_nothing(config):
    redis = fresh_redis()
    event_queue = EventQueue(redis, config)
    assert event_queue.enqueue_once(EVENT)
    before = stored(redis)
    assert not event_queue.enqueue_once({**EVENT, "status": "declined"})
    assert stored(redis) == before
    assert Queue(config.events_queue, connection=redis).job_ids == [job_id_for("evt_1")]


# --- RQ's worker runs it as it runs its own -----------------------------------------------------------------


@pytest.fixture
def process_event(monkeypatch):
    """workers.jobs.process_event, as RQ's worker imports it, recording its calls; `fail` makes it raise."""
    calls = []

    def stand_in(event):
        calls.append(event)
        if stand_in.fail:
            raise RuntimeError("the database went away")
        return "applied"

    stand_in.fail = False
    stand_in.calls = calls
    monkeypatch.setattr(jobs, "process_event", stand_in)
    return stand_in


def enqueue_once(redis, config: Config, event: QueuedEvent) -> bool:
    return EventQueue(redis, config).enqueue_once(event)


def run(redis, config: Config) -> Job:
    SimpleWorker([Queue(config.events_queue, connection=redis)], connection=redis).work(burst=True)
    return Job.fetch(job_id_for("evt_1"), connection=redis)


def test_a_worker_runs_it_with_the_event(config, process_event):
    redis = fresh_redis()
    enqueue_once(redis, config, EVENT)
    job = run(redis, config)
    assert process_event.calls == [EVENT]
    assert job.get_status() == JobStatus.FINISHED and job.return_value() == "applied"
    assert 0 < redis.ttl(job.key) <= RESULT_TTL


def test_a_failing_run_is_retried_on_the_schedule_as_rqs_own_job_is(config, process_event):
    process_event.fail = True
    outcomes = []
    for enqueue in (enqueue_once, enqueue_with_rq):
        redis = fresh_redis()
        enqueue(redis, config, EVENT)
        job = run(redis, config)
        scheduled = ScheduledJobRegistry(config.events_queue, connection=redis)
        outcomes.append((job.get_status(), job.retries_left, scheduled.get_job_ids()))
    assert outcomes[0] == outcomes[1] == (JobStatus.SCHEDULED, PROCESS_EVENT_RETRY.max - 1, [job_id_for("evt_1")])


def test_a_job_out_of_retries_lands_in_the_failed_registry_for_its_failure_ttl(config, process_event):
    process_event.fail = True
    redis = fresh_redis()
    enqueue_once(redis, config, EVENT)
    job = Job.fetch(job_id_for("evt_1"), connection=redis)
    job.retries_left = 0
    job.save()
    job = run(redis, config)
    assert job.get_status() == JobStatus.FAILED
    assert FailedJobRegistry(config.events_queue, connection=redis).get_job_ids() == [job.id]
    assert RESULT_TTL < redis.ttl(job.key) <= FAILURE_TTL
