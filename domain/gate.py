"""The inquiry gate's answer (docs/contracts.md §8): what the host should do before it shows Persona to a user for
one template. Pure: the user's decision and the template's inquiries in, an answer out; the route does the I/O
(Persona's create and resume, recording the created inquiry under a lock).

Persona's advice (docs/persona.md, "One inquiry per user"): completed or approved, let the user in; needs_review,
offer no new inquiry; created or pending, resume it; expired, resume it or create another; none, create one.
Failed or declined: no new inquiry while the user's block is in force; after a temporary block, a new one
(§5's revision, RETRY_AFTER_BLOCK), or none for good when that setting is false. The user's block applies to
every template.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.events import text_problem
from domain.policy import RETRY_AFTER_BLOCK, Decision, InquiryFacts, latest
from domain.times import parse_time

ALLOW, RESUME, CREATE, DENY, REVIEW = "allow", "resume", "create", "deny", "review"
OPEN_STATUSES = frozenset({"created", "pending"})
PASSED_STATUSES = frozenset({"completed", "approved"})
FAILED_STATUSES = frozenset({"failed", "declined"})


def reference_problem(reference_id: str) -> str | None:
    """Why the gate refuses `reference_id` (None when it takes it). The gate is where a host's id first reaches
    Persona, whose webhooks then carry it back: an id the webhook would refuse (domain/events.py `text_problem`)
    would have its inquiry's events refused for the two days Persona retries them. A blank id is a host's bug, and
    U+FFFD is what invalid UTF-8 in the path decodes to: two different byte strings would name one user."""
    problem = text_problem(reference_id)
    if problem is None and not reference_id.strip():
        problem = "must not be blank"
    if problem is None and "\ufffd" in reference_id:
        problem = "must be valid UTF-8 (U+FFFD found)"
    return problem


@dataclass(frozen=True)
class GateAnswer:
    action: str  # allow | resume | create | deny | review
    inquiry_id: str | None = None  # the inquiry to resume
    reason: str | None = None  # why deny
    blocked_until: datetime | None = None  # a deny's block end (None: for good, or no block)


def answer(
    decision: Decision,
    template_inquiries: list[InquiryFacts],
    now: datetime,
    resume_expired_within: timedelta,
    redacted: frozenset[str] = frozenset(),
    retry_after_block: bool = RETRY_AFTER_BLOCK,
) -> GateAnswer:
    """The gate's answer for one template. `decision` is the user's (docs/contracts.md §5), `template_inquiries`
    the user's inquiries of that template, `redacted` the ids Persona redacted (never resumed). A failed or
    declined template gets a new inquiry once no block is in force, unless `retry_after_block` is false."""
    if decision.blocked(now):
        block = decision.block
        assert block is not None
        reason = "blocked for good" if block.permanent else "blocked after failed verifications"
        return GateAnswer(DENY, reason=reason, blocked_until=block.until)
    newest = latest(template_inquiries)
    if newest is None:
        return GateAnswer(CREATE)
    if newest.status in PASSED_STATUSES:
        return GateAnswer(ALLOW)
    if newest.status == "needs_review":
        return GateAnswer(REVIEW)
    if newest.status in FAILED_STATUSES and not newest.forgiven and not retry_after_block:
        return GateAnswer(DENY, reason=f"the latest inquiry was {newest.status}")
    resumable = newest.id not in redacted and (
        newest.status in OPEN_STATUSES
        or (newest.status == "expired" and now - parse_time(newest.status_since) < resume_expired_within)
    )
    return GateAnswer(RESUME, inquiry_id=newest.id) if resumable else GateAnswer(CREATE)
