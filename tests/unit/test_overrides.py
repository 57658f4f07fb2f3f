"""Operators' overrides in the pure policy (docs/contracts.md §7): lift a block, forgive an inquiry, clear a
duplicate; strikes, the block, the decision and Verisoul's target follow, and later events count as usual."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from domain.overrides import NO_OVERRIDES, Overrides
from domain.policy import InquiryFacts, block_for, decide
from domain.summary import summarise
from domain.sync_plan import ENROLL, UNBLOCK, Known, plan, target_for
from domain.times import iso_millis

T0 = datetime(2025, 3, 1, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def inquiry(inquiry_id: str, status: str, created: float, since: float | None = None, forgiven=False) -> InquiryFacts:
    at = iso_millis(day(created))
    return InquiryFacts(inquiry_id, status, at, iso_millis(day(since if since is not None else created)), forgiven)


DECLINED = inquiry("inq_1", "declined", 0)
RETRY = inquiry("inq_2", "pending", 1)  # the user tries again while blocked


def test_lifting_a_block_in_force_ends_it_then_and_keeps_the_strike():
    lifted = Overrides(block_lifted_at=day(2))
    before = decide([DECLINED, RETRY], day(3))
    after = decide([DECLINED, RETRY], day(3), overrides=lifted)
    assert (before.decision, before.strikes) == ("deny", 1)
    assert (after.decision, after.next_action, after.strikes) == ("resume", "resume_inquiry", 1)
    assert after.block is not None and after.block.until == day(2)
    assert decide([DECLINED, RETRY], day(1.5), overrides=lifted).decision == "deny"  # still in force before it


def test_a_negative_event_after_a_lift_counts_as_usual():
    lifted = Overrides(block_lifted_at=day(2))
    second = inquiry("inq_2", "declined", 1, since=5)
    block = block_for([DECLINED, second], overrides=lifted)
    assert block is not None and (block.since, block.until) == (day(5), day(35))  # second strike: 30 days
    assert decide([DECLINED, second], day(6), overrides=lifted).decision == "deny"


def test_a_lift_ends_the_block_it_lifted_not_one_whose_decision_was_made_before_it_but_recorded_after():
    """The operator lifted the block they saw (from day 0); a second decline made on day 1.5 and delivered after the
    lift on day 2 starts a block of its own (found by RETRY_AFTER_BLOCK, under which the user was let verify)."""
    lifted = Overrides(block_lifted_at=day(2), block_lifted_since=day(0))
    late = inquiry("inq_2", "declined", 1, since=1.5)
    block = block_for([DECLINED, late], overrides=lifted)
    assert block is not None and (block.since, block.until) == (day(1.5), day(31.5))
    assert decide([DECLINED, late], day(3), overrides=lifted).decision == "deny"
    assert block_for([DECLINED], overrides=lifted) == block_for([DECLINED], overrides=Overrides(block_lifted_at=day(2)))


def test_a_lift_before_a_block_began_ends_nothing():
    block = block_for([DECLINED], overrides=Overrides(block_lifted_at=day(-1)))
    assert block is not None and block.until == day(7)


def test_a_lifted_permanent_block_is_no_longer_permanent_and_a_fourth_strike_makes_it_so_again():
    three = [inquiry(f"inq_{n}", "failed", n) for n in range(3)]
    lifted = Overrides(block_lifted_at=day(4))
    assert target_for(three).permanent and not target_for(three, overrides=lifted).permanent
    assert not target_for(three, overrides=lifted).blocked(day(5))
    fourth = [*three, inquiry("inq_3", "declined", 6)]
    assert target_for(fourth, overrides=lifted).permanent


def test_forgiving_the_only_decline_removes_the_strike_the_block_and_lets_the_user_verify_again():
    forgiven = inquiry("inq_1", "declined", 0, forgiven=True)
    decision = decide([forgiven], day(1))
    assert (decision.decision, decision.next_action, decision.strikes, decision.block) == (
        "verify",
        "create_inquiry",
        0,
        None,
    )
    assert not target_for([forgiven]).blocked(day(1))


def test_forgiving_one_of_two_strikes_leaves_a_first_strike_block_from_the_other():
    first = inquiry("inq_1", "declined", 0)
    second = inquiry("inq_2", "failed", 10, forgiven=True)
    block = block_for([first, second])
    assert block is not None and (block.since, block.until) == (day(0), day(7))
    assert decide([first, second], day(8)).strikes == 1


def test_clearing_a_duplicate_allows_and_enrolls_without_the_linked_account_check():
    approved = [inquiry("inq_1", "approved", 0)]
    cleared = Overrides(duplicate_cleared=True)
    assert decide(approved, day(1), duplicate_account=True).decision == "review"
    assert decide(approved, day(1), duplicate_account=True, overrides=cleared).decision == "allow"
    flagged = Known(enrolled=False, blocked=False, duplicate_account=True)
    assert plan(target_for(approved), flagged, day(1)) == []
    assert plan(target_for(approved, overrides=cleared), flagged, day(1)) == [ENROLL]
    summary = summarise(approved, day(1), duplicate_account=True, overrides=cleared)
    assert summary.verisoul_target()["enrolled"] is True


def test_a_lift_makes_the_sync_plan_unblock():
    blocked = Known(enrolled=False, blocked=True)
    assert plan(target_for([DECLINED]), blocked, day(3)) == []
    assert plan(target_for([DECLINED], overrides=Overrides(block_lifted_at=day(2))), blocked, day(3)) == [UNBLOCK]


statuses = st.sampled_from(["created", "pending", "completed", "approved", "failed", "declined", "expired"])
inquiry_sets = st.lists(st.tuples(statuses, st.integers(0, 60), st.integers(0, 30), st.booleans()), max_size=6).map(
    lambda rows: [inquiry(f"inq_{n}", s, c, c + d, f) for n, (s, c, d, f) in enumerate(rows)]
)
overrides = st.builds(Overrides, st.one_of(st.none(), st.integers(0, 120).map(day)), st.booleans())


@given(inquiry_sets, overrides, st.integers(0, 150).map(day))
def test_overrides_never_add_a_strike_or_lengthen_a_block(inquiries, chosen, now):
    unforgiven = [InquiryFacts(i.id, i.status, i.created_at, i.status_since) for i in inquiries]
    plain, overridden = decide(unforgiven, now), decide(inquiries, now, overrides=chosen)
    assert overridden.strikes <= plain.strikes
    if overridden.blocked(now):
        assert plain.blocked(now)
    assert decide(inquiries, now, overrides=NO_OVERRIDES).strikes == sum(
        1 for i in inquiries if i.status in ("failed", "declined") and not i.forgiven
    )
