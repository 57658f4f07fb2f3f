"""The decision policy (docs/contracts.md §5). Pure: a user's inquiries and a clock in, a decision out.

Nothing here is a counter: strikes, the block and the decision are recomputed from the inquiries'
current statuses every time, so a retried or replayed event can never count twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from domain.overrides import NO_OVERRIDES, Overrides
from domain.state_machine import NEGATIVE_STATUSES
from domain.times import parse_time

# status of the latest inquiry → (decision, next_action); "none" means the user has no inquiry.
DECISIONS = {
    "none": ("verify", "create_inquiry"),
    "created": ("resume", "resume_inquiry"),
    "pending": ("resume", "resume_inquiry"),
    "expired": ("verify", "create_inquiry"),
    "completed": ("allow", "none"),
    "approved": ("allow", "none"),
    "needs_review": ("review", "wait"),
    "failed": ("deny", "none"),
    "declined": ("deny", "none"),
}
# Every decision the record can give (a block in force denies; a flagged duplicate is reviewed).
DECISION_NAMES = frozenset(decision for decision, _ in DECISIONS.values()) | {"deny", "review"}
# Block length by strike count; from PERMANENT_AT strikes on the block never ends.
BLOCK_DAYS = {1: 7, 2: 30}
PERMANENT_AT = 3
# §5 as revised: once a temporary block has ended, a user whose latest inquiry failed or was declined may verify
# again (the gate creates the new inquiry, and a further failure is the next strike). False keeps them at deny.
RETRY_AFTER_BLOCK = True
RETRY = ("verify", "create_inquiry")


@dataclass(frozen=True)
class InquiryFacts:
    """What the policy needs of one inquiry."""

    id: str
    status: str
    created_at: str  # the inquiry's own created-at (ISO-8601 UTC), which makes it the latest or not
    status_since: str  # event time at which it entered `status`
    forgiven: bool = False  # an operator forgave it (forgive_inquiry): its failure or decline is no strike

    @property
    def strike(self) -> bool:
        return self.status in NEGATIVE_STATUSES and not self.forgiven


@dataclass(frozen=True)
class Block:
    since: datetime
    until: datetime | None  # None: permanent

    @property
    def permanent(self) -> bool:
        return self.until is None

    def in_force(self, now: datetime) -> bool:
        return self.until is None or now < self.until


@dataclass(frozen=True)
class Policy:
    decisions: dict = field(default_factory=lambda: dict(DECISIONS))
    block_days: dict = field(default_factory=lambda: dict(BLOCK_DAYS))
    permanent_at: int = PERMANENT_AT
    retry_after_block: bool = RETRY_AFTER_BLOCK

    def __post_init__(self):
        missing = [n for n in range(1, self.permanent_at) if n not in self.block_days]
        if self.permanent_at < 1 or missing:
            raise ValueError(f"block_days needs a length for every strike count below permanent_at, missing {missing}")


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class Decision:
    status: str
    inquiry_id: str | None
    decision: str
    next_action: str
    strikes: int
    block: Block | None
    unblocked: str  # the decision whenever no block is in force: with the block's end, the decision at any time

    def blocked(self, now: datetime) -> bool:
        return self.block is not None and self.block.in_force(now)


def latest(inquiries: list[InquiryFacts]) -> InquiryFacts | None:
    """The user's latest inquiry, by the inquiry's created-at (ties by id, for a stable answer)."""
    return max(inquiries, key=lambda inquiry: (inquiry.created_at, inquiry.id), default=None)


def block_for(
    inquiries: list[InquiryFacts], policy: Policy = DEFAULT_POLICY, overrides: Overrides = NO_OVERRIDES
) -> Block | None:
    """Strikes are inquiries currently failed or declined and not forgiven; the block runs from the latest of
    those decisions, and ends early when an operator lifted it while it was in force."""
    strikes = [inquiry for inquiry in inquiries if inquiry.strike]
    if not strikes:
        return None
    since = parse_time(max(inquiry.status_since for inquiry in strikes))
    until = None if len(strikes) >= policy.permanent_at else since + timedelta(days=policy.block_days[len(strikes)])
    lifted = overrides.lifted(since)
    if lifted is not None and (until is None or lifted < until):
        until = lifted
    return Block(since, until)


def decide(
    inquiries: list[InquiryFacts],
    now: datetime,
    duplicate_account: bool = False,
    policy: Policy = DEFAULT_POLICY,
    overrides: Overrides = NO_OVERRIDES,
) -> Decision:
    newest = latest(inquiries)
    status = newest.status if newest else "none"
    strikes = sum(1 for inquiry in inquiries if inquiry.strike)
    block = block_for(inquiries, policy, overrides)
    # A forgiven failure or decline is not held against the user: they may verify again.
    decision, next_action = policy.decisions["none" if newest and newest.forgiven else status]
    retry = policy.retry_after_block and status in NEGATIVE_STATUSES and block is not None and not block.permanent
    if decision == "deny" and retry:
        decision, next_action = RETRY  # held as deny only while the block below is in force
    if decision == "allow" and duplicate_account and not overrides.duplicate_cleared:
        decision, next_action = "review", "wait"
    unblocked = decision
    if block is not None and block.in_force(now):
        decision, next_action = "deny", "none"
    return Decision(status, newest.id if newest else None, decision, next_action, strikes, block, unblocked)
