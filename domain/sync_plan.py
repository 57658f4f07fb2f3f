"""What Verisoul should say about a user, and the calls that take it there. Pure: no I/O.

The state machine writes what Verisoul *should* say; `sync_verisoul` converges Verisoul to it by
comparing that target with the last state Verisoul confirmed, so a retried, repeated or reordered
sync only makes the calls still missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.overrides import NO_OVERRIDES, Overrides
from domain.policy import DEFAULT_POLICY, InquiryFacts, Policy, block_for

VERIFIED_STATUSES = frozenset({"completed", "approved"})

UNBLOCK = "unblock"
ENROLL = "enroll"
BLOCK = "block"


@dataclass(frozen=True)
class Target:
    """Verisoul's desired state: enrolled once verified; blocked while a strike block is in force."""

    enrolled: bool
    blocked_until: datetime | None
    permanent: bool
    duplicate_cleared: bool = False  # enroll without the one-person-one-account check (clear_duplicate)

    def blocked(self, now: datetime) -> bool:
        return self.permanent or (self.blocked_until is not None and now < self.blocked_until)


@dataclass(frozen=True)
class Known:
    """What Verisoul last confirmed for the user."""

    enrolled: bool = False
    blocked: bool = False
    duplicate_account: bool = False


def target_for(
    inquiries: list[InquiryFacts], policy: Policy = DEFAULT_POLICY, overrides: Overrides = NO_OVERRIDES
) -> Target:
    """Derived from the inquiries' current statuses only, so every delivery order gives the same target.
    Enrolled when an inquiry is currently completed or approved (one person, one account is checked
    against Verisoul before enrolling); the block follows the strikes (docs/contracts.md §5)."""
    block = block_for(inquiries, policy, overrides)
    return Target(
        enrolled=any(inquiry.status in VERIFIED_STATUSES for inquiry in inquiries),
        blocked_until=block.until if block else None,
        permanent=bool(block and block.permanent),
        duplicate_cleared=overrides.duplicate_cleared,
    )


def plan(target: Target, known: Known, now: datetime) -> list[str]:
    """The calls still missing, in the order a reviewer reversal needs: unblock, enroll, then block."""
    blocked = target.blocked(now)
    steps = []
    if known.blocked and not blocked:
        steps.append(UNBLOCK)
    if target.enrolled and not known.enrolled and (target.duplicate_cleared or not known.duplicate_account):
        steps.append(ENROLL)
    if blocked and not known.blocked:
        steps.append(BLOCK)
    return steps
