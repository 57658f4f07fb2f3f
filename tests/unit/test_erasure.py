"""Erasure's pure core (domain/erasure.py), the vendor calls it makes (clients/) against the fakes, and where the
event path and the scheduler take part in it."""

from __future__ import annotations

import hashlib

import pytest
from marshmallow import ValidationError

from clients.persona import PersonaClient
from clients.verisoul import account_deleter
from domain.erasure import (
    PERSONA,
    REDIS,
    ROWS,
    STEPS,
    VERISOUL,
    load_erasure_request,
    names_any,
    sha256_of,
    steps_left,
)
from domain.events import is_queued_name
from runtime.config import Config
from scripts.fake_persona import DEFAULT_API_KEY as PERSONA_KEY
from tests.servers import FakePersonaControl
from workers.scheduler import periodic_jobs

WHY = {"reason": "asked to be forgotten", "operator": "dpo@example.com"}


def test_an_id_is_remembered_by_the_sha256_of_its_utf8():
    assert sha256_of("user_é") == hashlib.sha256("user_é".encode()).hexdigest()


def test_a_request_needs_a_reason_and_an_operator_like_an_override():
    assert load_erasure_request(WHY).operator == "dpo@example.com"
    for body, field in (
        ({"reason": "x"}, "operator"),
        ({**WHY, "reason": " "}, "reason"),
        ({**WHY, "operator": "a\u202eb"}, "operator"),
        ({**WHY, "reason": "x" * 501}, "reason"),
        ({**WHY, "more": 1}, "more"),
    ):
        with pytest.raises(ValidationError) as refused:
            load_erasure_request(body)
        assert field in refused.value.messages, (body, refused.value.messages)
    with pytest.raises(ValidationError):
        load_erasure_request(["reason"])


def test_the_steps_left_are_those_not_done_or_skipped_in_order():
    assert steps_left([]) == list(STEPS) == [PERSONA, ROWS, REDIS, VERISOUL]
    recorded = [
        {"step": PERSONA, "status": "skipped"},
        {"step": ROWS, "status": "done"},
        {"step": REDIS, "status": "failed"},
    ]
    assert steps_left(recorded) == [REDIS, VERISOUL]


def test_a_jobs_arguments_name_an_id_anywhere_but_not_as_part_of_another():
    names = frozenset({"inq_1", "user_1"})
    assert names_any([({"object_id": "inq_1"},), {}], names)
    assert names_any([("user_1",), {}], names)
    assert names_any([(), {"by": {"user_1": 1}}], names)
    assert not names_any([("inq_10", "user_12", 3, None), {}], names)


def test_account_redacted_is_queued_other_account_events_are_not():
    assert is_queued_name("account.redacted") and not is_queued_name("account.created")


def test_persona_redacts_an_inquiry_once_and_a_missing_one_is_already_gone(fake_persona_url):
    fake = FakePersonaControl(fake_persona_url)
    fake.reset()
    attributes = {"status": "approved", "name-first": "Jane", "birthdate": "1977-07-17", "created-at": "2026-01-01"}
    fake.store_inquiries({"data": {"type": "inquiry", "id": "inq_1", "attributes": attributes}, "included": [{}]})
    client = PersonaClient(fake_persona_url, PERSONA_KEY)
    try:
        assert client.redact_inquiry("inq_1") is True
        assert client.redact_inquiry("inq_none") is False
        stored = client.get_inquiry("inq_1")
    finally:
        client.close()
    assert set(stored["data"]["attributes"]) == {"status", "created-at", "redacted-at"} and stored["included"] == []
    assert [(c["method"], c["path"], c["status"]) for c in fake.calls() if c["method"] == "DELETE"] == [
        ("DELETE", "/api/v1/inquiries/inq_1", 200),
        ("DELETE", "/api/v1/inquiries/inq_none", 404),
    ]


def test_persona_faults_reach_the_redact_call(fake_persona_url):
    fake = FakePersonaControl(fake_persona_url)
    fake.reset()
    fake.configure(fail_next=[403])
    client = PersonaClient(fake_persona_url, PERSONA_KEY, attempts=1)
    try:
        with pytest.raises(Exception, match="403"):
            client.redact_inquiry("inq_1")
    finally:
        client.close()


def test_verisoul_deletes_an_account_on_the_lists_api_and_never_creates_one(fake_verisoul, verisoul_client_for):
    lists = verisoul_client_for("lists")
    lists.block("u1")
    delete = account_deleter(lists)
    assert delete is not None
    assert (delete("u1"), delete("u1")) == (True, False)  # the second: Verisoul's 400 "Account not found"
    assert fake_verisoul.account("u1") == {}
    assert [(c["action"], c["status"]) for c in fake_verisoul.calls() if c["action"] == "delete"] == [
        ("delete", 200),
        ("delete", 400),
    ]
    assert account_deleter(verisoul_client_for("account")) is None, "the account API has no delete"


class _Cron:
    def __init__(self):
        self.registered: list[str] = []

    def register(self, function, queue, **options):
        self.registered.append(function.__name__)


def test_the_retention_job_is_registered_daily_only_when_configured():
    config = Config(webhook_secrets=("s",), redis_url="redis://unused")
    for days, expected in ((None, False), (30, True)):
        cron = _Cron()
        periodic_jobs(cron, Config(**{**config.__dict__, "event_retention_days": days}))
        assert ("prune_event_log" in cron.registered) is expected
