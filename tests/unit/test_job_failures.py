"""How jobs fail (workers/jobs.py), through RQ itself on fakeredis: a known-transient dependency error is
retried on RQ's schedule; anything else fails at once with its reason; events are served before syncs.

Issue 9's rows: an OverflowError was retried 5 times over 20 minutes; with the database unreachable for
60 s, sync jobs failed permanently (only Verisoul errors were retried); a failing Verisoul held a worker
~8 s per sync while events waited behind the syncs on one queue.
"""

from __future__ import annotations

import fakeredis
import pytest
import requests
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from runtime.config import DEFAULT_EVENTS_QUEUE, DEFAULT_SYNC_QUEUE, Config
from scripts.fake_verisoul import DEFAULT_API_KEY, create_fake_app
from store.queue import PROCESS_EVENT, PROCESS_EVENT_RETRY
from store.sync_queue import request_sync
from tests.helpers.events import inquiry_event
from tests.payloads import SECRET
from tests.servers import serve
from workers import jobs
from workers.worker import Worker

UNREACHABLE_POSTGRES = "postgresql://postgres@127.0.0.1:1/nowhere"


@pytest.fixture
def connection():
    return fakeredis.FakeRedis()


@pytest.fixture
def worker_env(monkeypatch, connection, database_url):
    """A worker's environment, its Redis the fake one."""
    monkeypatch.setenv("PERSONA_WEBHOOK_SECRETS", SECRET)
    monkeypatch.setenv("REDIS_URL", "redis://unused")
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.delenv("VERISOUL_API_URL", raising=False)
    monkeypatch.setattr(jobs, "redis", lambda: connection)
    caches = (jobs.database, jobs.syncer)
    for cached in caches:
        cached.cache_clear()
    yield monkeypatch
    for cached in caches:
        cached.cache_clear()


def work(connection) -> None:
    queues = [Queue(name, connection=connection) for name in (DEFAULT_EVENTS_QUEUE, DEFAULT_SYNC_QUEUE)]
    Worker(queues, connection=connection).work(burst=True)


def test_an_event_the_code_cannot_apply_fails_at_once_with_its_reason(worker_env, connection):
    """Whatever the exception (here an OverflowError from a year-1 time with an offset), no retry."""
    event = inquiry_event("inq_o", "approved", "2024-01-01T00:00:00.000Z", "user_o")
    event["timestamps"] = {"created_at": "0001-01-01T00:30:00+01:00"}
    queue = Queue(DEFAULT_EVENTS_QUEUE, connection=connection)
    job = queue.enqueue(PROCESS_EVENT, event, retry=PROCESS_EVENT_RETRY)
    work(connection)
    assert FailedJobRegistry(queue=queue).get_job_ids() == [job.id]
    assert ScheduledJobRegistry(queue=queue).count == 0
    assert "PermanentJobError: event evt_" in job.latest_result().exc_string
    assert "OverflowError" in job.latest_result().exc_string


def test_an_unreachable_database_is_retried_by_process_event(worker_env, connection):
    worker_env.setenv("DATABASE_URL", UNREACHABLE_POSTGRES)
    queue = Queue(DEFAULT_EVENTS_QUEUE, connection=connection)
    job = queue.enqueue(PROCESS_EVENT, inquiry_event("inq_d", "approved", "2024-01-01T00:00:00.000Z", "user_d"),
                        retry=PROCESS_EVENT_RETRY)  # fmt: skip
    work(connection)
    assert FailedJobRegistry(queue=queue).count == 0
    assert ScheduledJobRegistry(queue=queue).get_job_ids() == [job.id]


def test_an_unreachable_database_is_retried_by_sync_verisoul(worker_env, connection):
    worker_env.setenv("DATABASE_URL", UNREACHABLE_POSTGRES)
    queue = Queue(DEFAULT_SYNC_QUEUE, connection=connection)
    assert request_sync(connection, queue, "user_s")
    work(connection)
    assert FailedJobRegistry(queue=queue).count == 0
    [retry] = ScheduledJobRegistry(queue=queue).get_job_ids()
    assert queue.fetch_job(retry).retries_left == 11  # one of SYNC_RETRY's 12 spent


