"""The inquiry gate (`POST /users/<reference_id>/inquiries`, docs/contracts.md §8) end to end: gunicorn and two RQ
workers as the Procfile runs them, the fake Persona (scripts/fake_persona.py) as a process of its own, real HTTP
between them. The gate creates, then resumes; signed webhooks complete and approve that inquiry through the
workers, and the gate then allows; declined users are denied until their block's end; twenty concurrent first
calls make one inquiry; and Persona away is a 503 whose retry makes one inquiry. On SQLite and, with
TEST_DATABASE_URL, PostgreSQL."""

from __future__ import annotations

import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import requests

from scripts.fake_persona import DEFAULT_API_KEY
from tests.e2e.stream import iso
from tests.helpers.delivery import post_all, wait_for_drain
from tests.helpers.fake_vendor import FakeServer
from tests.payloads import encode, envelope

pytestmark = pytest.mark.e2e

HOST_TOKEN = "e2e-host-token-3b9d41"
HOST = {"Authorization": f"Bearer {HOST_TOKEN}"}
TEMPLATE = "itmpl_e2e_gate"
CONCURRENT_CALLS = 20
# docs/contracts.md §5: a block runs from the created-at of the event that made the latest negative decision.
BLOCK_FOR_STRIKES = {1: timedelta(days=7), 2: timedelta(days=30)}
EVENT_NAME = {"completed": "inquiry.completed", "approved": "inquiry.approved", "declined": "inquiry.declined"}


@pytest.fixture
def persona(tmp_path):
    fake = FakeServer("scripts.fake_persona", "Persona", tmp_path / "fake-persona.log")
    yield fake
    fake.stop()


@pytest.fixture
def gate(stack, persona):
    """The stack's web and two workers, its gate on the fake Persona; the stack."""
    stack.env.update(PERSONA_API_URL=persona.url, PERSONA_API_KEY=DEFAULT_API_KEY, HOST_API_TOKEN=HOST_TOKEN)
    stack.start("web")
    stack.start("worker")
    stack.start("worker")
    stack.wait_ready()
    return stack


def ask(stack, reference_id: str, session: requests.Session | None = None) -> requests.Response:
    http = session or requests
    url = f"{stack.url}/users/{reference_id}/inquiries"
    return http.post(url, json={"template_id": TEMPLATE}, headers=HOST, timeout=30)


def create_attempts(persona: FakeServer) -> list[int]:
    """The status the fake answered to each create, in order."""
    calls = persona.control("GET", "calls")
    return [c["status"] for c in calls if c["method"] == "POST" and c["path"] == "/api/v1/inquiries"]


def inquiry_webhook(inquiry: dict, status: str, at: datetime) -> tuple[str, bytes]:
    """A webhook moving `inquiry` (its data, as Persona holds it) to `status`, created at `at`: (event id, body)."""
    event_id = f"evt_gate_{secrets.token_hex(8)}"
    data = {**inquiry, "attributes": {**inquiry["attributes"], "status": status}}
    document = envelope(EVENT_NAME[status], event_id, iso(at), object_id=data["id"])
    document["data"]["attributes"]["payload"] = {"data": data}
    return event_id, encode(document)


def new_inquiry(inquiry_id: str, reference_id: str, created: datetime) -> dict:
    """An inquiry of TEMPLATE as Persona's payload carries it (for users the gate did not create one for)."""
    return {
        "type": "inquiry",
        "id": inquiry_id,
        "attributes": {"status": "created", "reference-id": reference_id, "created-at": iso(created)},
        "relationships": {"inquiry-template": {"data": {"type": "inquiry-template", "id": TEMPLATE}}},
    }


def deliver(stack, redis, database_url: str, webhooks: list[tuple[str, bytes]], events_after: int) -> None:
    """Post signed webhooks to the web; wait until the workers have applied them (`events_after` events stored)."""
    answers = post_all(stack.url, webhooks)
    statuses = [(code, body.get("status") if isinstance(body, dict) else body) for _, code, body in answers]
    assert statuses == [(200, "queued")] * len(webhooks), answers
    wait_for_drain(stack, redis, database_url, events_after)


