"""process_event → the user record, on SQLite and PostgreSQL: merges, placeholders, unknowns, replays."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app import create_app
from tests.helpers.events import inquiry_event, verification_event
from workers.jobs import process_event

pytestmark = pytest.mark.integration

TOKEN = "admin-token"


@pytest.fixture
def record(real_config, real_redis, worker_env):
    """GET /users/<key> through the API, as the host application would."""
    client = create_app(replace(real_config, admin_api_token=TOKEN), redis=real_redis).test_client()

    def get(key):
        answer = client.get(f"/users/{key}", headers={"Authorization": f"Bearer {TOKEN}"})
        return answer.json if answer.status_code == 200 else answer.status_code

    return get


def test_account_only_records_merge_into_the_reference_id(record):
    process_event(inquiry_event("inq_a", "created", "2024-01-01T00:00:01.000Z", account_id="act_1"))
    assert record("act_1")["status"] == "created"
    process_event(inquiry_event("inq_b", "approved", "2024-01-02T00:00:00.000Z", "user_1", "act_1"))
    assert record("act_1") == 404
    merged = record("user_1")
    assert merged["persona_account_id"] == "act_1"
    assert {i["id"] for i in merged["inquiries"]} == {"inq_a", "inq_b"}
    assert len(merged["history"]) == 2
    # A later account-only event finds the linked reference id instead of re-creating act_1.
    process_event(inquiry_event("inq_a", "pending", "2024-01-03T00:00:00.000Z", account_id="act_1"))
    assert record("act_1") == 404
    assert len(record("user_1")["history"]) == 3


def test_account_reference_id_resolves_the_user(record):
    process_event(
        inquiry_event("inq_c", "completed", "2024-01-01T00:00:00.000Z", None, "act_2", account_reference_id="user_2")
    )
    assert record("user_2")["status"] == "completed"


def test_verification_before_its_inquiry_creates_a_placeholder(record):
    process_event(verification_event("ver_1", "inq_d", "passed", "2024-01-01T00:00:05.000Z"))
    process_event(inquiry_event("inq_d", "approved", "2024-01-01T00:00:09.000Z", "user_3"))
    user = record("user_3")
    assert user["verifications"] == [
        {"id": "ver_1", "inquiry_id": "inq_d", "type": "government-id", "status": "passed",
         "checks": {"id_expired_detection": "passed"}}
    ]  # fmt: skip
    assert len(user["history"]) == 2


def test_unknown_status_and_name_are_ignored(record):
    process_event(inquiry_event("inq_e", "pending", "2024-01-01T00:00:00.000Z", "user_4"))
    assert process_event(inquiry_event("inq_e", "something_new", "2024-01-01T00:00:01.000Z", "user_4")) == "ignored"
    assert (
        process_event(inquiry_event("inq_e", "pending", "2024-01-01T00:00:02.000Z", "user_4", name="inquiry.bogus"))
        == "applied"
    )
    user = record("user_4")
    assert user["status"] == "pending"
    assert [h["outcome"] for h in user["history"]] == ["applied", "ignored", "applied"]


def test_outcomes_stale_and_unexpected(record):
    assert process_event(inquiry_event("inq_f", "approved", "2024-01-01T00:00:05.000Z", "user_5")) == "applied"
    assert process_event(inquiry_event("inq_f", "pending", "2024-01-01T00:00:01.000Z", "user_5")) == "stale"
    assert process_event(inquiry_event("inq_f", "created", "2024-01-01T00:00:09.000Z", "user_5")) == "unexpected"
    assert record("user_5")["status"] == "created"


def test_replaying_every_event_changes_nothing(record):
    events = [
        inquiry_event("inq_g", "created", "2024-01-01T00:00:00.000Z", "user_6"),
        inquiry_event("inq_g", "declined", "2024-01-01T00:00:05.000Z", "user_6"),
        verification_event("ver_2", "inq_g", "failed", "2024-01-01T00:00:04.000Z"),
    ]
    for event in events:
        process_event(event)
    before = record("user_6")
    assert [process_event(event) for event in events] == ["duplicate"] * 3
    assert record("user_6") == before
    assert (before["decision"], before["strikes"]) == ("verify", 1)  # the block of 2024 is over (§5 as revised)
