"""A newcomer's check, automated: post each sample three times over HTTP, find it in `events` once."""

from __future__ import annotations

import time

import pytest
import requests
from sqlalchemy import func, select

from store.db import Database
from store.models import Event
from tests.payloads import CASINGS, FIXTURE_NAMES, encode, headers, load_fixture, recase

pytestmark = pytest.mark.e2e


def _wait_for_rows(database_url: str, expected: int, timeout: float = 60) -> int:
    database = Database(database_url)
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        with database.sessions() as session:
            count = session.execute(select(func.count()).select_from(Event)).scalar_one()
        if count >= expected:
            break
        time.sleep(0.2)
    database.dispose()
    return count


def test_procfile_stack_records_every_event_once(stack, real_database_url, real_redis):
    stack.start("web")
    stack.start("worker")
    stack.start("scheduler")
    stack.wait_ready()
    event_ids = set()
    for name in FIXTURE_NAMES:
        for casing in CASINGS:
            body = encode(recase(load_fixture(name), casing))
            statuses = []
            for _ in range(3):
                answer = requests.post(f"{stack.url}/webhooks/persona", data=body, headers=headers(body), timeout=5)
                assert answer.status_code == 200, answer.text
                statuses.append(answer.json()["status"])
                event_ids.add(answer.json()["event_id"])
            assert statuses.count("queued") <= 1
    assert _wait_for_rows(real_database_url, len(event_ids)) == len(event_ids)
    time.sleep(1)  # a late duplicate job, if the dedupe failed, would land now
    with Database(real_database_url).sessions() as session:
        stored = session.scalars(select(Event.event_id)).all()
    assert sorted(stored) == sorted(event_ids)
    assert real_redis.llen("rq:queue:persona-events") == 0


def test_unsigned_posts_never_reach_the_queue(stack, real_redis):
    stack.start("web")
    stack.wait_ready()
    body = encode(load_fixture("docs_inquiry_completed.json"))
    forged = headers(body, secret="wbhsec_attacker")
    answer = requests.post(f"{stack.url}/webhooks/persona", data=body, headers=forged, timeout=5)
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_signature"
    assert real_redis.llen("rq:queue:persona-events") == 0


@pytest.mark.parametrize("kind", ["web", "worker"])
def test_bad_configuration_stops_the_process_with_one_line(stack, kind):
    stack.env.pop("PERSONA_WEBHOOK_SECRETS")
    process = stack.start(kind)
    assert process.wait(timeout=30) != 0
    output = next(stack.log_dir.glob(f"{kind}-*.log")).read_text()
    assert "configuration error: PERSONA_WEBHOOK_SECRETS is required but not set" in output
    assert "Traceback" not in output
