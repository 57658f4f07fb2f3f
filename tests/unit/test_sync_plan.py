"""What Verisoul should say about a user and the calls that take it there (domain/sync_plan.py, docs/contracts.md §5)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.state_machine import INQUIRY_STATUSES
from domain.sync_plan import BLOCK, ENROLL, UNBLOCK, Known, Target, plan, target_for
from tests.helpers.inquiry_facts import BASE, DAY, MICROSECOND, inquiry, negatives

LATER = BASE + 3650 * DAY  # long after any timed block has run out


# --- target_for: the docs/contracts.md §5 rows ---------------------------------------------------------------------

UNCHANGED = Target(enrolled=False, blocked_until=None, permanent=False)  # no enroll, no block
ROWS = [  # latest inquiry status (the only inquiry here, decided at BASE) → target
    ("none", UNCHANGED),
    ("created", UNCHANGED),
    ("pending", UNCHANGED),
    ("expired", UNCHANGED),
    ("completed", Target(enrolled=True, blocked_until=None, permanent=False)),
    ("approved", Target(enrolled=True, blocked_until=None, permanent=False)),
    ("needs_review", UNCHANGED),
    ("failed", Target(enrolled=False, blocked_until=BASE + 7 * DAY, permanent=False)),
    ("declined", Target(enrolled=False, blocked_until=BASE + 7 * DAY, permanent=False)),
]


@pytest.mark.parametrize("status, expected", ROWS)
def test_target_for_each_status_row(status, expected):
    inquiries = [] if status == "none" else [inquiry("inq_1", status)]
    assert target_for(inquiries) == expected


@pytest.mark.parametrize("status", ["none", "created", "pending", "expired", "needs_review"])
def test_unchanged_rows_leave_an_enrolled_account_alone(status):
    inquiries = [] if status == "none" else [inquiry("inq_1", status)]
    assert plan(target_for(inquiries), Known(enrolled=True), BASE) == []


def test_rows_cover_every_inquiry_status():
    assert {status for status, _ in ROWS} == {"none", *INQUIRY_STATUSES}


@pytest.mark.parametrize(
    "strikes, blocked_until, permanent",
    [
        (0, None, False),
        (1, BASE + 1 * DAY + 7 * DAY, False),
        (2, BASE + 2 * DAY + 30 * DAY, False),
        (3, None, True),
        (4, None, True),
    ],
)
def test_block_grows_with_strikes_from_the_latest_negative_decision(strikes, blocked_until, permanent):
    target = target_for(negatives(strikes))
    assert (target.blocked_until, target.permanent) == (blocked_until, permanent)
    assert target.blocked(LATER) is permanent


def test_block_counts_from_the_latest_negative_status_since_not_the_newest_inquiry():
    inquiries = [
        inquiry("inq_1", "declined", created=BASE, since=BASE + 5 * DAY),
        inquiry("inq_2", "failed", created=BASE + DAY, since=BASE + 2 * DAY),
        inquiry("inq_3", "pending", created=BASE + 9 * DAY),
    ]
    assert target_for(inquiries).blocked_until == BASE + 5 * DAY + 30 * DAY


def test_only_currently_negative_inquiries_are_strikes():
    reversed_decline = inquiry("inq_1", "approved", since=BASE + DAY)
    inquiries = [reversed_decline, *negatives(2)[1:]]  # one failed/declined left
    target = target_for(inquiries)
    assert target == Target(enrolled=True, blocked_until=BASE + 2 * DAY + 7 * DAY, permanent=False)


def test_permanent_target_is_blocked_at_any_time():
    target = Target(enrolled=False, blocked_until=None, permanent=True)
    assert target.blocked(BASE) and target.blocked(LATER)


def test_target_without_block_is_never_blocked():
    assert not UNCHANGED.blocked(BASE)


# --- plan: reversals, expiry, duplicates ----------------------------------------------------------------


def test_reviewer_reversal_declined_to_approved_unblocks_then_enrolls():
    target = target_for([inquiry("inq_1", "approved", since=BASE + DAY)])
    known = Known(enrolled=False, blocked=True)
    assert plan(target, known, BASE + 2 * DAY) == [UNBLOCK, ENROLL]


def test_reviewer_reversal_approved_to_declined_blocks():
    target = target_for([inquiry("inq_1", "declined", since=BASE + DAY)])
    known = Known(enrolled=True, blocked=False)
    assert plan(target, known, BASE + DAY) == [BLOCK]


def test_block_still_in_force_one_microsecond_before_expiry():
    target = target_for(negatives(1))
    before = target.blocked_until - MICROSECOND
    assert target.blocked(before)
    assert plan(target, Known(blocked=True), before) == []
    assert plan(target, Known(blocked=False), before) == [BLOCK]


def test_block_lifted_at_expiry():
    target = target_for(negatives(1))
    assert not target.blocked(target.blocked_until)
    assert plan(target, Known(blocked=True), target.blocked_until) == [UNBLOCK]


def test_expired_block_is_not_reapplied():
    """A replay after expiry computes the same, already-past expiry: nothing to block."""
    target = target_for(negatives(2))
    assert plan(target, Known(blocked=False), target.blocked_until + MICROSECOND) == []


def test_permanent_block_is_never_lifted():
    assert plan(target_for(negatives(3)), Known(blocked=True), LATER) == []


def test_duplicate_account_suppresses_enroll():
    target = target_for([inquiry("inq_1", "approved")])
    assert plan(target, Known(duplicate_account=True), BASE) == []
    assert plan(target, Known(blocked=True, duplicate_account=True), BASE) == [UNBLOCK]


@pytest.mark.parametrize(
    "target, known",
    [
        (UNCHANGED, Known()),
        (target_for([inquiry("inq_1", "approved")]), Known(enrolled=True)),
        (target_for(negatives(1)), Known(blocked=True)),
        (target_for(negatives(3)), Known(enrolled=True, blocked=True)),
    ],
)
def test_converged_state_needs_no_calls(target, known):
    assert plan(target, known, BASE + 2 * DAY) == []


def test_all_three_steps_come_in_order():
    """Unblock, enroll, block: the only order in which a reversal can be replayed safely."""
    target = Target(enrolled=True, blocked_until=BASE + DAY, permanent=False)
    assert plan(target, Known(), BASE) == [ENROLL, BLOCK]
    assert plan(target, Known(blocked=True), BASE + DAY) == [UNBLOCK, ENROLL]


# --- properties -----------------------------------------------------------------------------------------

moments = st.integers(min_value=0, max_value=60 * 24 * 90).map(lambda minutes: BASE + timedelta(minutes=minutes))
facts = st.builds(
    lambda n, status, created, since: inquiry(f"inq_{n}", status, created, since),
    st.integers(0, 1_000),
    st.sampled_from(INQUIRY_STATUSES),
    moments,
    moments,
)
inquiry_lists = st.lists(facts, max_size=6, unique_by=lambda facts: facts.id)


@given(inquiry_lists.flatmap(lambda items: st.tuples(st.just(items), st.permutations(items))))
def test_target_is_independent_of_inquiry_order(pair):
    inquiries, shuffled = pair
    assert target_for(shuffled) == target_for(inquiries)


targets = st.builds(
    Target,
    enrolled=st.booleans(),
    blocked_until=st.none() | moments,
    permanent=st.booleans(),
)
knowns = st.builds(Known, enrolled=st.booleans(), blocked=st.booleans(), duplicate_account=st.booleans())
APPLY = {
    UNBLOCK: lambda known: Known(known.enrolled, False, known.duplicate_account),
    ENROLL: lambda known: Known(True, known.blocked, known.duplicate_account),
    BLOCK: lambda known: Known(known.enrolled, True, known.duplicate_account),
}


@given(targets | inquiry_lists.map(target_for), knowns, moments)
def test_applying_the_plan_converges(target, known, now):
    steps = plan(target, known, now)
    assert len(steps) == len(set(steps))
    for step in steps:
        known = APPLY[step](known)
    assert plan(target, known, now) == []
    assert known.blocked == target.blocked(now)
    assert known.enrolled or not target.enrolled or known.duplicate_account
