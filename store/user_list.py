"""`GET /users`: users by standing (docs/contracts.md §7), a page at a time in reference id order (keyset).

The standing is kept on each user's row (store/sync_state.py `summary_of`), so the only thing read
at the clock is whether a block is still in force: `deny` is an unblocked `deny` or a block in force, any
other decision is that unblocked decision with no block in force. Each filter pages along an index that
starts with its column and ends with the reference id (store/models.py), so a page costs the same at a
million users as at ten.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, not_, or_, select
from sqlalchemy.orm import Session

from domain.times import as_utc, to_iso
from store.models import User


@dataclass(frozen=True)
class UserFilter:
    decision: str | None = None
    blocked: bool | None = None
    synced: bool | None = None


def _blocked_at(now: datetime):
    """SQL: a block is in force at `now` (never NULL, so that NOT of it is true for the unblocked)."""
    return or_(User.block_permanent, and_(User.block_until.is_not(None), User.block_until > now))


def list_users(session: Session, chosen: UserFilter, after: str | None, limit: int, now: datetime) -> list[dict]:
    """Up to `limit` users past the reference id `after`, each `{reference_id, status, decision, strikes,
    blocked, blocked_until, synced}`; `blocked_until` is None for a permanent block (`blocked` says it holds)."""
    blocked = _blocked_at(now)
    query = select(
        User.reference_id,
        User.status,
        User.unblocked_decision,
        User.strikes,
        User.block_until,
        User.block_permanent,
        User.verisoul_synced,
    )
    if chosen.decision == "deny":
        query = query.where(or_(User.unblocked_decision == "deny", blocked))
    elif chosen.decision is not None:
        query = query.where(User.unblocked_decision == chosen.decision, not_(blocked))
    if chosen.blocked is not None:
        query = query.where(blocked if chosen.blocked else not_(blocked))
    if chosen.synced is not None:
        query = query.where(User.verisoul_synced == chosen.synced)
    if after is not None:
        query = query.where(User.reference_id > after)
    rows = session.execute(query.order_by(User.reference_id).limit(limit))
    return [_entry(row, now) for row in rows]


def _entry(row, now: datetime) -> dict:
    in_force = row.block_permanent or (row.block_until is not None and as_utc(row.block_until) > now)
    return {
        "reference_id": row.reference_id,
        "status": row.status,
        "decision": "deny" if in_force else row.unblocked_decision,
        "strikes": row.strikes,
        "blocked": bool(in_force),
        "blocked_until": to_iso(row.block_until) if in_force and not row.block_permanent else None,
        "synced": row.verisoul_synced,
    }
