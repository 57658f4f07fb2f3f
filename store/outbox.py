"""The host notifications' outbox (docs/contracts.md §9): a `user.updated` row written in the transaction of the
change it announces, so no change is announced that did not commit and none is lost once it has.

A change is announced when the user's announced fields (domain/notifications.py `announced`) differ from those
last announced, whose digest and sequence the user's row keeps; the row is then written with the next sequence.
The delivery (workers/notify.py) sends a user's latest undelivered row and marks the older ones superseded.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Row, func, select, update
from sqlalchemy.orm import Session

from domain.notifications import announced, digest
from domain.summary import Summary
from store.models import Outbox, User

# The cut a delivery error is kept to (Outbox.last_error's width).
MAX_ERROR = 500


def announcement(
    user: User | Row | None, reference_id: str, account_id: str | None, summary: Summary, notify: bool
) -> tuple[dict, dict | None]:
    """The user's notification columns and the outbox row's values when the announced fields of `summary` changed;
    `({}, None)` when they did not, when the host is not notified (`notify` false), or for a record not yet keyed by
    the host's id (`user` None: a record about to be created with `account_id`)."""
    known_account = user.persona_account_id if user is not None else account_id
    if not notify or reference_id == known_account:
        return {}, None
    enrolled, blocked = (user.verisoul_enrolled, user.verisoul_blocked) if user is not None else (False, False)
    data = announced(reference_id, summary, enrolled, blocked)
    fingerprint = digest(data)
    if user is not None and user.notified_digest == fingerprint:
        return {}, None
    sequence = (user.notified_sequence or 0) + 1 if user is not None else 1
    row = {"reference_id": reference_id, "sequence": sequence, "data": data, "created_at": summary.now}
    return {"notified_sequence": sequence, "notified_digest": fingerprint}, row


def announce(session: Session, user: User, summary: Summary, notify: bool) -> bool:
    """`announcement` for a user read through the ORM (replays, overrides, syncs): the row added to the session, the
    user's columns set; True when a notification was written."""
    columns, row = announcement(user, user.reference_id, user.persona_account_id, summary, notify)
    for name, value in columns.items():
        setattr(user, name, value)
    if row is not None:
        session.add(Outbox(**row))
    return row is not None


def announce_current(session: Session, user: User, summary: Summary) -> int:
    """A notification of the user's current state whether or not it changed (`replay-event --notify`); its
    sequence."""
    user.notified_digest = None
    announce(session, user, summary, notify=True)
    return user.notified_sequence


def latest_undelivered(session: Session, reference_id: str) -> Outbox | None:
    """The user's newest notification not yet delivered or superseded. A dead-lettered one counts: a delivery job
    finds it only when an operator requeued its failed job (a later change would have written a newer row)."""
    query = (
        select(Outbox)
        .where(Outbox.reference_id == reference_id, Outbox.delivered_at.is_(None))
        .order_by(Outbox.sequence.desc())
        .limit(1)
    )
    return session.scalars(query).first()


def supersede_older(session: Session, row: Outbox, now: datetime) -> int:
    """Older undelivered notifications of the row's user are superseded by it (a host wants only the latest);
    how many."""
    result = session.execute(
        update(Outbox)
        .where(
            Outbox.reference_id == row.reference_id,
            Outbox.sequence < row.sequence,
            Outbox.delivered_at.is_(None),
        )
        .values(delivered_at=now, last_error=f"superseded by sequence {row.sequence}")
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def record_attempt(row: Outbox, now: datetime, error: str | None, final: bool) -> None:
    """One delivery attempt: delivered (error None), or why not; dead-lettered when it was the `final` try."""
    row.attempts += 1
    if error is None:
        row.delivered_at, row.last_error, row.dead_at = now, None, None
    else:
        row.last_error = error[:MAX_ERROR]
        row.dead_at = now if final else None


def notified_between(session: Session, since: datetime | None, until: datetime | None) -> list[str]:
    """Users with a notification written in the range (either end open): who changed then."""
    query = select(Outbox.reference_id).distinct()
    if since is not None:
        query = query.where(Outbox.created_at >= since)
    if until is not None:
        query = query.where(Outbox.created_at <= until)
    return sorted(session.scalars(query))


def never_attempted(session: Session, older_than: datetime, limit: int = 1000) -> list[str]:
    """Users with a notification written before `older_than` and never tried: its delivery job was lost (the
    process died after the commit, or Redis was away)."""
    query = (
        select(Outbox.reference_id)
        .where(
            Outbox.delivered_at.is_(None),
            Outbox.dead_at.is_(None),
            Outbox.attempts == 0,
            Outbox.created_at < older_than,
        )
        .group_by(Outbox.reference_id)
        .limit(limit)
    )
    return list(session.scalars(query))


def oldest_undelivered_age(session: Session, now: datetime) -> timedelta | None:
    """How long the oldest notification still to deliver has waited; None when there is none."""
    oldest = session.scalar(
        select(func.min(Outbox.created_at)).where(Outbox.delivered_at.is_(None), Outbox.dead_at.is_(None))
    )
    if oldest is None:
        return None
    return now - (oldest if oldest.tzinfo else oldest.replace(tzinfo=now.tzinfo))


def dead_count(session: Session) -> int:
    """Notifications dead-lettered and not since superseded or delivered."""
    dead = select(func.count()).select_from(Outbox).where(Outbox.dead_at.is_not(None), Outbox.delivered_at.is_(None))
    return int(session.scalar(dead) or 0)
