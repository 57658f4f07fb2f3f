"""Operators' overrides in the tables (docs/contracts.md §7): the fact, with its reason and operator, in
`overrides`; and its effect on what the policy reads, on the user's row (`block_lifted_at`,
`duplicate_cleared`) or the inquiry's (`forgiven`), written in the same transaction. A replay rebuilds
inquiries from their events but never touches these columns or the table, so an override outlives it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from domain.overrides import CLEAR_DUPLICATE, FORGIVE_INQUIRY, LIFT_BLOCK, OverrideRequest, Overrides
from domain.policy import Block
from domain.times import as_utc, to_iso
from store.models import Inquiry, Override, User


class UnknownInquiry(LookupError):
    """The inquiry an override names is not one of the user's."""


def overrides_of(user: User | Row) -> Overrides:
    """What the user's overrides change for the policy, from the user's row."""
    return Overrides(
        block_lifted_at=as_utc(user.block_lifted_at),
        duplicate_cleared=bool(user.duplicate_cleared),
        block_lifted_since=as_utc(user.block_lifted_since),
    )


def record_override(
    session: Session, user: User, request: OverrideRequest, now: datetime, block: Block | None
) -> Override:
    """Write the override and its effect; `block` is the user's block in force at `now`, if any (the one a lift
    ends: a lift with none in force ends nothing). The caller holds the user's lock and commits. Raises
    UnknownInquiry."""
    if request.action == FORGIVE_INQUIRY:
        inquiry = session.get(Inquiry, request.inquiry_id)
        if inquiry is None or inquiry.user_id != user.id:
            raise UnknownInquiry(request.inquiry_id)
        inquiry.forgiven = True
    elif request.action == LIFT_BLOCK and block is not None:
        user.block_lifted_at, user.block_lifted_since = now, block.since
    elif request.action == CLEAR_DUPLICATE:
        user.duplicate_cleared = True
        user.verisoul_duplicate_account = False  # what Verisoul said stays in the override's reason, not here
    override = Override(
        user_id=user.id,
        action=request.action,
        inquiry_id=request.inquiry_id,
        reason=request.reason,
        operator=request.operator,
        at=now,
    )
    session.add(override)
    return override


def overrides_listing(session: Session, user: User) -> list[dict]:
    """The record's `overrides`: `[{"action", "inquiry_id", "reason", "operator", "at"}]`, oldest first."""
    rows = session.scalars(select(Override).where(Override.user_id == user.id).order_by(Override.at, Override.id))
    return [
        {
            "action": row.action,
            "inquiry_id": row.inquiry_id,
            "reason": row.reason,
            "operator": row.operator,
            "at": to_iso(row.at),
        }
        for row in rows
    ]
