"""Erasure end to end (docs/contracts.md §10): gunicorn, an RQ worker and the scheduler as the Procfile runs them,
the fake Persona and Verisoul as processes. A user is built with a few inquiries through signed webhooks and synced
to Verisoul, then erased through `DELETE /users/<ref>`; afterwards no text or JSON column of any table and no key or
value in the stack's Redis database holds the reference id or an inquiry id, Persona was asked to redact each
inquiry and Verisoul to delete the account, and a late webhook for an erased inquiry is answered, dropped (outcome
`erased`) and re-creates nobody."""

from __future__ import annotations

import time

import pytest
import requests

from tests.helpers.delivery import post_all
from tests.helpers.erasure import redis_naming, rows_naming
from tests.helpers.fake_vendor import FakeServer
from tests.helpers.stack import exited
from tests.payloads import encode

pytestmark = pytest.mark.e2e

TOKEN = "e2e-erasure-token-93d1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REF = "user_erase_e2e"
ACCOUNT = "act_erase_e2e"
INQUIRIES = ("inq_erase_e2e_1", "inq_erase_e2e_2", "inq_erase_e2e_3")
WAIT = 60  # seconds for the workers to catch up


@pytest.fixture
def fakes(tmp_path):
    persona = FakeServer("scripts.fake_persona", "Persona", tmp_path / "fake-persona.log")
    verisoul = FakeServer("scripts.fake_verisoul", "Verisoul", tmp_path / "fake-verisoul.log")
    yield persona, verisoul
    persona.stop()
    verisoul.stop()


def webhook(event_id: str, inquiry_id: str, status: str, at: str) -> tuple[str, bytes]:
    """A signed-to-be Persona delivery about one of the user's inquiries, with the personal data Persona sends."""
    inquiry = {
        "type": "inquiry",
        "id": inquiry_id,
        "attributes": {"status": status, "reference-id": REF, "created-at": at, "name-first": "Jane"},
        "relationships": {
            "account": {"data": {"type": "account", "id": ACCOUNT}},
            "inquiry-template": {"data": {"type": "inquiry-template", "id": "itmpl_e2e"}},
        },
    }
    document = {
        "data": {
            "type": "event",
            "id": event_id,
            "attributes": {"name": f"inquiry.{status}", "created-at": at, "payload": {"data": inquiry}},
        }
    }
    return event_id, encode(document)


def wait_until(check, what: str, stack) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if check():
            return
        assert not exited(stack), exited(stack)
        time.sleep(0.2)
    pytest.fail(f"{what} within {WAIT} s; logs in {stack.log_dir}")


def test_an_erased_user_is_nowhere_in_the_stack_and_stays_erased(stack, fakes, real_redis, real_database_url):
    persona, verisoul = fakes
    persona.control("POST", "inquiries", json=[{"data": {"type": "inquiry", "id": i}} for i in INQUIRIES])
    stack.env.update(
        ADMIN_API_TOKEN=TOKEN,
        PERSONA_API_URL=persona.url,
        PERSONA_API_KEY="fake-persona-key",
        VERISOUL_API_URL=f"{verisoul.url}/lists",
        VERISOUL_API_FLAVOR="lists",
        VERISOUL_API_KEY="fake-verisoul-key",
    )
    for kind in ("web", "worker", "scheduler"):
        stack.start(kind)
    stack.wait_ready()

    deliveries = [
        webhook("evt_erase_e2e_1", INQUIRIES[0], "declined", "2026-01-01T10:00:00.000Z"),
        webhook("evt_erase_e2e_2", INQUIRIES[1], "expired", "2026-02-01T10:00:00.000Z"),
        webhook("evt_erase_e2e_3", INQUIRIES[2], "pending", "2026-03-01T10:00:00.000Z"),
        webhook("evt_erase_e2e_4", INQUIRIES[2], "approved", "2026-03-01T10:05:00.000Z"),
    ]
    assert {status for _id, status, _answer in post_all(stack.url, deliveries)} == {200}

    def user_built() -> bool:
        answer = requests.get(f"{stack.url}/users/{REF}", headers=AUTH, timeout=5)
        record = answer.json() if answer.ok else {}
        return record.get("status") == "approved" and record["verisoul"]["synced"]

    wait_until(user_built, "the user was not recorded and synced", stack)
    assert verisoul.control("GET", "accounts").get(REF), "enrolled at Verisoul"

    answer = requests.delete(
        f"{stack.url}/users/{REF}", json={"reason": "the person asked", "operator": "dpo"}, headers=AUTH, timeout=5
    )
    assert answer.status_code == 202, answer.text
    erasure_id = answer.json()["erasure_id"]

    def receipt() -> dict:
        return requests.get(f"{stack.url}/erasures/{erasure_id}", headers=AUTH, timeout=5).json()

    wait_until(lambda: receipt()["status"] == "done", "the erasure was not done", stack)
    assert [(s["step"], s["status"]) for s in receipt()["steps"]] == [
        ("persona", "done"),
        ("rows", "done"),
        ("redis", "done"),
        ("verisoul", "done"),
    ]

    names = {REF, ACCOUNT, *INQUIRIES}
    assert rows_naming(real_database_url, names) == []
    assert redis_naming(real_redis, names) == []
    redactions = [c for c in persona.control("GET", "calls") if c["method"] == "DELETE"]
    assert sorted((c["path"], c["status"]) for c in redactions) == [(f"/api/v1/inquiries/{i}", 200) for i in INQUIRIES]
    deletes = [c for c in verisoul.control("GET", "calls") if c["method"] == "DELETE" and c["action"] == "delete"]
    assert [(c["path"], c["status"]) for c in deletes] == [(f"/lists/account/{REF}", 200)]
    assert REF not in verisoul.control("GET", "accounts")

    [(_id, status, late)] = post_all(
        stack.url, [webhook("evt_erase_e2e_late", INQUIRIES[0], "approved", "2026-04-01T10:00:00.000Z")]
    )
    assert (status, late["status"]) == (200, "queued")

    def dropped() -> bool:
        return any('"outcome": "erased"' in log.read_text(errors="replace") for log in stack.logs)

    wait_until(dropped, "the late event was not dropped", stack)
    assert requests.get(f"{stack.url}/users/{REF}", headers=AUTH, timeout=5).status_code == 404
    assert rows_naming(real_database_url, names) == []
    wait_until(lambda: redis_naming(real_redis, names) == [], "the dropped event's job still names the ids", stack)
