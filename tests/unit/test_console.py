"""The operators' console (app/console.py) through Flask's test client: signed in with the admin token, cookie
flags, CSRF on every form, the user page and its timeline, an override, a requeue. The same in a real browser:
tests/browser/."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta

import pytest
from rq import Queue, SimpleWorker

from app import create_app
from domain.policy import Block
from domain.times import iso_millis
from store.db import Database
from tests.helpers.events import inquiry_event
from tests.payloads import SECRET
from workers import jobs

TOKEN = "console-token"


@pytest.fixture
def console(config, redis, monkeypatch):
    """The app with an admin token; `jobs.process_event` in this process writes to its database and Redis."""
    for name, value in {
        "PERSONA_WEBHOOK_SECRETS": SECRET,
        "REDIS_URL": "redis://unused",
        "DATABASE_URL": config.database_url,
    }.items():
        monkeypatch.setenv(name, value)
    database = Database(config.database_url)
    monkeypatch.setattr(jobs, "database", lambda: database)
    monkeypatch.setattr(jobs, "redis", lambda: redis)
    yield create_app(dataclasses.replace(config, admin_api_token=TOKEN), redis=redis).test_client()
    database.dispose()


def csrf(page: bytes) -> str:
    match = re.search(rb'name="csrf_token" value="([^"]+)"', page)
    assert match, page[:300]
    return match.group(1).decode()


def sign_in(console) -> str:
    token = csrf(console.get("/console/login").data)
    answer = console.post("/console/login", data={"token": TOKEN, "csrf_token": token})
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/console/")
    return csrf(console.get("/console/").data)  # a new token once signed in: the login page's is not reused


def hours_ago(hours: float) -> str:
    return iso_millis(datetime.now(UTC) - timedelta(hours=hours))


def test_the_console_is_disabled_without_an_admin_token(client):
    assert client.get("/console/login").status_code == 503


def test_every_page_needs_a_session_and_the_cookie_is_httponly_and_samesite_strict(console):
    assert console.get("/console/").headers["Location"].endswith("/console/login")
    token = csrf(console.get("/console/login").data)
    wrong = console.post("/console/login", data={"token": "guess", "csrf_token": token})
    assert wrong.status_code == 401 and b"not the admin token" in wrong.data
    right = console.post("/console/login", data={"token": TOKEN, "csrf_token": token})
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert console.get("/console/").status_code == 200


def test_a_post_without_the_sessions_csrf_token_is_refused(console):
    sign_in(console)
    for path in ("/console/logout", "/console/user/actions", "/console/queues/failed/j/requeue"):
        assert console.post(path, data={"csrf_token": "forged"}).status_code == 400
        assert console.post(path, data={}).status_code == 400


def test_sign_out_ends_the_session(console):
    token = sign_in(console)
    assert console.post("/console/logout", data={"csrf_token": token}).status_code == 302
    assert console.get("/console/").status_code == 302


def test_search_opens_the_user_and_an_unknown_one_says_so(console):
    jobs.process_event(inquiry_event("inq_1", "approved", hours_ago(1), "u_found"))
    sign_in(console)
    assert console.get("/console/search?q=u_found").headers["Location"].endswith("/console/user?ref=u_found")
    missing = console.get("/console/search?q=nobody", follow_redirects=True)
    assert b"no user &#39;nobody&#39;" in missing.data


def test_the_user_page_draws_a_lane_per_inquiry_and_an_override_moves_the_decision(console):
    jobs.process_event(inquiry_event("inq_1", "declined", hours_ago(2), "u_b"))
    jobs.process_event(inquiry_event("inq_2", "pending", hours_ago(1), "u_b"))
    token = sign_in(console)
    page = console.get("/console/user?ref=u_b").data.decode()
    assert page.count('<g class="lane"') == 2 and 'class="block"' in page
    assert re.search(r'id="decision" class="decision deny"', page)

    body = {"csrf_token": token, "reference_id": "u_b", "action": "lift_block", "reason": "misread", "operator": "ann"}
    after = console.post("/console/user/actions", data=body, follow_redirects=True).data.decode()

    assert "lift_block recorded" in after and 'class="override"' in after
    assert re.search(r'id="decision" class="decision resume"', after)
    refused = console.post("/console/user/actions", data=body | {"reason": ""}, follow_redirects=True)
    assert b"Not recorded: reason" in refused.data


def test_a_failed_job_is_listed_with_its_time_and_requeued(console, redis, config):
    queue = Queue(config.events_queue, connection=redis)
    job = queue.enqueue("workers.jobs.no_such_function")
    SimpleWorker([queue], connection=redis).work(burst=True)
    token = sign_in(console)
    page = console.get("/console/queues").data.decode()
    assert f'data-job="{job.id}"' in page and "no_such_function" in page

    after = console.post(f"/console/queues/failed/{job.id}/requeue", data={"csrf_token": token}, follow_redirects=True)

    assert f"{job.id} requeued" in after.data.decode()
    assert job.id in queue.job_ids


def test_the_timeline_places_status_runs_blocks_and_overrides_in_time():
    from app.timeline import timeline

    start = datetime(2026, 1, 1, tzinfo=UTC)
    at = lambda hours: iso_millis(start + timedelta(hours=hours))  # noqa: E731
    record = {
        "inquiries": [{"id": "inq_1"}, {"id": "inq_2"}],
        "history": [
            {"at": at(0), "inquiry_id": "inq_1", "to": "created", "outcome": "applied"},
            {"at": at(5), "inquiry_id": "inq_1", "to": "declined", "outcome": "applied"},
            {"at": at(6), "inquiry_id": "inq_1", "to": "declined", "outcome": "stale"},
            {"at": at(8), "inquiry_id": "inq_2", "to": "pending", "outcome": "applied"},
        ],
        "overrides": [{"at": at(9), "action": "lift_block", "operator": "ann"}],
    }
    picture = timeline(
        record, Block(start + timedelta(hours=5), start + timedelta(hours=9)), start + timedelta(hours=10)
    )
    first, second = picture.lanes
    assert [s.status for s in first.segments] == ["created", "declined"] and [s.status for s in second.segments] == [
        "pending"
    ]
    assert first.segments[0].x < first.segments[1].x < second.segments[0].x < picture.overrides[0].x
    [block] = picture.blocks
    assert block.x == first.segments[1].x and abs(block.x + block.width - picture.overrides[0].x) < 0.2


def test_no_link_can_put_words_in_the_consoles_error_banner(console):
    """The browser tests found `/console/?error=...` shown as the page's error."""
    sign_in(console)
    page = console.get("/console/?error=Session+expired:+sign+in+at+evil.example").data
    assert b"evil.example" not in page


