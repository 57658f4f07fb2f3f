"""The operators' console (docs/contracts.md §7) as an operator uses it, in headless Chromium: signing in and out,
finding a user, reading their timeline, lifting a wrong block, requeueing a failed job. Each test uses
reference ids of its own on the module's server (tests/browser/conftest.py); each step is a screenshot under
var/test-artifacts/browser/<test name>/."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
import requests
from rq import Queue, SimpleWorker
from rq.job import Job

from domain.times import iso_millis
from tests.browser.console import TOKEN, Console
from tests.helpers.events import inquiry_event
from workers import jobs

pytestmark = pytest.mark.e2e

WHY = {"reason": "the selfie check misread a valid licence", "operator": "ops@example.com"}


def hours_ago(hours: float) -> str:
    return iso_millis(datetime.now(UTC) - timedelta(hours=hours))


def declined_then_retrying(reference_id: str) -> None:
    """A decline an hour and a half ago (a 7-day block in force), then a new inquiry the user started."""
    jobs.process_event(inquiry_event(f"inq_{reference_id}_1", "declined", hours_ago(1.5), reference_id))
    jobs.process_event(inquiry_event(f"inq_{reference_id}_2", "pending", hours_ago(1), reference_id))


def csrf_token(html: str) -> str | None:
    found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"|value="([^"]+)"[^>]*name="csrf_token"', html)
    return (found.group(1) or found.group(2)) if found else None


def test_the_console_asks_for_the_admin_token_and_its_session_cookie_is_httponly_strict_until_signing_out(
    console: Console,
):
    console.open("/console", "console before signing in")
    assert console.path == "/console/login"
    assert console.find("#token").get_attribute("type") == "password"
    assert console.find("#token").get_attribute("name") == "token"
    assert console.find("input[type=hidden][name=csrf_token]").get_attribute("value")

    console.sign_in("not-the-token")
    assert console.find(".error").is_displayed()
    assert console.find("#token")  # still the login form
    console.open("/console/", "console after a wrong token")
    assert console.path == "/console/login"  # no session was given

    console.sign_in()
    assert console.path == "/console/"
    cookies = console.driver.get_cookies()
    assert cookies, "signed in without a cookie"
    assert [(c["name"], c["httpOnly"], c.get("sameSite")) for c in cookies] == [
        (c["name"], True, "Strict") for c in cookies
    ]

    console.submit(console.find("form.logout"), "signed out")
    assert console.path == "/console/login"
    console.open("/console/", "console after signing out")
    assert console.path == "/console/login"


def test_a_wrong_token_is_a_401_page_with_an_error_and_the_right_one_redirects_to_the_console(console_url: str):
    """What the browser does not show: the statuses of the sign-in."""
    http = requests.Session()
    token = csrf_token(http.get(f"{console_url}/console/login", timeout=10).text)
    assert token, "no csrf_token on the login page"
    wrong = http.post(
        f"{console_url}/console/login",
        data={"token": "not-the-token", "csrf_token": token},
        allow_redirects=False,
        timeout=10,
    )
    assert wrong.status_code == 401
    assert re.search(r"class=[\"'][^\"']*\berror\b", wrong.text), wrong.text
    assert http.get(f"{console_url}/console/", allow_redirects=False, timeout=10).status_code in (302, 303)
    right = http.post(
        f"{console_url}/console/login", data={"token": TOKEN, "csrf_token": token}, allow_redirects=False, timeout=10
    )
    assert (right.status_code, urlsplit(right.headers.get("Location", "")).path) == (302, "/console/")
    assert http.get(f"{console_url}/console/", allow_redirects=False, timeout=10).status_code == 200


def test_searching_a_reference_id_opens_that_users_page_and_an_unknown_one_says_no_user(
    console: Console, jobs_environment
):
    jobs.process_event(inquiry_event("inq_search_1", "approved", hours_ago(2), "user_search"))
    console.sign_in()

    console.type_and_enter("#q", "user_search", "searched a known user")
    assert console.path == "/console/user" and console.driver.current_url.endswith("?ref=user_search")
    assert "allow" in console.text("#decision")
    assert console.find("form.logout")

    console.open("/console/", "the users list")
    assert "user_search" in console.text("#users")
    filters = console.form_of("select[name=decision]")
    for name in ("decision", "blocked", "synced"):
        assert console.find(f"select[name={name}]", filters)
    console.fill(filters, decision="deny")
    console.submit(filters, "the users list, decision deny")
    assert "user_search" not in console.text("#users")
    filters = console.form_of("select[name=decision]")
    console.fill(filters, decision="allow")
    console.submit(filters, "the users list, decision allow")
    assert "user_search" in console.text("#users")

    console.type_and_enter("#q", "user_nobody", "searched an unknown user")
    assert console.path.rstrip("/") == "/console"
    assert "no user" in console.text(".error")


def test_the_timeline_draws_a_lane_per_inquiry_the_block_and_each_override(console: Console, jobs_environment):
    declined_then_retrying("user_timeline")
    console.sign_in()
    console.open("/console/user?ref=user_timeline", "a blocked user's timeline")

    timeline = console.find("svg#timeline")
    lanes = console.find_all("g.lane", timeline)
    assert len(lanes) == 2
    for lane in lanes:
        assert console.find_all("rect.status", lane), lane.get_attribute("outerHTML")
    assert console.find_all(".block", timeline)
    assert not console.find_all(".override", timeline)

    lifted = requests.post(
        f"{console.url}/users/user_timeline/actions",
        json={"action": "lift_block", **WHY},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert lifted.status_code == 200, lifted.text
    console.open("/console/user?ref=user_timeline", "the timeline after a lift")
    assert len(console.find_all("svg#timeline .override")) == 1


def test_lifting_a_block_from_the_users_page_records_the_override_and_a_post_without_csrf_is_refused(
    console: Console, jobs_environment
):
    declined_then_retrying("user_lift")
    console.sign_in()
    console.open("/console/user?ref=user_lift", "a blocked user")
    assert "deny" in console.text("#decision")
    assert console.text("#strikes") == "1"
    assert console.find("#verifications") and console.find("#verisoul") and console.find("form.logout")
    for action in ("lift_block", "forgive_inquiry", "clear_duplicate", "resync"):
        form = console.find(f"form.action-{action}")
        for name in ("reason", "operator"):
            assert console.find(f"[name={name}]", form)
        assert console.find("input[type=hidden][name=csrf_token]", form).get_attribute("value")
    assert console.find("form.action-forgive_inquiry select[name=inquiry_id]")

    form = console.find("form.action-lift_block")
    console.fill(form, **WHY)
    console.shot("the lift filled in")
    console.submit(form, "after the lift")

    assert console.path == "/console/user" and console.driver.current_url.endswith("?ref=user_lift")
    assert console.text(".flash")
    assert "deny" not in console.text("#decision")
    assert console.text("#strikes") == "1"  # a lift ends the block, the strike stays
    [row] = [row for row in console.find_all("#overrides tr") if WHY["reason"] in row.text]
    assert "lift_block" in row.text and WHY["operator"] in row.text, row.text

    # The same operator's cookies, but no CSRF token: refused, and nothing recorded.
    refused = console.http().post(
        f"{console.url}/console/user/actions",
        data={"reference_id": "user_lift", "action": "lift_block", "reason": "forged", "operator": "mallory"},
        allow_redirects=False,
        timeout=10,
    )
    assert refused.status_code == 400
    console.open("/console/user?ref=user_lift", "after the refused post")
    assert len([row for row in console.find_all("#overrides tr") if WHY["reason"] in row.text]) == 1
    assert "mallory" not in console.text("#overrides")


def test_a_failed_job_is_listed_with_its_time_and_error_and_requeued_from_the_queues_page(
    console: Console, console_config, console_redis, jobs_environment
):
    events = Queue(console_config.events_queue, connection=console_redis)
    description = f"browser test: a job whose function does not exist {uuid.uuid4().hex[:8]}"
    job = events.enqueue("workers.jobs.no_such_function", description=description)
    SimpleWorker([events], connection=console_redis).work(burst=True)
    job = Job.fetch(job.id, connection=console_redis)
    assert job.get_status() == "failed"
    assert job.ended_at is not None
    result = job.latest_result()
    assert result is not None and result.exc_string
    error = result.exc_string.strip().splitlines()[-1]  # e.g. `ValueError: Invalid attribute name: no_such_function`

    console.sign_in()
    console.open("/console/queues", "the failed job listed")
    assert console.find("#queues")
    assert console.find("form.logout")
    [row] = [row for row in console.find_all("#failed-jobs tbody tr") if description in row.text]
    requeue = console.find("form.requeue", row)
    assert urlsplit(requeue.get_attribute("action") or "").path == f"/console/queues/failed/{job.id}/requeue"
    assert console.find("input[type=hidden][name=csrf_token]", requeue).get_attribute("value")
    assert job.ended_at.strftime("%Y-%m-%d") in row.text  # its time
    assert "no_such_function" in row.text  # its function
    assert error in row.text  # its error

    console.submit(requeue, "requeued")
    assert console.path == "/console/queues"
    assert "requeued" in console.text(".flash")
    assert not [row for row in console.find_all("#failed-jobs tbody tr") if description in row.text]
    assert Job.fetch(job.id, connection=console_redis).get_status() == "queued"


@pytest.mark.parametrize(
    ("user", "path"),
    [
        ("user_csrf_login", "/console/login"),
        ("user_csrf_logout", "/console/logout"),
        ("user_csrf_act", "/console/user/actions"),
        ("user_csrf_requeue", "/console/queues/failed/job_x/requeue"),
    ],
    ids=["login", "logout", "actions", "requeue"],
)
def test_every_post_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
    console: Console, jobs_environment, user: str, path: str
):
    """No token, an empty one, another session's: each a 400, and the operator still signed in, nothing recorded."""
    declined_then_retrying(user)
    console.sign_in()
    console.open(f"/console/user?ref={user}", "signed in, a blocked user")
    http = console.http()
    other_session = csrf_token(requests.get(f"{console.url}/console/login", timeout=10).text)
    body = {"token": TOKEN, "reference_id": user, "action": "lift_block", "reason": "forged", "operator": "mallory"}

    for token in (None, "", other_session):
        sent = body if token is None else body | {"csrf_token": token}
        answer = http.post(f"{console.url}{path}", data=sent, allow_redirects=False, timeout=10)
        assert answer.status_code == 400, (token, answer.status_code, answer.text[:300])

    console.open(f"/console/user?ref={user}", "still signed in, nothing recorded")
    assert console.path == "/console/user" and console.driver.current_url.endswith(f"?ref={user}")
    assert "deny" in console.text("#decision") and "mallory" not in console.text("#overrides")
