"""Webhooks posted over real HTTP to a running stack (tests/e2e/conftest.py), and its queue waited on to drain."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from rq.job import Job
from rq.registry import FailedJobRegistry, StartedJobRegistry
from sqlalchemy import func, select

from store.db import Database
from store.models import Event
from tests.payloads import headers

QUEUE = "persona-events"
DRAIN_TIMEOUT = 240  # seconds
POST_THREADS = 4


def post_all(url: str, posts: list[tuple[str, bytes]]) -> list[tuple[str, int, dict | str]]:
    """POST every body over real HTTP from a few threads; (event id, status code, answer) for each."""
    local = threading.local()

    def post(item: tuple[str, bytes]):
        event_id, body = item
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        answer = session.post(f"{url}/webhooks/persona", data=body, headers=headers(body), timeout=10)
        try:
            return event_id, answer.status_code, answer.json()
        except ValueError:
            return event_id, answer.status_code, answer.text

    with ThreadPoolExecutor(POST_THREADS) as pool:
        return list(pool.map(post, posts))


def wait_for_drain(stack, redis, database_url: str, expected_events: int) -> None:
    """Until the queue is empty, no job is running and every distinct event is in the events table."""
    database = Database(database_url)
    started = StartedJobRegistry(QUEUE, connection=redis)
    failed = FailedJobRegistry(QUEUE, connection=redis)
    deadline = time.monotonic() + DRAIN_TIMEOUT
    state = {}
    try:
        while time.monotonic() < deadline:
            with database.sessions() as session:
                stored = session.scalar(select(func.count()).select_from(Event))
            state = {
                "queued": redis.llen(f"rq:queue:{QUEUE}"),
                "started": started.count,
                "failed": failed.count,
                "events_stored": stored,
                "events_expected": expected_events,
            }
            if state["failed"]:
                pytest.fail(f"jobs failed: {failed_jobs(redis)}; {state}; logs in {stack.log_dir}")
            dead = [
                f"{p.args[0].rsplit('/', 1)[-1]} pid {p.pid} exit {p.returncode}"
                for p in stack.processes
                if p.poll() is not None
            ]
            assert not dead, f"a process of the stack exited: {dead}; logs in {stack.log_dir}; {state}"
            if state["queued"] == 0 and state["started"] == 0 and stored == expected_events:
                return
            time.sleep(0.25)
    finally:
        database.dispose()
    pytest.fail(f"queue did not drain within {DRAIN_TIMEOUT} s: {state}; logs in {stack.log_dir}")


def failed_jobs(redis) -> list[str]:
    """The first few failed jobs with the last line of their traceback."""
    reasons = []
    for job_id in FailedJobRegistry(QUEUE, connection=redis).get_job_ids()[:5]:
        try:
            result = Job.fetch(job_id, connection=redis).latest_result()
            text = (result.exc_string if result else "") or "?"
        except Exception as error:  # a diagnostic must not hide the failure it describes
            text = f"(could not read the job: {error!r})"
        reasons.append(f"{job_id}: {text.strip().splitlines()[-1]}")
    return reasons
