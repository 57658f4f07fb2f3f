"""The event log's retention (EVENT_RETENTION_DAYS, docs/contracts.md §10): the logged events of decided inquiries,
deleted once the newest of them is older than the retention.

An inquiry's events go together or not at all, so the log never holds part of an inquiry: a replay rebuilds an
inquiry from its logged events, and one with none is in no replay's unit, its row kept as it is. Which statuses
count as decided, and why: domain/erasure.py FINAL_STATUSES.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import CursorResult, delete, exists, select

from domain.erasure import FINAL_STATUSES
from store.db import Database
from store.models import Event, Inquiry
from store.records import inquiry_lock, lock

# Inquiries whose events are deleted per transaction: short transactions, few locks held at once.
BATCH = 200


def _recent(cutoff: datetime):
    """An event of the inquiry at or after the cutoff: the inquiry's events are kept."""
    return exists().where(Event.inquiry_id == Inquiry.id, Event.occurred_at >= cutoff)


def _expired_inquiries(cutoff: datetime, after: str):
    logged = exists().where(Event.inquiry_id == Inquiry.id)
    return (
        select(Inquiry.id)
        .where(Inquiry.status.in_(FINAL_STATUSES), Inquiry.id > after, logged, ~_recent(cutoff))
        .order_by(Inquiry.id)
        .limit(BATCH)
    )


def prune_events(database: Database, cutoff: datetime) -> int:
    """Delete the events of decided inquiries whose every event happened before `cutoff`; how many. Each batch
    takes its inquiries' locks and checks again, so an event applied meanwhile keeps its inquiry's events."""
    deleted, after = 0, ""
    while True:
        with database.transaction() as session:
            inquiry_ids = list(session.scalars(_expired_inquiries(cutoff, after)))
            if not inquiry_ids:
                return deleted
            lock(session, *(inquiry_lock(inquiry_id) for inquiry_id in inquiry_ids))
            decided = select(Inquiry.id).where(
                Inquiry.id.in_(inquiry_ids), Inquiry.status.in_(FINAL_STATUSES), ~_recent(cutoff)
            )
            result = session.execute(
                delete(Event).where(Event.inquiry_id.in_(decided)).execution_options(synchronize_session=False)
            )
            deleted += cast(CursorResult, result).rowcount
            after = inquiry_ids[-1]