def test_a_refused_form_is_a_page_that_says_why(console):
    sign_in(console)
    refused = console.post("/console/user/actions", data={"csrf_token": "forged"})
    assert refused.status_code == 400 and refused.mimetype == "text/html"
    assert b'class="error"' in refused.data and b"CSRF" in refused.data


def test_the_session_cookie_is_secure_over_https(console):
    page = console.get("/console/login", base_url="https://console.example")
    token = csrf(page.data)
    answer = console.post(
        "/console/login", data={"token": TOKEN, "csrf_token": token}, base_url="https://console.example"
    )
    assert "Secure" in answer.headers["Set-Cookie"]


@pytest.mark.parametrize("reference_id", ["x/../y", "..", ".", "a/./b", "%2E%2E"])
def test_an_override_acts_on_the_user_whose_page_it_is_whatever_the_id(console, reference_id):
    """Found by the operator trial: the form of user `x/../y` posted to `/console/users/x/../y/actions`, which
    the browser resolved to user `y`'s. Ids now travel in the query string and form fields."""
    for owner in (reference_id, "y", "b"):
        jobs.process_event(inquiry_event(f"inq_{owner}", "declined", hours_ago(2), owner))
    token = sign_in(console)
    page = console.get("/console/user", query_string={"ref": reference_id})
    assert page.status_code == 200
    form = re.search(rb'<form class="action-resync" method="post" action="([^"]+)"', page.data)
    assert form and form.group(1) == b"/console/user/actions"
    body = {"csrf_token": token, "reference_id": reference_id, "action": "resync", "reason": "r", "operator": "o"}
    assert console.post(form.group(1).decode(), data=body).status_code == 302
    mine = console.get("/console/user", query_string={"ref": reference_id}).data
    assert mine.count(b"<td>resync</td>") == 2  # its overrides table and its history
    assert b"<td>resync</td>" not in console.get("/console/user?ref=y").data


def test_a_signed_out_sessions_cookie_opens_nothing(console):
    """Found by the operator trial: the cookie kept from before signing out still opened the console."""
    token = sign_in(console)
    kept = console.get_cookie("console")
    assert kept is not None
    console.post("/console/logout", data={"csrf_token": token})
    console.set_cookie("console", kept.value)
    assert console.get("/console/").headers["Location"].endswith("/console/login")


def test_wrong_tokens_from_one_address_are_slowed_down(console):
    token = csrf(console.get("/console/login").data)
    answers = [
        console.post("/console/login", data={"token": "guess", "csrf_token": token}).status_code for _ in range(11)
    ]
    assert answers[:10] == [401] * 10 and answers[10] == 429
    assert console.post("/console/login", data={"token": TOKEN, "csrf_token": token}).status_code == 429


def test_pages_are_never_framed_cached_or_sniffed_and_an_impossible_id_is_a_404(console):
    sign_in(console)
    page = console.get("/console/")
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert console.get("/console/user", query_string={"ref": "nul\x00x"}).status_code == 404
    assert console.get("/console/search", query_string={"q": "nul\x00x"}).status_code == 302


@pytest.mark.parametrize(
    ("query", "named"),
    [("decision=bogus", b"decision: one of"), ("blocked=maybe", b"blocked: true or false"), ("synced=1", b"synced")],
)
def test_a_bad_filter_is_a_400_page_naming_it_not_silently_ignored(console, query, named):
    """Found by a trial: the console listed every user for `?decision=bogus`, where the API answers 400."""
    sign_in(console)
    page = console.get(f"/console/?{query}")
    assert page.status_code == 400 and named in page.data
    assert console.get("/console/?decision=&blocked=&synced=").status_code == 200  # the form's "any"
