"""Operators' overrides through `POST /users/<reference_id>/actions` (docs/contracts.md §7), on SQLite and
PostgreSQL with a real Redis: each action moves the record and queues Verisoul's sync, is kept by a full
replay, and a later negative event still counts; bad requests are a 400 naming the field, never a 5xx."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rq import Queue

from app import create_app
from domain.times import iso_millis
from scripts.fake_verisoul import DEFAULT_API_KEY as FAKE_VERISOUL_KEY
from tests.helpers.events import inquiry_event
from tests.helpers.in_process import clear_job_caches, cli_environment, drain
from tests.helpers.replay_event import replay, track_cli_databases
from tests.servers import FakeVerisoulControl
from workers import jobs

TOKEN = "operator-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WHY = {"reason": "the selfie check misread a valid licence", "operator": "ops@example.com"}


@pytest.fixture
def verisoul(monkeypatch, worker_env, real_redis, fake_verisoul_url) -> Iterator[FakeVerisoulControl]:
    """The workers, the CLI and the web pointed at a fresh fake Verisoul (account flavor)."""
    track_cli_databases(monkeypatch)
    cli_environment(monkeypatch, worker_env)
    monkeypatch.setenv("VERISOUL_API_URL", fake_verisoul_url)
    monkeypatch.setenv("VERISOUL_API_KEY", FAKE_VERISOUL_KEY)
    fake = FakeVerisoulControl(fake_verisoul_url)
    requests.post(f"{fake_verisoul_url}/_control/reset", timeout=5).raise_for_status()
    clear_job_caches()
    yield fake
    clear_job_caches()


@pytest.fixture
def api(real_config, real_redis, verisoul):
    config = dataclasses.replace(
        real_config, admin_api_token=TOKEN, verisoul_api_url=verisoul.url, verisoul_api_key=FAKE_VERISOUL_KEY
    )
    app = create_app(config, redis=real_redis)
    yield app.test_client()
    app.extensions["database"].dispose()  # PostgreSQL's connections are few: none left to the garbage collector


def writes(verisoul: FakeVerisoulControl, account_id: str) -> list[str]:
    """The calls that changed the account at the fake, in order."""
    return [
        call["action"]
        for call in verisoul.calls()
        if call["account_id"] == account_id
        and call["status"] < 400
        and call["action"] in ("enroll", "block", "unblock")
    ]


def hours_ago(hours: float) -> str:
    return iso_millis(datetime.now(UTC) - timedelta(hours=hours))


def declined_then_retrying(reference_id: str) -> None:
    """A decline an hour and a half ago (a 7-day block in force), then a new inquiry the user started."""
    jobs.process_event(inquiry_event(f"inq_{reference_id}_1", "declined", hours_ago(1.5), reference_id))
    jobs.process_event(inquiry_event(f"inq_{reference_id}_2", "pending", hours_ago(1), reference_id))


def act(api, reference_id: str, **body):
    return api.post(f"/users/{reference_id}/actions", json=body, headers=AUTH)


def test_lifting_a_wrong_block_lets_the_user_resume_keeps_the_strike_and_unblocks_at_verisoul(
    api, verisoul, real_redis, real_config
):
    declined_then_retrying("user_l")
    drain(real_config, real_redis)
    assert api.get("/users/user_l", headers=AUTH).get_json()["decision"] == "deny"
    assert writes(verisoul, "user_l") == ["block"]

    answer = act(api, "user_l", action="lift_block", **WHY)

    assert answer.status_code == 200, answer.get_json()
    record = answer.get_json()
    assert (record["decision"], record["next_action"], record["strikes"]) == ("resume", "resume_inquiry", 1)
    [override] = record["overrides"]
    assert override | {"at": None} == {"action": "lift_block", "inquiry_id": None, **WHY, "at": None}
    assert record["history"][-1] | {"at": None} == {
        "at": None,
        "event_id": None,
        "inquiry_id": None,
        "from": None,
        "to": None,
        "outcome": "override",
        "action": "lift_block",
    }
    drain(real_config, real_redis)
    assert writes(verisoul, "user_l") == ["block", "unblock"]  # Verisoul follows through the ordinary sync
    assert api.get("/users/user_l", headers=AUTH).get_json()["verisoul"]["blocked"] is False


def test_clearing_a_duplicate_allows_and_enrolls_the_account_verisoul_linked(api, verisoul, real_redis, real_config):
    verisoul.create_account("user_d", linked=2)
    jobs.process_event(inquiry_event("inq_d_1", "approved", hours_ago(1), "user_d"))
    drain(real_config, real_redis)
    flagged = api.get("/users/user_d", headers=AUTH).get_json()
    assert (flagged["decision"], flagged["verisoul"]["duplicate_account"], writes(verisoul, "user_d")) == (
        "review",
        True,
        [],
    )

    record = act(api, "user_d", action="clear_duplicate", **WHY).get_json()
    drain(real_config, real_redis)

    assert record["decision"] == "allow"
    assert writes(verisoul, "user_d") == ["enroll"]
    assert api.get("/users/user_d", headers=AUTH).get_json()["verisoul"]["enrolled"] is True


def test_forgiving_the_decline_removes_the_strike(api):
    jobs.process_event(inquiry_event("inq_f_1", "declined", hours_ago(2), "user_f"))
    record = act(api, "user_f", action="forgive_inquiry", inquiry_id="inq_f_1", **WHY).get_json()
    assert (record["strikes"], record["decision"], record["next_action"]) == (0, "verify", "create_inquiry")
    assert [i["forgiven"] for i in record["inquiries"]] == [True]


def test_overrides_survive_a_full_replay_and_a_later_decline_counts_as_usual(api):
    declined_then_retrying("user_r")
    act(api, "user_r", action="lift_block", **WHY)
    before = api.get("/users/user_r", headers=AUTH).get_json()

    assert replay("--user", "user_r").exit_code == 0
    after = api.get("/users/user_r", headers=AUTH).get_json()
    assert (after["decision"], after["strikes"], after["overrides"]) == ("resume", 1, before["overrides"])

    jobs.process_event(inquiry_event("inq_user_r_2", "declined", hours_ago(0.5), "user_r"))
    later = api.get("/users/user_r", headers=AUTH).get_json()
    assert (later["decision"], later["strikes"]) == ("deny", 2)  # a new block, 30 days, from this decline


def test_resync_queues_a_sync_even_when_the_record_says_synced(api, real_redis, real_config):
    jobs.process_event(inquiry_event("inq_s_1", "pending", hours_ago(1), "user_s"))
    assert act(api, "user_s", action="resync", **WHY).status_code == 200
    assert any("user_s" in (job.description or "") for job in Queue(real_config.sync_queue, connection=real_redis).jobs)


@pytest.mark.parametrize(
    ("body", "status", "error", "names"),
    [
        ({"action": "unblock", **WHY}, 400, "invalid_request", "action"),
        ({"action": "lift_block", "operator": "ops"}, 400, "invalid_request", "reason"),
        ({"action": "lift_block", "reason": "why"}, 400, "invalid_request", "operator"),
        ({"action": "forgive_inquiry", **WHY}, 400, "invalid_request", "inquiry_id"),
        ({"action": "lift_block", "reason": "x" * 501, "operator": "ops"}, 400, "invalid_request", "reason"),
        ({"action": "forgive_inquiry", "inquiry_id": "inq_other", **WHY}, 404, "inquiry_not_found", "inq_other"),
    ],
)
def test_a_bad_request_is_answered_with_what_is_wrong(api, body, status, error, names):
    jobs.process_event(inquiry_event("inq_b_1", "declined", hours_ago(1), "user_b"))
    answer = act(api, "user_b", **body)
    assert (answer.status_code, answer.get_json()["error"]) == (status, error)
    assert names in answer.get_json()["detail"]


def test_an_unknown_user_is_404_and_a_missing_token_401(api):
    assert act(api, "nobody", action="resync", **WHY).status_code == 404
    assert api.post("/users/nobody/actions", json={"action": "resync", **WHY}).status_code == 401


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
bodies = json_values | st.fixed_dictionaries(
    {"action": st.sampled_from(["lift_block", "forgive_inquiry", "clear_duplicate", "resync", "x"])},
    optional={"reason": json_values | st.text(max_size=600), "operator": json_values, "inquiry_id": json_values},
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_any_body_is_answered_200_400_or_404_never_a_5xx(api, body):
    jobs.process_event(
        inquiry_event("inq_h_1", "declined", hours_ago(1), "user_h")
    )  # again each time: it stays declined
    answer = api.post("/users/user_h/actions", json=body, headers=AUTH)
    assert answer.status_code in (200, 400, 404), answer.get_data()
    assert answer.is_json


@pytest.mark.parametrize(
    ("body", "names_the"),
    [
        ({"action": "lift_block", "reason": "   ", "operator": "ops"}, "reason"),
        ({"action": "lift_block", "reason": "\u200b", "operator": "ops"}, "reason"),  # zero-width: blank
        ({"action": "lift_block", "reason": "ok", "operator": " \ufeff\u2060 "}, "operator"),
        ({"action": "lift_block", "reason": "ok \u202egnp.exe", "operator": "ops"}, "reason"),
        ({"action": "lift_block", "reason": "ok", "operator": "\u202eadmin"}, "operator"),
        ({"action": "lift_block", "inquiry_id": "inq_b_1", **WHY}, "inquiry_id"),
    ],
)
def test_the_audit_fields_are_refused_blank_spoofed_or_misdirected(api, body, names_the):
    """Found by the operator trial: a blank reason, a right-to-left override in the audit trail, an inquiry
    named on an action about the user were all recorded."""
    jobs.process_event(inquiry_event("inq_b_1", "declined", hours_ago(1), "user_b"))
    answer = act(api, "user_b", **body)
    assert (answer.status_code, answer.get_json()["detail"].split(":")[0]) == (400, names_the)


def test_an_id_no_record_can_have_is_a_404_without_a_query(api):
    """Found by the operator trial: a NUL in the reference id was a 500 on PostgreSQL (it refuses NUL in text)."""
    for path in ("/users/nul%00x", "/users/" + "x" * 300):
        assert api.get(path, headers=AUTH).status_code == 404
        assert api.post(f"{path}/actions", json={"action": "resync", **WHY}, headers=AUTH).status_code == 404


def test_a_body_nested_too_deeply_is_a_400_and_a_huge_one_a_413(api):
    jobs.process_event(inquiry_event("inq_n_1", "pending", hours_ago(1), "user_n"))
    nested = "[" * 5000 + "]" * 5000
    answer = api.post("/users/user_n/actions", data=nested, content_type="application/json", headers=AUTH)
    assert (answer.status_code, answer.get_json()["error"]) == (400, "invalid_request")
    huge = api.post("/users/user_n/actions", json={"action": "resync", **WHY, "pad": "x" * 200_000}, headers=AUTH)
    assert huge.status_code == 413
