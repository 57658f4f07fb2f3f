"""The user record end to end: gunicorn and two RQ workers, as the Procfile runs them, turn a generated,
duplicated and shuffled stream of signed Persona events for 200 users into records that match, for
every user, the record computed independently from the same events (tests/e2e/stream.py)."""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
import requests
from rq.registry import FailedJobRegistry
from sqlalchemy import select

from store.db import Database
from store.models import User
from tests.e2e.stream import Stream, deliveries, expected_records, generate
from tests.helpers.delivery import QUEUE, failed_jobs, post_all, wait_for_drain
from tests.helpers.record_diff import record_diff

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("E2E_USERS_SEED", "20261101"))
USERS = 200
TOKEN = "e2e-admin-token-7f3a9c"
# Generator coverage: each of these must occur for at least this many users, or the test proves little.
REQUIRED_TAGS = {
    "no_reference": 5,
    "inquiry_without_reference": 3,
    "reversal": 10,
    "verification": 20,
    "block:1-strike-in-force": 3,
    "block:2-strike-in-force": 2,
    "block:permanent": 3,
    "block:expired": 20,
    "retry-after-block": 5,
    "block-overrides-status": 2,
    "status:approved": 10,
    "status:declined": 10,
    "status:failed": 5,
    "status:expired": 3,
    "status:pending": 3,
    "status:needs_review": 2,
}


def _check_coverage(stream: Stream) -> None:
    counts = Counter(tag for tags in stream.tags.values() for tag in tags)
    short = {tag: counts[tag] for tag, least in REQUIRED_TAGS.items() if counts[tag] < least}
    assert not short, f"the generated stream lacks cases the test needs: {short}"


def test_two_workers_turn_a_shuffled_duplicated_stream_into_the_expected_user_records(
    stack, real_database_url, real_redis
):
    clock = time.monotonic()
    stream = generate(SEED, USERS, datetime.now(UTC))
    assert len(stream.users) == USERS == len(set(stream.users))
    _check_coverage(stream)
    posts = deliveries(stream, SEED)

    stack.env["ADMIN_API_TOKEN"] = TOKEN
    stack.start("web")
    stack.start("worker")
    stack.start("worker")
    stack.start("scheduler")
    stack.wait_ready()

    ready = time.monotonic()
    answers = post_all(stack.url, posts)
    posted = time.monotonic()
    refused = [(e, code, body) for e, code, body in answers if code != 200 or not isinstance(body, dict)]
    assert not refused, f"{len(refused)} deliveries refused, e.g. {refused[:3]}"
    odd = [
        (e, body)
        for e, _, body in answers
        if body.get("status") not in ("queued", "duplicate") or body.get("event_id") != e
    ]
    assert not odd, f"{len(odd)} unexpected answers, e.g. {odd[:3]}"
    queued = Counter(e for e, _, body in answers if body["status"] == "queued")
    assert set(queued) == stream.event_ids and max(queued.values()) == 1, "each event id must be queued exactly once"

    wait_for_drain(stack, real_redis, real_database_url, len(stream.event_ids))
    drained = time.monotonic()
    assert FailedJobRegistry(QUEUE, connection=real_redis).count == 0, failed_jobs(real_redis)

    with requests.Session() as http:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert http.get(f"{stack.url}/users/{stream.users[0]}", timeout=10).status_code == 401
        wrong = http.get(f"{stack.url}/users/{stream.users[0]}", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401
        assert http.get(f"{stack.url}/users/user_does_not_exist", headers=auth, timeout=10).status_code == 404

        now = datetime.now(UTC)
        expected = expected_records(stream.facts, now)
        assert sorted(expected) == sorted(stream.users)
        mismatches: dict[str, list[str]] = {}
        for key in stream.users:
            diffs = record_diff(key, expected[key], http.get(f"{stack.url}/users/{key}", headers=auth, timeout=10))
            if diffs:
                mismatches[key] = diffs

    print(
        f"{len(posts)} posts of {len(stream.event_ids)} events for {USERS} users: start {ready - clock:.1f} s, "
        f"post {posted - ready:.1f} s, drain {drained - posted:.1f} s more, compare {time.monotonic() - drained:.1f} s"
    )
    database = Database(real_database_url)
    with database.sessions() as session:
        user_keys = set(session.scalars(select(User.reference_id)))
    database.dispose()
    leftover = sorted(user_keys - set(stream.users))

    shown = [line for key in list(mismatches)[:6] for line in mismatches[key][:4]]
    assert not mismatches, (
        f"{len(mismatches)} of {USERS} users differ from the expected record "
        f"(seed {SEED}, now {now.isoformat()}):\n  " + "\n  ".join(shown)
    )
    assert not leftover, f"users left behind that should have been merged: {leftover[:10]}"
