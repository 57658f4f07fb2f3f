"""Webhook → real Redis → RQ worker → events table, once per event id, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, ScheduledJobRegistry
from sqlalchemy import func, select

from store.db import Database
from store.models import Event
from store.queue import DEDUPE_PREFIX, PROCESS_EVENT_RETRY, EventQueue, job_id_for
from tests.payloads import CASINGS, FIXTURE_NAMES, encode, headers, load_fixture, recase
from workers.jobs import process_event

pytestmark = pytest.mark.integration


def _drain(config, connection) -> None:
    """Run every queued job in this process, as `rq worker --burst` would."""
    SimpleWorker([Queue(config.events_queue, connection=connection)], connection=connection).work(burst=True)


def _rows(database_url: str) -> list[Event]:
    with Database(database_url).sessions() as session:
        return list(session.scalars(select(Event).order_by(Event.event_id)))


def test_each_fixture_in_each_casing_is_recorded_once(real_client, real_config, real_redis, worker_env):
    expected = set()
    for name in FIXTURE_NAMES:
        for casing in CASINGS:
            body = encode(recase(load_fixture(name), casing))
            answers = [real_client.post("/webhooks/persona", data=body, headers=headers(body)) for _ in range(3)]
            assert [a.json["status"] for a in answers].count("queued") <= 1
            expected.add(answers[0].json["event_id"])
    _drain(real_config, real_redis)
    rows = _rows(real_config.database_url)
    assert sorted(row.event_id for row in rows) == sorted(expected)
    assert all(row.outcome in ("applied", "unexpected", "stale") and row.replay_count == 0 for row in rows)


def test_stored_row_holds_the_minimised_event(real_client, real_config, real_redis, worker_env):
    body = encode(load_fixture("sandbox_inquiry_approved.json", "user_42"))
    real_client.post("/webhooks/persona", data=body, headers=headers(body))
    _drain(real_config, real_redis)
    [row] = _rows(real_config.database_url)
    assert (row.name, row.object_type, row.object_id) == (
        "inquiry.approved",
        "inquiry",
        "inq_AGa6mNLe7BfgZBopxR86A7WRdmUr",
    )
    assert row.payload["reference_id"] == "user_42"
    assert row.occurred_at.isoformat().startswith("2024-07-08T14:29:24.297")
    assert len(row.body_sha256) == 64
    assert "SAMPLE" not in str(row.payload) and "1977-07-17" not in str(row.payload)


def test_concurrent_deliveries_queue_one_job(real_config, real_redis):
    queue = EventQueue(real_redis, real_config)
    event = {"event_id": "evt_race", "name": "inquiry.completed"}
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(queue.enqueue_once(event))) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1
    assert real_redis.lrange(f"rq:queue:{real_config.events_queue}", 0, -1) == [job_id_for("evt_race").encode()]
    assert real_redis.ttl(DEDUPE_PREFIX + job_id_for("evt_race")) >= 7 * 24 * 3600 - 5


def test_processing_twice_reports_duplicate(real_config, worker_env):
    event = _minimal_event("evt_twice")
    assert process_event(event) == "applied"
    assert process_event(event) == "duplicate"
    with Database(real_config.database_url).sessions() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 1


def test_transient_database_error_is_retried_later(real_config, real_redis, worker_env, monkeypatch):
    from workers import jobs

    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/unreachable")
    jobs.database.cache_clear()
    EventQueue(real_redis, real_config).enqueue_once(_minimal_event("evt_transient"))
    _drain(real_config, real_redis)
    job = Job.fetch(job_id_for("evt_transient"), connection=real_redis)
    assert job.get_status() == JobStatus.SCHEDULED
    assert job.retries_left == PROCESS_EVENT_RETRY.max - 1
    assert job.id in ScheduledJobRegistry(real_config.events_queue, connection=real_redis).get_job_ids()


def test_permanent_failure_lands_in_failed_registry_with_reason(real_config, real_redis, worker_env):
    broken = _minimal_event("evt_broken")
    del broken["created_at"]
    EventQueue(real_redis, real_config).enqueue_once(broken)
    _drain(real_config, real_redis)
    job = Job.fetch(job_id_for("evt_broken"), connection=real_redis)
    assert job.get_status() == JobStatus.FAILED
    assert job.id in FailedJobRegistry(real_config.events_queue, connection=real_redis).get_job_ids()
    assert "PermanentJobError: event evt_broken: KeyError" in job.latest_result().exc_string
    assert _rows(real_config.database_url) == []


def _minimal_event(event_id: str) -> dict:
    return {
        "event_id": event_id,
        "name": "inquiry.completed",
        "created_at": "2024-01-01T00:00:00.123Z",
        "received_at": "2024-01-01T00:00:01.000Z",
        "body_sha256": "0" * 64,
        "object_type": "inquiry",
        "object_id": "inq_1",
        "status": "completed",
    }
