"""The inquiry gate's answer (domain/gate.py, docs/contracts.md §8): allow, resume, create, deny or review, for one
template, from the user's decision and that template's inquiries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.gate import ALLOW, CREATE, DENY, RESUME, REVIEW, answer
from domain.overrides import Overrides
from domain.policy import InquiryFacts, Policy, decide
from domain.summary import by_template, summarise
from domain.times import iso_millis

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
WINDOW = timedelta(hours=24)


def inquiry(inquiry_id: str, status: str, hours_ago: float, forgiven: bool = False) -> InquiryFacts:
    at = iso_millis(NOW - timedelta(hours=hours_ago))
    return InquiryFacts(inquiry_id, status, at, at, forgiven)


def gate(template: list[InquiryFacts], every: list[InquiryFacts] | None = None, **options):
    overrides, policy = (
        options.pop("overrides", Overrides()),
        Policy(retry_after_block=options.get("retry_after_block", True)),
    )
    decision = decide(every if every is not None else template, NOW, policy=policy, overrides=overrides)
    return answer(decision, template, NOW, WINDOW, **options)


@pytest.mark.parametrize(
    ("status", "action"),
    [("completed", ALLOW), ("approved", ALLOW), ("needs_review", REVIEW), ("created", RESUME), ("pending", RESUME)],
)
def test_the_latest_inquiry_of_the_template_decides(status, action):
    result = gate([inquiry("inq_old", "expired", 100), inquiry("inq_new", status, 1)])
    assert result.action == action
    assert result.inquiry_id == ("inq_new" if action == RESUME else None)


def test_no_inquiry_of_the_template_creates_one():
    assert gate([]).action == CREATE


def test_an_expired_inquiry_is_resumed_within_the_window_and_replaced_after_it():
    assert gate([inquiry("inq_1", "expired", 3)]).inquiry_id == "inq_1"
    assert gate([inquiry("inq_1", "expired", 25)]).action == CREATE


def test_a_redacted_inquiry_is_never_resumed():
    assert gate([inquiry("inq_1", "pending", 1)], redacted=frozenset({"inq_1"})).action == CREATE


def test_a_block_in_force_denies_every_template_with_its_end():
    declined_elsewhere = inquiry("inq_other", "declined", 2)
    result = gate([inquiry("inq_1", "approved", 100)], every=[inquiry("inq_1", "approved", 100), declined_elsewhere])
    assert (result.action, result.blocked_until) == (DENY, NOW - timedelta(hours=2) + timedelta(days=7))


def test_a_failed_inquiry_gets_a_new_attempt_once_its_block_has_ended():
    """docs/contracts.md §5 as revised: after a temporary block, the gate creates the next inquiry."""
    assert gate([inquiry("inq_1", "failed", 24 * 6)]).action == DENY  # its 7-day block is in force
    assert gate([inquiry("inq_1", "failed", 24 * 8)]).action == CREATE
    twice = [inquiry("inq_1", "declined", 24 * 60), inquiry("inq_2", "failed", 24 * 31)]
    assert gate(twice).action == CREATE  # 2 strikes: 30 days
    thrice = [*twice, inquiry("inq_3", "failed", 24 * 365)]
    assert gate(thrice).action == DENY  # 3 strikes: for good, however long ago


def test_without_retry_after_block_a_failed_inquiry_gives_no_new_attempt_unless_forgiven():
    failed_long_ago = inquiry("inq_1", "failed", 24 * 10)  # its 7-day block has ended
    assert gate([failed_long_ago], retry_after_block=False).action == DENY
    assert gate([inquiry("inq_1", "failed", 24 * 10, forgiven=True)], retry_after_block=False).action == CREATE


statuses = st.sampled_from(
    ["created", "pending", "completed", "approved", "failed", "declined", "expired", "needs_review"]
)


@given(st.lists(st.tuples(statuses, st.floats(0, 24 * 40)), max_size=5), st.booleans())
def test_an_open_inquiry_is_never_created_beside_and_a_decided_one_never_resumed(rows, retry_after_block):
    inquiries = [inquiry(f"inq_{n}", status, hours) for n, (status, hours) in enumerate(rows)]
    result = gate(inquiries, retry_after_block=retry_after_block)
    newest = max(inquiries, key=lambda i: (i.created_at, i.id), default=None)
    if result.action == CREATE and newest is not None:
        # never beside an open one; after a failure only once no block is in force (and retries are on)
        assert newest.status == "expired" or (retry_after_block and newest.status in ("failed", "declined"))
    if result.action == RESUME:
        assert newest is not None and result.inquiry_id == newest.id
        assert newest.status in ("created", "pending", "expired")


def test_the_records_templates_apply_the_policy_per_template_and_the_block_to_all():
    """docs/contracts.md §8: an approved KYC and a pending re-verification are not folded into one status."""
    kyc, again = inquiry("inq_kyc", "approved", 100), inquiry("inq_again", "pending", 1)
    summary = summarise([kyc, again], NOW)
    assert by_template(summary, {"itmpl_kyc": [kyc], "itmpl_again": [again]}) == {
        "itmpl_again": {"inquiry_id": "inq_again", "status": "pending", "decision": "resume"},
        "itmpl_kyc": {"inquiry_id": "inq_kyc", "status": "approved", "decision": "allow"},
    }
    declined = inquiry("inq_no", "declined", 2)
    blocked = summarise([kyc, declined], NOW)
    assert by_template(blocked, {"itmpl_kyc": [kyc], "itmpl_no": [declined]})["itmpl_kyc"]["decision"] == "deny"
