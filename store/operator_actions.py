"""An operator's action on a user (docs/contracts.md §7), applied in one transaction: the override and what it
changes of the record's Verisoul sync state. Queueing the sync is the caller's (store/sync_queue.py)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from domain.overrides import RESYNC, OverrideRequest
from domain.policy import block_for
from runtime.config import RecordSettings
from store.db import Database
from store.models import User
from store.overrides import overrides_of, record_override
from store.records import inquiry_lock, lock, mark_sync, user_facts, user_lock


def override_user(
    database: Database, reference_id: str, request: OverrideRequest, now: datetime, settings: RecordSettings
) -> bool | None:
    """Record `request` for the user, in one transaction under the user's lock (events for the user wait);
    None when there is no such user, else whether Verisoul should now be synced (always, for `resync`).
    Raises UnknownInquiry."""
    with database.transaction() as session:
        lock(session, user_lock(reference_id), *(inquiry_lock(i) for i in filter(None, [request.inquiry_id])))
        user = session.scalar(select(User).where(User.reference_id == reference_id))
        if user is None:
            return None
        block = block_for(user_facts(session, user), settings.policy, overrides_of(user))
        record_override(session, user, request, now, block if block is not None and block.in_force(now) else None)
        session.flush()
        return mark_sync(session, user, now, settings) or request.action == RESYNC
