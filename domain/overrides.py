"""Operators' overrides (docs/contracts.md §7): facts of their own that the policy reads beside the inquiries.

An override is never a counter and never edits an inquiry: it is recorded once, with its reason and
operator, and the policy applies it to whatever the inquiries say, so it survives every replay and a
later negative event still counts as usual. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

LIFT_BLOCK = "lift_block"  # the block in force ends now; its strikes stay
FORGIVE_INQUIRY = "forgive_inquiry"  # that inquiry's failure or decline is no longer a strike
CLEAR_DUPLICATE = "clear_duplicate"  # the operator confirmed this is the person's main account: enroll
RESYNC = "resync"  # sync Verisoul now; changes nothing the policy reads
ACTIONS = (LIFT_BLOCK, FORGIVE_INQUIRY, CLEAR_DUPLICATE, RESYNC)


@dataclass(frozen=True)
class Overrides:
    """A user's overrides as the policy reads them (forgiven inquiries are a fact of each inquiry)."""

    block_lifted_at: datetime | None = None  # the latest lift: a block in force then ends then
    duplicate_cleared: bool = False  # Verisoul's "linked to other accounts" no longer holds this user back

    def lifted(self, since: datetime) -> datetime | None:
        """When a block that began at `since` was lifted, if it was (a lift before a block ends nothing)."""
        if self.block_lifted_at is not None and self.block_lifted_at >= since:
            return self.block_lifted_at
        return None


NO_OVERRIDES = Overrides()
