"""The host's `user.updated` notification (docs/contracts.md §9). Pure: a user's summary in, the notification out.

What a notification announces is the record's summary (status, inquiry_id, decision, next_action, strikes,
blocked_until) and what Verisoul confirmed (enrolled, blocked); a commit that leaves all of it as it was
announces nothing, which a digest of the announced fields decides. `sequence` grows by one per announcement of a
user, so the host keeps the highest it has seen and drops anything older. No personal data: ids and statuses.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from domain.summary import Summary
from domain.times import iso_millis, to_iso

EVENT_TYPE = "user.updated"
# The contract's delivery schedule: the waits before each retry, in seconds (5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
# 10 h: about 27.6 hours in all); then the notification is dead-lettered.
RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000)


def announced(reference_id: str, summary: Summary, enrolled: bool, blocked: bool) -> dict:
    """The notification's `data` without its sequence: the summary at `summary.now`, and Verisoul's confirmed state.
    `blocked_until` is the end of a temporary block in force (ISO 8601), else null (no block, or one for good)."""
    decision = summary.decision
    block = decision.block
    in_force = decision.blocked(summary.now)
    return {
        "reference_id": reference_id,
        **summary.verdict(),
        "blocked_until": to_iso(block.until) if block is not None and in_force else None,
        "verisoul": {"enrolled": bool(enrolled), "blocked": bool(blocked)},
    }


def digest(data: dict) -> str:
    """SHA-256 (hex) of the announced fields, in a canonical form; a sequence number is not part of it."""
    fields = {name: value for name, value in data.items() if name != "sequence"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def message(data: dict, sequence: int, at: datetime) -> dict:
    """The body POSTed to the host: `{"type": "user.updated", "timestamp", "data": {..., "sequence"}}`."""
    return {"type": EVENT_TYPE, "timestamp": iso_millis(at), "data": {**data, "sequence": sequence}}


def message_id(outbox_id: int) -> str:
    """The Standard Webhooks `webhook-id`: the same on every retry of one notification, so a host can dedupe."""
    return f"msg_{outbox_id}"
