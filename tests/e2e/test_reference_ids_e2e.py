"""Any reference id, through the Procfile's processes (issue 9).

- `GET /users/<reference_id>` through real gunicorn, which fills PATH_INFO itself (the Flask test client may
  not do it the same way): ids with `/` sent raw and as `%2F`, dot segments as `%2E`, escapes. Requests are
  written with http.client so the request line is exactly the one under test: requests would remove `..`.
- Signed webhooks for users `.`, `..` and `team/alice`, applied by an rq worker and synced to a fake Verisoul
  (a real subprocess): the fake sees each id as one account, at its own routes, and nothing else.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from http.client import HTTPConnection
from urllib.parse import quote

import pytest
import requests

from store.db import Database
from store.models import User
from tests.helpers.fake_vendor import FakeServer
from tests.payloads import WEBHOOK, encode, envelope, headers

pytestmark = pytest.mark.e2e

TOKEN = "e2e-admin-token-ref-ids"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
API_KEY = "fake-verisoul-key"
SYNC_TIMEOUT = 60  # seconds
# (reference id, the request targets that must read it)
READS = [
    ("team/alice", ["/users/team/alice", "/users/team%2Falice"]),
    ("/leading", ["/users//leading", "/users/%2Fleading"]),
    ("trailing/", ["/users/trailing/", "/users/trailing%2F"]),
    ("a//b", ["/users/a//b", "/users/a%2F%2Fb"]),
    ("..", ["/users/%2E%2E"]),
    (".", ["/users/%2E"]),
    ("a/../b", ["/users/a%2F%2E%2E%2Fb"]),
    ("x/inquiries", ["/users/x/inquiries", "/users/x%2Finquiries"]),
    ("?x=1#frag", ["/users/%3Fx%3D1%23frag"]),
    ("100% sure", ["/users/100%25%20sure"]),
    ("%2F", ["/users/%252F"]),
    ("ünïcødé/日本", ["/users/" + quote("ünïcødé/日本", safe="/"), "/users/" + quote("ünïcødé/日本", safe="")]),
]


def _get(base_url: str, target: str) -> tuple[int, dict | str]:
    """GET `target` as written, on a fresh connection; (status, the JSON body, else its text)."""
    connection = HTTPConnection(base_url.removeprefix("http://"), timeout=10)
    try:
        connection.request("GET", target, headers=AUTH)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(body)
    except ValueError:  # Flask's HTML 404, say
        return response.status, body.decode(errors="replace")[:200]


def _start_web(stack) -> None:
    stack.env["ADMIN_API_TOKEN"] = TOKEN
    stack.start("web")
    stack.wait_ready()


def test_gunicorn_reads_any_reference_id_raw_and_encoded(stack, real_database_url):
    database = Database(real_database_url)
    with database.sessions() as session, session.begin():
        for reference_id, _ in READS:
            session.add(User(reference_id=reference_id, created_at=datetime.now(UTC)))
        session.add(User(reference_id="team", created_at=datetime.now(UTC)))  # a prefix is another user
    database.engine.dispose()
    _start_web(stack)

    answers = {target: _get(stack.url, target) for _, targets in READS for target in targets}
    read = {
        target: (status, body.get("reference_id") if isinstance(body, dict) else body)
        for target, (status, body) in answers.items()
    }
    assert read == {target: (200, reference_id) for reference_id, targets in READS for target in targets}

    for target in ["/users/team%2Fbob", "/users/team/bob", "/users/%2E%2E%2E"]:
        status, body = _get(stack.url, target)
        assert (status, body.get("error") if isinstance(body, dict) else body) == (404, "user_not_found"), target


@pytest.fixture
def fake_verisoul(tmp_path):
    fake = FakeServer("scripts.fake_verisoul", "Verisoul", tmp_path / "fake-verisoul.log")
    yield fake
    fake.stop()


def _approve(base_url: str, index: int, reference_id: str) -> None:
    attributes = {"status": "approved", "reference-id": reference_id, "created-at": "2026-11-30T10:00:00.000Z"}
    document = envelope(event_id=f"evt_ref_{index}", object_id=f"inq_ref_{index}", attributes=attributes)
    body = encode(document)
    answer = requests.post(base_url + WEBHOOK, data=body, headers=headers(body), timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "queued", answer.text


def _wait_synced(base_url: str, reference_ids: list[str]) -> dict[str, dict]:
    deadline = time.monotonic() + SYNC_TIMEOUT
    records: dict[str, dict] = {}
    while time.monotonic() < deadline:
        for reference_id in reference_ids:
            status, body = _get(base_url, "/users/" + quote(reference_id, safe="").replace(".", "%2E"))
            if status == 200:
                assert isinstance(body, dict), f"GET /users/{reference_id!r}: 200 without a JSON object: {body}"
                records[reference_id] = body
        if len(records) == len(reference_ids) and all(r["verisoul"]["synced"] for r in records.values()):
            return records
        time.sleep(0.2)
    raise AssertionError(f"not synced within {SYNC_TIMEOUT} s: {records}")


def test_dot_and_slash_users_are_enrolled_as_themselves(stack, fake_verisoul):
    """Issue 9: user `..` was 'enrolled' by calls to `/account/enroll`; now each id is its own account."""
    reference_ids = [".", "..", "team/alice"]
    stack.env.update(VERISOUL_API_URL=fake_verisoul.url, VERISOUL_API_KEY=API_KEY)
    _start_web(stack)
    stack.start("worker")
    for index, reference_id in enumerate(reference_ids):
        _approve(stack.url, index, reference_id)

    records = _wait_synced(stack.url, reference_ids)

    assert {ref: records[ref]["verisoul"]["enrolled"] for ref in reference_ids} == dict.fromkeys(reference_ids, True)
    calls = fake_verisoul.control("GET", "calls")
    assert {(c["action"], c["account_id"], c["query"]) for c in calls} == {
        (action, ref, "") for ref in reference_ids for action in ("get", "enroll")
    }
    accounts = fake_verisoul.control("GET", "accounts")
    assert sorted(accounts) == sorted(reference_ids)
    assert all(accounts[ref]["enroll_calls"] == 1 and accounts[ref]["externalId"] == ref for ref in reference_ids)
