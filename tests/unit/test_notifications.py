"""The host's notification (domain/notifications.py, docs/contracts.md §9): what it announces, its digest, its body,
and the Standard Webhooks signature the client puts on it (clients/host_webhook.py), checked by the package a host
would use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from clients.host_webhook import HostWebhook
from domain.notifications import RETRY_SCHEDULE, announced, digest, message, message_id
from domain.policy import InquiryFacts
from domain.summary import summarise
from domain.times import iso_millis

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def facts(status: str, hours_ago: float) -> InquiryFacts:
    at = iso_millis(NOW - timedelta(hours=hours_ago))
    return InquiryFacts("inq_1", status, at, at)


def test_a_block_in_force_is_announced_with_its_end_and_an_ended_one_without():
    blocked = announced("u1", summarise([facts("declined", 1)], NOW), enrolled=False, blocked=True)
    assert blocked["decision"] == "deny" and blocked["blocked_until"] == "2026-06-08T11:00:00.000Z"
    assert blocked["verisoul"] == {"enrolled": False, "blocked": True}
    ended = announced("u1", summarise([facts("declined", 24 * 8)], NOW), enrolled=False, blocked=False)
    assert (ended["decision"], ended["blocked_until"]) == ("verify", None)
    assert digest(blocked) != digest(ended)


def test_the_digest_ignores_the_sequence_and_the_key_order():
    data = announced("u1", summarise([facts("approved", 1)], NOW), enrolled=True, blocked=False)
    assert digest(data) == digest({**dict(reversed(list(data.items()))), "sequence": 7})


def test_the_body_and_the_message_id():
    data = announced("u1", summarise([], NOW), enrolled=False, blocked=False)
    body = message(data, 3, NOW)
    assert body == {"type": "user.updated", "timestamp": "2026-06-01T12:00:00.000Z", "data": {**data, "sequence": 3}}
    assert message_id(42) == "msg_42"


def test_the_retry_schedule_is_the_contracts():
    assert RETRY_SCHEDULE == (5, 300, 1800, 7200, 18000, 36000, 36000)


class Recorder(requests.Session):
    def __init__(self, status: int = 204):
        super().__init__()
        self.sent: list[tuple[bytes, dict]] = []
        self.status = status

    def post(self, url, data=None, headers=None, timeout=None, **kwargs):
        self.sent.append((data, headers))
        response = requests.Response()
        response.status_code = self.status
        response._content = b'{"error": "nope"}'
        return response


@given(st.text(max_size=50), st.integers(0, 10**6))
def test_what_the_client_signs_verifies_with_the_standard_package_and_nothing_else_does(reference_id, sequence):
    session = Recorder()
    client = HostWebhook("http://host.invalid/webhooks", SECRET, session)
    body = message({"reference_id": reference_id}, sequence, datetime.now(UTC))
    assert client.send("msg_1", body, datetime.now(UTC)) is None
    [(payload, headers)] = session.sent
    assert Webhook(SECRET).verify(payload, headers) == body
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(payload + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB").verify(payload, headers)


def test_a_refusal_is_one_line_with_the_status():
    client = HostWebhook("http://host.invalid/webhooks", SECRET, Recorder(status=500))
    assert client.send("msg_1", {"a": 1}, datetime.now(UTC)) == 'HTTP 500: {"error": "nope"}'


def test_no_answer_is_said_without_the_url():
    client = HostWebhook("http://127.0.0.1:1/webhooks", SECRET)
    reason = client.send("msg_1", {"a": 1}, datetime.now(UTC))
    assert reason is not None and reason.endswith("no answer from the host") and "127.0.0.1" not in reason
