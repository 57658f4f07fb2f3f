"""The decision policy (domain/policy.py, docs/contracts.md §5): inquiries and a clock in, a decision out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.overrides import Overrides
from domain.policy import DECISIONS, Block, InquiryFacts, Policy, block_for, decide, latest
from domain.state_machine import INQUIRY_STATUSES
from tests.helpers.inquiry_facts import BASE, DAY, MICROSECOND, inquiry, iso, negatives

FOREVER = BASE + timedelta(days=365 * 100)


# --- docs/contracts.md §5 table -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, decision, next_action",
    [
        ("none", "verify", "create_inquiry"),
        ("created", "resume", "resume_inquiry"),
        ("pending", "resume", "resume_inquiry"),
        ("expired", "verify", "create_inquiry"),
        ("completed", "allow", "none"),
        ("approved", "allow", "none"),
        ("needs_review", "review", "wait"),
        ("failed", "verify", "create_inquiry"),  # §5 as revised: the block has ended, so verify again
        ("declined", "verify", "create_inquiry"),
    ],
)
def test_latest_status_decides_when_no_block_is_in_force(status, decision, next_action):
    inquiries = [] if status == "none" else [inquiry("inq_1", status)]
    now = BASE + 8 * DAY  # past the 7-day block a single failed/declined inquiry brings
    result = decide(inquiries, now)
    assert not result.blocked(now)
    assert (result.status, result.decision, result.next_action) == (status, decision, next_action)
    assert result.inquiry_id == (None if status == "none" else "inq_1")


def test_every_inquiry_status_has_a_decision():
    assert set(DECISIONS) == set(INQUIRY_STATUSES) | {"none"}


# --- strikes and blocks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("count, length", [(0, None), (1, 7 * DAY), (2, 30 * DAY), (3, "permanent"), (4, "permanent")])
def test_strikes_and_block_length(count, length):
    inquiries = negatives(count) + [inquiry("inq_latest", "approved", BASE + 10 * DAY, BASE + 11 * DAY)]
    result = decide(inquiries, BASE + 12 * DAY)
    assert result.strikes == count
    if length is None:
        assert result.block is None
    elif length == "permanent":
        assert result.block == Block(BASE + count * DAY, None) and result.block.permanent
    else:
        assert result.block == Block(BASE + count * DAY, BASE + count * DAY + length)


@pytest.mark.parametrize("latest_status, free_decision", [("pending", "resume"), ("approved", "allow")])
@pytest.mark.parametrize("count, length", [(1, 7 * DAY), (2, 30 * DAY)])
def test_block_expiry_boundary(count, length, latest_status, free_decision):
    inquiries = negatives(count) + [inquiry("inq_latest", latest_status, BASE + 10 * DAY)]
    until = BASE + count * DAY + length
    assert decide(inquiries, until - MICROSECOND).decision == "deny"
    assert decide(inquiries, until - MICROSECOND).next_action == "none"
    assert decide(inquiries, until).decision == free_decision


# --- after the block (§5 as revised: RETRY_AFTER_BLOCK) -------------------------------------------------


@pytest.mark.parametrize("status", ["failed", "declined"])
def test_once_a_temporary_block_ends_the_user_may_verify_again_and_a_further_failure_is_the_next_strike(status):
    first = [inquiry("inq_1", status, BASE, BASE)]
    assert decide(first, BASE + 7 * DAY - MICROSECOND).decision == "deny"
    after = decide(first, BASE + 7 * DAY)
    assert (after.decision, after.next_action, after.unblocked) == ("verify", "create_inquiry", "verify")
    again = [*first, inquiry("inq_2", status, BASE + 8 * DAY, BASE + 9 * DAY)]
    second = decide(again, BASE + 9 * DAY)
    assert second.strikes == 2 and second.block == Block(BASE + 9 * DAY, BASE + 39 * DAY)
    assert decide(again, BASE + 39 * DAY).decision == "verify"
    third = decide([*again, inquiry("inq_3", status, BASE + 40 * DAY, BASE + 41 * DAY)], FOREVER)
    assert (third.decision, third.next_action, third.unblocked) == ("deny", "none", "deny")


@pytest.mark.parametrize("status", ["failed", "declined"])
def test_without_retry_after_block_a_failed_user_stays_denied_after_the_block(status):
    policy = Policy(retry_after_block=False)
    result = decide([inquiry("inq_1", status, BASE, BASE)], FOREVER, policy=policy)
    assert not result.blocked(FOREVER)
    assert (result.decision, result.next_action, result.unblocked) == ("deny", "none", "deny")


def test_a_lifted_permanent_block_lets_the_user_verify_again():
    overrides = Overrides(block_lifted_at=BASE + 10 * DAY)
    result = decide(negatives(3), BASE + 11 * DAY, overrides=overrides)
    assert not result.blocked(BASE + 11 * DAY)
    assert (result.decision, result.next_action) == ("verify", "create_inquiry")


@pytest.mark.parametrize("count", [3, 4])
@pytest.mark.parametrize("latest_status", ["pending", "approved", "expired"])
def test_permanent_block_never_ends(count, latest_status):  # failed and declined: see below
    inquiries = negatives(count) + [inquiry("inq_latest", latest_status, BASE + 10 * DAY)]
    result = decide(inquiries, FOREVER)
    assert (result.decision, result.next_action) == ("deny", "none")
    assert result.blocked(FOREVER)


def test_block_runs_from_when_the_decision_was_made_not_from_inquiry_creation():
    declined = inquiry("inq_1", "declined", created=BASE, since=BASE + 10 * DAY)
    assert block_for([declined]) == Block(BASE + 10 * DAY, BASE + 17 * DAY)
    assert decide([declined, inquiry("inq_2", "approved", BASE + 11 * DAY)], BASE + 16 * DAY).decision == "deny"


def test_block_runs_from_the_latest_negative_decision_whatever_the_list_order():
    # the older inquiry was declined last (e.g. after review), so its status_since counts
    early = inquiry("inq_1", "declined", created=BASE, since=BASE + 20 * DAY)
    late = inquiry("inq_2", "failed", created=BASE + 5 * DAY, since=BASE + 6 * DAY)
    expected = Block(BASE + 20 * DAY, BASE + 50 * DAY)
    assert block_for([early, late]) == block_for([late, early]) == expected


def test_positive_inquiries_do_not_move_the_block():
    declined = inquiry("inq_1", "declined", BASE)
    approved_later = inquiry("inq_2", "approved", BASE + DAY, BASE + 3 * DAY)
    assert block_for([declined, approved_later]) == Block(BASE, BASE + 7 * DAY)


# --- reversals and which inquiry is latest ---------------------------------------------------------------


def test_reviewer_reversal_to_approved_removes_the_strike():
    reversed_ = inquiry("inq_1", "approved", BASE, BASE + 2 * DAY)  # was declined at BASE + DAY
    result = decide([reversed_], BASE + 3 * DAY)
    assert (result.strikes, result.block, result.decision) == (0, None, "allow")


def test_reversal_of_one_of_two_declines_leaves_one_strike():
    first = inquiry("inq_1", "declined", BASE, BASE + DAY)
    second = inquiry("inq_2", "approved", BASE + 2 * DAY, BASE + 4 * DAY)  # was declined at BASE + 3 days
    result = decide([first, second], BASE + 5 * DAY)
    assert result.strikes == 1
    assert result.block == Block(BASE + DAY, BASE + 8 * DAY)
    assert decide([first, second], BASE + 8 * DAY).decision == "allow"


def test_reversal_to_declined_blocks_from_the_reversal():
    reversed_ = inquiry("inq_1", "declined", BASE, BASE + 30 * DAY)  # was approved at BASE + DAY
    result = decide([reversed_], BASE + 31 * DAY)
    assert (result.strikes, result.decision) == (1, "deny")
    assert result.block == Block(BASE + 30 * DAY, BASE + 37 * DAY)


def test_latest_inquiry_is_by_created_at_not_by_status_since():
    older = inquiry("inq_b", "approved", created=BASE, since=BASE + 20 * DAY)
    newer = inquiry("inq_a", "needs_review", created=BASE + DAY, since=BASE + 2 * DAY)
    for inquiries in ([older, newer], [newer, older]):
        assert latest(inquiries) == newer
        result = decide(inquiries, BASE + 30 * DAY)
        assert (result.status, result.inquiry_id, result.decision) == ("needs_review", "inq_a", "review")


def test_latest_inquiry_tie_is_broken_by_id():
    one, other = inquiry("inq_1", "approved", BASE), inquiry("inq_2", "pending", BASE)
    assert latest([one, other]) == latest([other, one])
    assert decide([one, other], BASE) == decide([other, one], BASE)


def test_no_inquiries():
    assert latest([]) is None
    assert block_for([]) is None


# --- one person, one account -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["none", *INQUIRY_STATUSES])
def test_duplicate_account_turns_allow_into_review(status):
    inquiries = [] if status == "none" else [inquiry("inq_1", status)]
    now = BASE + 8 * DAY
    alone, duplicate = decide(inquiries, now), decide(inquiries, now, duplicate_account=True)
    if alone.decision == "allow":
        assert (duplicate.decision, duplicate.next_action) == ("review", "wait")
    else:
        assert duplicate == alone


def test_duplicate_account_does_not_lift_a_block():
    inquiries = [inquiry("inq_1", "declined", BASE), inquiry("inq_2", "approved", BASE + DAY)]
    result = decide(inquiries, BASE + 2 * DAY, duplicate_account=True)
    assert (result.decision, result.next_action) == ("deny", "none")


# --- configuration ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "policy, count, until",
    [
        (Policy(block_days={1: 1, 2: 2, 3: 3}, permanent_at=4), 3, BASE + 3 * DAY + 3 * DAY),
        (Policy(block_days={1: 1, 2: 2, 3: 3}, permanent_at=4), 4, None),
        (Policy(block_days={1: 2, 2: 30}), 1, BASE + DAY + 2 * DAY),
        (Policy(permanent_at=1), 1, None),
        (Policy(permanent_at=2), 2, None),
    ],
)
def test_block_lengths_are_configurable(policy, count, until):
    assert block_for(negatives(count), policy) == Block(BASE + count * DAY, until)
    assert decide(negatives(count), BASE, policy=policy).block == Block(BASE + count * DAY, until)


@pytest.mark.parametrize("settings", [{"block_days": {1: 7}}, {"block_days": {1: 7, 2: 30}, "permanent_at": 4}])
def test_a_strike_count_without_a_block_length_is_refused(settings):
    with pytest.raises(ValueError, match="block_days"):
        Policy(**settings)


def test_decisions_are_configurable():
    policy = Policy(decisions={**DECISIONS, "expired": ("resume", "resume_inquiry"), "completed": ("review", "wait")})
    assert decide([inquiry("inq_1", "expired")], BASE, policy=policy).decision == "resume"
    assert decide([inquiry("inq_1", "completed")], BASE, policy=policy).next_action == "wait"
    assert decide([inquiry("inq_1", "expired")], BASE).decision == "verify"  # the default is untouched


def test_custom_block_lengths_decide_expiry():
    policy = Policy(block_days={1: 1, 2: 30})
    declined, latest_ = inquiry("inq_1", "declined", BASE), inquiry("inq_2", "approved", BASE + DAY / 2)
    assert decide([declined, latest_], BASE + DAY - MICROSECOND, policy=policy).decision == "deny"
    assert decide([declined, latest_], BASE + DAY, policy=policy).decision == "allow"


# --- properties ------------------------------------------------------------------------------------------

moments = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))
facts = st.builds(
    InquiryFacts,
    id=st.sampled_from([f"inq_{n}" for n in range(10)]),
    status=st.sampled_from(INQUIRY_STATUSES),
    created_at=moments.map(iso),
    status_since=moments.map(iso),
)
DECISION_VALUES = {"allow", "deny", "review", "verify", "resume"}
NEXT_ACTIONS = {"none", "create_inquiry", "resume_inquiry", "wait"}


@given(st.lists(facts, max_size=8, unique_by=lambda f: f.id), moments, st.booleans(), st.booleans())
def test_decide_properties(inquiries, now, duplicate_account, retry_after_block):
    policy = Policy(retry_after_block=retry_after_block)
    result = decide(inquiries, now, duplicate_account, policy)
    negative = [i for i in inquiries if i.status in ("failed", "declined")]
    assert result.strikes == len(negative)
    assert result.decision in DECISION_VALUES and result.next_action in NEXT_ACTIONS
    # independent view of the block: from the latest negative decision, 7/30 days, then permanent
    if negative:
        since = max(datetime.fromisoformat(i.status_since) for i in negative)
        days = {1: 7, 2: 30}.get(len(negative))
        in_force = days is None or now < since + timedelta(days=days)
        assert result.blocked(now) == in_force
    else:
        assert result.block is None
    if result.blocked(now):
        assert (result.decision, result.next_action) == ("deny", "none")
    elif result.status in ("failed", "declined"):  # no block in force: the block has ended
        assert result.decision == ("verify" if retry_after_block else "deny")
    if duplicate_account:
        assert result.decision != "allow"
    assert decide(list(reversed(inquiries)), now, duplicate_account, policy) == result
