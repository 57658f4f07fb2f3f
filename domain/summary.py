"""A user's summary: what the record says of them, computed in one place for the API and for replays.

The decision comes from the policy (docs/contracts.md §5) and Verisoul's desired state from the sync
plan; both are derived from the inquiries' current statuses and a clock, never stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.overrides import NO_OVERRIDES, Overrides
from domain.policy import DEFAULT_POLICY, Decision, InquiryFacts, Policy, decide
from domain.sync_plan import Target, target_for
from domain.times import to_iso


@dataclass(frozen=True)
class Summary:
    decision: Decision
    target: Target
    duplicate_account: bool
    now: datetime
    policy: Policy

    def verdict(self) -> dict:
        """The record's top-level fields (docs/contracts.md §4): status, inquiry_id, decision, next_action, strikes."""
        decision = self.decision
        return {
            "status": decision.status,
            "inquiry_id": decision.inquiry_id,
            "decision": decision.decision,
            "next_action": decision.next_action,
            "strikes": decision.strikes,
        }

    def standing(self) -> dict:
        """What lists and filters users without the clock: the latest status, the strikes, the decision once no
        block is in force, and the block's end (None: no block; `block_permanent`: none ever)."""
        decision, block = self.decision, self.decision.block
        return {
            "status": decision.status,
            "strikes": decision.strikes,
            "unblocked_decision": decision.unblocked,
            "block_until": block.until if block else None,
            "block_permanent": bool(block and block.permanent),
        }

    def verisoul_target(self) -> dict:
        """What Verisoul should say: enrolled (never while flagged as a duplicate), blocked, until when (ISO), for good."""
        target = self.target
        return {
            "enrolled": target.enrolled and not self.duplicate_account,
            "blocked": target.blocked(self.now),
            "blocked_until": to_iso(target.blocked_until),
            "permanent_block": target.permanent,
        }


def summarise(
    inquiries: list[InquiryFacts],
    now: datetime,
    duplicate_account: bool = False,
    overrides: Overrides = NO_OVERRIDES,
    policy: Policy = DEFAULT_POLICY,
) -> Summary:
    """The summary of a user whose inquiries are `inquiries`, at `now` (aware UTC), under `policy`."""
    decision = decide(inquiries, now, duplicate_account, policy, overrides)
    duplicate = duplicate_account and not overrides.duplicate_cleared
    return Summary(decision, target_for(inquiries, policy, overrides), duplicate, now, policy)


def by_template(
    summary: Summary, inquiries: dict[str, list[InquiryFacts]], overrides: Overrides = NO_OVERRIDES
) -> dict[str, dict]:
    """The record's `templates` (docs/contracts.md §8): per template, its latest inquiry, that inquiry's status,
    and the policy applied to the template's inquiries alone, except the block, which holds for the whole user."""
    blocked = summary.decision.blocked(summary.now)
    entries = {}
    for template_id, facts in sorted(inquiries.items()):
        own = decide(facts, summary.now, summary.duplicate_account, summary.policy, overrides)
        entries[template_id] = {
            "inquiry_id": own.inquiry_id,
            "status": own.status,
            "decision": "deny" if blocked else own.unblocked,
        }
    return entries