def test_a_failing_verisoul_costs_two_quick_calls_and_a_scheduled_retry(worker_env, connection, monkeypatch):
    from clients import verisoul

    monkeypatch.setattr(verisoul, "BACKOFF_BASE", 0.01)
    app = create_fake_app()
    with serve(app) as url:
        requests.post(url + "/_control/config", json={"fail_rate_500": 1.0}, timeout=5).raise_for_status()
        worker_env.setenv("VERISOUL_API_URL", url)
        worker_env.setenv("VERISOUL_API_KEY", DEFAULT_API_KEY)
        jobs.syncer.cache_clear()
        jobs.process_event(inquiry_event("inq_v", "approved", "2024-01-01T00:00:00.000Z", "user_v"))
        sync = Queue(DEFAULT_SYNC_QUEUE, connection=connection)
        assert sync.count == 1
        work(connection)
        calls = requests.get(url + "/_control/calls", timeout=5).json()
        assert len(calls) == verisoul.ATTEMPTS == 2  # the account read, tried twice; then RQ's retry
        assert FailedJobRegistry(queue=sync).count == 0
        assert ScheduledJobRegistry(queue=sync).count == 1
        # While the retry waits, the sweep queues no second sync beside it (helper's bench: it did, by hundreds).
        assert jobs.sweep_verisoul() == 0 and sync.count == 0


def test_a_worker_serves_waiting_events_before_waiting_syncs_and_syncs_before_notifications(connection):
    queues = [Queue(name, connection=connection) for name in Config(("s",), "redis://unused").queues]
    for queue, label in reversed(list(zip(queues, ("event", "sync", "notify"), strict=True))):
        for n in range(2):
            queue.enqueue("tests.resilience.jobs.note", "order", f"{label}{n}")
    Worker(queues, connection=connection).work(burst=True)
    assert [label.decode() for label in connection.lrange("order", 0, -1)] == [
        "event0", "event1", "sync0", "sync1", "notify0", "notify1",
    ]  # fmt: skip


def test_jobs_carry_time_limits_that_let_a_dead_workers_job_run_again_within_a_minute(connection, config):
    """RQ's default limit (180 s) plus its 60 s margin made a killed worker's job wait 4 minutes or more."""
    from store.queue import EventQueue, job_id_for
    from workers.scheduler import ABANDONED_EVERY_SECONDS
    from workers.worker import HEARTBEAT_MARGIN

    event = inquiry_event("inq_t", "approved", "2024-01-01T00:00:00.000Z", "user_t")
    assert EventQueue(connection, config).enqueue_once(event)
    assert request_sync(connection, Queue(DEFAULT_SYNC_QUEUE, connection=connection), "user_t")
    event_job = Queue(DEFAULT_EVENTS_QUEUE, connection=connection).fetch_job(job_id_for(event["event_id"]))
    [sync_job] = Queue(DEFAULT_SYNC_QUEUE, connection=connection).jobs
    for job in (event_job, sync_job):
        assert job.timeout + HEARTBEAT_MARGIN + ABANDONED_EVERY_SECONDS <= 60, job.func_name


def test_a_process_killed_while_queueing_a_sync_leaves_no_mark_that_holds_the_next_one_back(connection, monkeypatch):
    """Seen in the chaos suite: a worker SIGKILLed between the pending mark and the enqueue left the mark
    without a job, and neither later events nor the sweep could queue that user's sync for an hour."""
    queue = Queue(DEFAULT_SYNC_QUEUE, connection=connection)
    enqueue_call = Queue.enqueue_call

    def killed(self, *args, **kwargs):
        raise SystemExit("killed while queueing the sync")

    monkeypatch.setattr(Queue, "enqueue_call", killed)
    with pytest.raises(SystemExit):
        request_sync(connection, queue, "user_k")
    monkeypatch.setattr(Queue, "enqueue_call", enqueue_call)
    assert request_sync(connection, queue, "user_k")
    assert [job.args for job in queue.jobs] == [("user_k",)]
    assert not request_sync(connection, queue, "user_k")  # pending: one sync per user, as before
