"""The inquiry state machine. Pure: snapshots in, verdicts out; no database, Redis or Flask.

Every Persona event carries a snapshot of its object, and events arrive in any order and more than
once. An object's state is therefore its newest snapshot, ordered by the event's `created-at`
(milliseconds), then by status rank (a decision outranks `completed`, which outranks `pending`, which
outranks `created`), then by event id, so that any two distinct snapshots compare the same way in
every delivery order. The transition table does not gate anything (Persona is the source of truth):
it only says whether a move was expected, for the record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

INQUIRY_STATUSES = ("created", "pending", "completed", "failed", "expired", "needs_review", "approved", "declined")
VERIFICATION_STATUSES = (
    "initiated",
    "confirmed",
    "submitted",
    "passed",
    "failed",
    "requires_retry",
    "canceled",
    "skipped",
)
NEGATIVE_STATUSES = frozenset({"failed", "declined"})

# Ties at the same millisecond go to the status further along the lifecycle.
STATUS_RANK = {
    "created": 0,
    "pending": 1,
    "expired": 2,
    "completed": 3,
    "needs_review": 4,
    "failed": 5,
    "approved": 5,
    "declined": 5,
    # verifications
    "initiated": 0,
    "confirmed": 1,
    "submitted": 2,
    "requires_retry": 3,
    "canceled": 4,
    "skipped": 4,
    "passed": 5,
}

# The moves Persona's lifecycle makes; anything else is applied when newer but recorded `unexpected`.
TRANSITIONS: dict[str | None, frozenset[str]] = {
    None: frozenset(INQUIRY_STATUSES),
    "created": frozenset({"pending", "completed", "failed", "expired"}),
    "pending": frozenset({"completed", "failed", "expired", "needs_review"}),
    "expired": frozenset({"pending"}),
    "completed": frozenset({"approved", "declined", "needs_review"}),
    "needs_review": frozenset({"approved", "declined"}),
    "approved": frozenset({"declined"}),
    "declined": frozenset({"approved"}),
    "failed": frozenset({"declined", "approved"}),
}

APPLIED = "applied"
UNEXPECTED = "unexpected"
STALE = "stale"
IGNORED = "ignored"


@dataclass(frozen=True, order=True)
class Snapshot:
    """One event's view of an object; the field order is the comparison order."""

    at: str  # the event's created-at, ISO-8601 UTC with milliseconds (`...297Z`): sorts as text
    rank: int
    event_id: str
    status: str

    @classmethod
    def of(cls, at: str, status: str, event_id: str) -> Snapshot:
        return cls(at, STATUS_RANK.get(status, -1), event_id, status)


@dataclass(frozen=True)
class Verdict:
    outcome: str  # applied | unexpected | stale | ignored
    before: str | None
    after: str | None

    @property
    def changes_state(self) -> bool:
        return self.outcome in (APPLIED, UNEXPECTED)


def is_expected(before: str | None, after: str) -> bool:
    return before == after or after in TRANSITIONS.get(before, frozenset())


def judge_inquiry(newest: Snapshot | None, incoming: Snapshot) -> Verdict:
    """What `incoming` does to an inquiry whose newest applied snapshot is `newest`."""
    before = newest.status if newest else None
    if incoming.status not in INQUIRY_STATUSES:
        return Verdict(IGNORED, before, before)
    return _judge(newest, incoming, is_expected(before, incoming.status))


def judge_verification(newest: Snapshot | None, incoming: Snapshot) -> Verdict:
    """Verifications have no transition table: a known status, when newer, is simply applied."""
    before = newest.status if newest else None
    if incoming.status not in VERIFICATION_STATUSES:
        return Verdict(IGNORED, before, before)
    return _judge(newest, incoming, expected=True)


def _judge(newest: Snapshot | None, incoming: Snapshot, expected: bool) -> Verdict:
    before = newest.status if newest else None
    if newest is not None and incoming <= newest:
        return Verdict(STALE, before, before)
    return Verdict(APPLIED if expected else UNEXPECTED, before, incoming.status)


def status_since(snapshots: Iterable[Snapshot]) -> str | None:
    """When an inquiry entered its current status: the event time of the first snapshot of the
    newest unbroken run of that status. Derived from all snapshots, so any delivery order agrees."""
    run = status_run(snapshots)
    return run.start.at if run else None


@dataclass(frozen=True)
class StatusRun:
    """The newest unbroken run of an inquiry's current status, as far as it needs remembering: its first
    snapshot (`start`, whose time is the status' `since`) and the newest snapshot of another status before
    it (`preceding`; None when the run goes back to the inquiry's first snapshot). Kept on the inquiry row,
    it lets each event move `since` in constant time, whatever order events come in (`advance_run`)."""

    start: Snapshot
    preceding: Snapshot | None


def status_run(snapshots: Iterable[Snapshot]) -> StatusRun | None:
    """The run computed from all of an inquiry's snapshots; None when none has a known status."""
    known = sorted(s for s in snapshots if s.status in INQUIRY_STATUSES)
    if not known:
        return None
    first = len(known) - 1
    while first > 0 and known[first - 1].status == known[-1].status:
        first -= 1
    return StatusRun(known[first], known[first - 1] if first else None)


def advance_run(
    run: StatusRun | None, newest: Snapshot | None, incoming: Snapshot, first_after: Callable[[Snapshot], Snapshot]
) -> StatusRun | None:
    """The run once `incoming` is known too, given the run and the newest snapshot before it.

    Equal to `status_run` of all the snapshots, in every delivery order. Only a late snapshot of another
    status that lands inside the run needs more than the run: the run then starts at the first known
    snapshot after it, which `first_after` looks up (the caller's only query, and a rare one)."""
    if incoming.status not in INQUIRY_STATUSES or incoming == newest:
        return run
    if run is None or newest is None:
        return StatusRun(incoming, None)
    if incoming > newest:
        return run if incoming.status == newest.status else StatusRun(incoming, newest)
    after_preceding = run.preceding is None or incoming > run.preceding
    if incoming.status == newest.status:
        return StatusRun(incoming, run.preceding) if incoming < run.start and after_preceding else run
    if incoming > run.start:
        return StatusRun(first_after(incoming), incoming)
    return StatusRun(run.start, incoming) if after_preceding else run