def record(stack, reference_id: str) -> dict:
    answer = requests.get(f"{stack.url}/users/{reference_id}", headers=HOST, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_the_gate_creates_resumes_and_allows_once_the_workers_applied_the_webhooks(
    gate, persona, real_redis, real_database_url
):
    first = ask(gate, "u_gate")
    assert first.status_code == 201, first.text
    created = first.json()
    assert created["action"] == "create" and created["session_token"]
    assert create_attempts(persona) == [201]

    second = ask(gate, "u_gate")
    assert (second.status_code, second.json()["action"], second.json()["inquiry_id"]) == (
        200,
        "resume",
        created["inquiry_id"],
    )

    at_persona = requests.get(
        f"{persona.url}/api/v1/inquiries/{created['inquiry_id']}",
        headers={"Authorization": f"Bearer {DEFAULT_API_KEY}"},
        timeout=10,
    ).json()["data"]
    assert at_persona["attributes"]["reference-id"] == "u_gate"
    now = datetime.now(UTC)
    webhooks = [
        inquiry_webhook(at_persona, "completed", now),
        inquiry_webhook(at_persona, "approved", now + timedelta(seconds=1)),
    ]
    deliver(gate, real_redis, real_database_url, webhooks, events_after=3)  # the gate's `created`, then these two
    applied = record(gate, "u_gate")
    assert [(i["id"], i["status"]) for i in applied["inquiries"]] == [(created["inquiry_id"], "approved")]
    # Two workers may apply them in either order: the approval is the newest snapshot whichever comes first
    # (`unexpected` when it follows `created` directly), and a completion after it is `stale`.
    outcomes = {h["event_id"]: h["outcome"] for h in applied["history"]}
    (completed, _), (approved, _) = webhooks
    assert outcomes.get(completed) in ("applied", "stale") and outcomes.get(approved) in ("applied", "unexpected")

    allowed = ask(gate, "u_gate")
    assert (allowed.status_code, allowed.json()) == (200, {"action": "allow"})
    assert create_attempts(persona) == [201]


def test_declined_users_are_denied_until_the_end_of_the_block_their_strikes_make(
    gate, persona, real_redis, real_database_url
):
    now = datetime.now(UTC).replace(microsecond=0)
    once_at = now - timedelta(hours=1)
    twice_at = (now - timedelta(hours=3), now - timedelta(hours=2))
    once = new_inquiry("inq_declined_once", "u_declined_once", once_at)
    firsts = [new_inquiry(f"inq_declined_twice_{n}", "u_declined_twice", at) for n, at in enumerate(twice_at)]
    webhooks = [inquiry_webhook(once, "declined", once_at)]
    webhooks += [inquiry_webhook(inquiry, "declined", at) for inquiry, at in zip(firsts, twice_at, strict=True)]
    deliver(gate, real_redis, real_database_url, webhooks, events_after=3)

    denied_once = ask(gate, "u_declined_once")
    assert denied_once.status_code == 403, denied_once.text
    assert denied_once.json()["action"] == "deny"
    assert denied_once.json()["blocked_until"] == iso(once_at + BLOCK_FOR_STRIKES[1])

    denied_twice = ask(gate, "u_declined_twice")
    assert denied_twice.status_code == 403, denied_twice.text
    assert denied_twice.json()["blocked_until"] == iso(twice_at[1] + BLOCK_FOR_STRIKES[2])
    assert record(gate, "u_declined_twice")["strikes"] == 2
    assert create_attempts(persona) == []  # a denied user costs Persona nothing


def test_twenty_concurrent_first_calls_create_one_inquiry_and_all_name_it(gate, persona):
    start = threading.Barrier(CONCURRENT_CALLS)

    def call(_: int) -> tuple[int, dict]:
        with requests.Session() as session:
            start.wait()
            answer = ask(gate, "u_race", session)
            return answer.status_code, answer.json()

    with ThreadPoolExecutor(CONCURRENT_CALLS) as pool:
        answers = list(pool.map(call, range(CONCURRENT_CALLS)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * (CONCURRENT_CALLS - 1) + [201], answers
    assert len({body["inquiry_id"] for _, body in answers}) == 1, answers
    assert create_attempts(persona) == [201]


def test_persona_away_is_a_503_with_retry_after_and_the_retry_creates_one_inquiry(gate, persona):
    persona.control("POST", "config", json={"fail_next": [503] * 50})  # more than any one call attempts
    away = ask(gate, "u_outage")
    assert away.status_code == 503, away.text
    assert away.json()["error"] == "persona_unavailable" and int(away.headers["Retry-After"]) > 0
    attempts = create_attempts(persona)
    assert attempts and set(attempts) == {503}

    persona.control("POST", "config", json={"fail_next": []})  # Persona is back
    retried = ask(gate, "u_outage")
    assert retried.status_code == 201, retried.text
    assert ask(gate, "u_outage").json()["inquiry_id"] == retried.json()["inquiry_id"]
    assert [status for status in create_attempts(persona) if status != 503] == [201]
