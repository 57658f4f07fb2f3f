"""The inquiry state machine (domain/state_machine.py): newest snapshot wins, whatever the delivery order."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.state_machine import (
    APPLIED,
    IGNORED,
    INQUIRY_STATUSES,
    STALE,
    TRANSITIONS,
    UNEXPECTED,
    VERIFICATION_STATUSES,
    Snapshot,
    Verdict,
    judge_inquiry,
    judge_verification,
    status_since,
)

BASE = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def at(ms: int) -> str:
    """An event created-at `ms` milliseconds after BASE, in Persona's form (`...123Z`)."""
    return (BASE + timedelta(milliseconds=ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def snap(status: str, ms: int, event_id: str | None = None) -> Snapshot:
    return Snapshot.of(at(ms), status, event_id or f"evt_{status}_{ms}")


def fold(snapshots, judge=judge_inquiry) -> Snapshot | None:
    """What a worker keeps: the incoming snapshot whenever the verdict changes state."""
    newest = None
    for incoming in snapshots:
        if judge(newest, incoming).changes_state:
            newest = incoming
    return newest


# --- transitions -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("before, after", list(itertools.product(INQUIRY_STATUSES, repeat=2)))
def test_newer_snapshot_is_applied_and_judged_against_the_table(before, after):
    expected = APPLIED if after == before or after in TRANSITIONS[before] else UNEXPECTED
    assert judge_inquiry(snap(before, 0), snap(after, 1)) == Verdict(expected, before, after)


@pytest.mark.parametrize(
    "before, after",
    [
        ("expired", "pending"),
        ("completed", "approved"),
        ("completed", "declined"),
        ("completed", "needs_review"),
        ("needs_review", "approved"),
        ("needs_review", "declined"),
        ("approved", "declined"),
        ("declined", "approved"),
        ("failed", "declined"),
        ("failed", "approved"),
        ("created", "pending"),
        ("pending", "completed"),
    ],
)
def test_persona_lifecycle_moves_are_expected(before, after):
    assert after in TRANSITIONS[before]
    assert judge_inquiry(snap(before, 0), snap(after, 1)).outcome == APPLIED


@pytest.mark.parametrize(
    "before, after",
    [
        ("approved", "created"),
        ("declined", "pending"),
        ("completed", "created"),
        ("needs_review", "pending"),
        ("approved", "expired"),
        ("failed", "created"),
    ],
)
def test_backward_moves_are_applied_but_recorded_unexpected(before, after):
    assert judge_inquiry(snap(before, 0), snap(after, 1)) == Verdict(UNEXPECTED, before, after)


@pytest.mark.parametrize("status", INQUIRY_STATUSES)
def test_first_snapshot_of_an_inquiry_is_applied(status):
    assert judge_inquiry(None, snap(status, 0)) == Verdict(APPLIED, None, status)


# --- stale and duplicate snapshots -----------------------------------------------------------------------


@pytest.mark.parametrize("older", INQUIRY_STATUSES)
def test_older_snapshot_is_stale_and_changes_nothing(older):
    verdict = judge_inquiry(snap("approved", 1000), snap(older, 999))
    assert verdict == Verdict(STALE, "approved", "approved")
    assert not verdict.changes_state


@pytest.mark.parametrize("status", INQUIRY_STATUSES)
def test_redelivered_snapshot_is_stale(status):
    assert judge_inquiry(snap(status, 0, "evt_1"), snap(status, 0, "evt_1")) == Verdict(STALE, status, status)


def test_time_outranks_status_rank():
    """A decision 1 ms older loses to a later `created`: Persona is the source of truth."""
    assert judge_inquiry(snap("created", 1), snap("approved", 0)).outcome == STALE
    assert judge_inquiry(snap("approved", 0), snap("created", 1)) == Verdict(UNEXPECTED, "approved", "created")


# --- ties at the same millisecond ------------------------------------------------------------------------

TIERS = [("created",), ("pending",), ("completed",), ("approved", "declined", "failed")]
TIE_PAIRS = [(low, high) for i, lows in enumerate(TIERS) for highs in TIERS[i + 1 :] for low in lows for high in highs]


@pytest.mark.parametrize("low, high", TIE_PAIRS)
def test_same_millisecond_goes_to_the_status_further_along(low, high):
    # event ids favour `low`, so only the rank can make `high` win
    low_snap, high_snap = snap(low, 0, "evt_z"), snap(high, 0, "evt_a")
    assert judge_inquiry(low_snap, high_snap).after == high
    assert judge_inquiry(high_snap, low_snap) == Verdict(STALE, high, high)
    assert fold([low_snap, high_snap]) == fold([high_snap, low_snap]) == high_snap


@pytest.mark.parametrize("first, second", [("approved", "declined"), ("declined", "approved"), ("failed", "declined")])
def test_same_millisecond_and_rank_is_decided_by_event_id(first, second):
    a, b = snap(first, 0, "evt_a"), snap(second, 0, "evt_b")
    winner = fold([a, b])
    assert winner == fold([b, a])
    loser = a if winner == b else b
    assert judge_inquiry(winner, loser).outcome == STALE
    assert judge_inquiry(loser, winner).changes_state


# --- any delivery order, any number of deliveries --------------------------------------------------------

REVIEWED = [
    snap("created", 0),
    snap("pending", 10),
    snap("completed", 20),
    snap("needs_review", 30),
    snap("approved", 40),
]
REVERSED = [snap("created", 0), snap("pending", 10), snap("completed", 20), snap("approved", 30), snap("declined", 40)]
# completed and approved in the same millisecond, then a redaction-style re-send of approved
TIED = [snap("created", 0), snap("pending", 10), snap("completed", 20), snap("approved", 20), snap("approved", 90)]
HISTORIES = {
    "reviewed": (REVIEWED, "approved", at(40)),
    "reversed": (REVERSED, "declined", at(40)),
    "tied": (TIED, "approved", at(20)),
}


@pytest.mark.parametrize("order", list(itertools.permutations(range(5))))
@pytest.mark.parametrize("name", HISTORIES)
def test_every_delivery_order_ends_in_the_same_state(name, order):
    history, final_status, since = HISTORIES[name]
    delivered = [history[i] for i in order]
    redelivered = delivered + delivered[:2] + [delivered[-1]]
    twice = [s for s in delivered for _ in range(2)]
    for stream in (delivered, redelivered, twice):
        assert fold(stream).status == final_status
        assert status_since(stream) == since


snapshots = st.builds(
    Snapshot.of,
    at=st.integers(0, 5).map(at),  # few distinct times: plenty of ties
    status=st.sampled_from(INQUIRY_STATUSES + ("something_new", "")),
    event_id=st.sampled_from(["evt_a", "evt_b", "evt_c"]),
)


@given(st.lists(snapshots, min_size=1, max_size=12), st.randoms(use_true_random=False))
def test_fold_is_the_newest_known_snapshot_in_any_order(stream, random):
    shuffled = random.sample(stream, len(stream))
    known = [s for s in stream if s.status in INQUIRY_STATUSES]
    assert fold(stream) == fold(shuffled) == max(known, default=None)
    assert status_since(stream) == status_since(shuffled)


# --- unknown values --------------------------------------------------------------------------------------

UNKNOWN = ["something_new", "", "needs-review", "Approved", "APPROVED", " approved", "passed"]


@pytest.mark.parametrize("status", UNKNOWN)
@pytest.mark.parametrize("newest", [None, snap("pending", 0)])
def test_unknown_inquiry_status_is_ignored(newest, status):
    before = newest.status if newest else None
    assert judge_inquiry(newest, snap(status, 1)) == Verdict(IGNORED, before, before)


@pytest.mark.parametrize("status", VERIFICATION_STATUSES)
def test_known_verification_status_is_applied_when_newer(status):
    older, newer = snap("initiated", 0), snap(status, 1)
    assert judge_verification(older, newer) == Verdict(APPLIED, "initiated", status)
    assert judge_verification(newer, older) == Verdict(STALE, status, status)
    assert judge_verification(None, newer) == Verdict(APPLIED, None, status)


@pytest.mark.parametrize("status", ["something_new", "", "requires-retry", "approved", "completed"])
def test_unknown_verification_status_is_ignored(status):
    assert judge_verification(snap("submitted", 0), snap(status, 1)) == Verdict(IGNORED, "submitted", "submitted")
    assert judge_verification(None, snap(status, 1)) == Verdict(IGNORED, None, None)


# --- status_since ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "stream, since",
    [
        ([], None),
        ([snap("something_new", 0)], None),
        ([snap("declined", 0)], at(0)),
        ([snap("completed", 0), snap("declined", 100), snap("declined", 200)], at(100)),  # re-send keeps t1
        ([snap("declined", 100), snap("approved", 200), snap("declined", 300)], at(300)),  # interrupted run
        ([snap("declined", 100), snap("something_new", 200), snap("declined", 300)], at(100)),  # unknown: no break
        ([snap("declined", 300), snap("declined", 100), snap("approved", 200)], at(300)),  # arrival order irrelevant
    ],
)
def test_status_since(stream, since):
    assert status_since(stream) == since


def test_status_since_accepts_any_iterable():
    assert status_since(iter([snap("pending", 5), snap("pending", 7)])) == at(5)
