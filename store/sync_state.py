"""A record's Verisoul sync columns: whether Verisoul already says what the user's inquiries call for.

Written with the record in the event's transaction (store/records.py), so a record is never left
saying "synced" while it waits for a sync; the sync itself is workers/sync.py.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Row

from domain.policy import InquiryFacts, Policy
from domain.summary import Summary, summarise
from domain.sync_plan import Known, Target, plan, target_for
from domain.times import as_utc
from store.models import User
from store.overrides import overrides_of

NOT_CONFIGURED = "Verisoul not configured: VERISOUL_API_URL is unset"
NO_REFERENCE_ID = "not synced: no reference id yet (Verisoul accounts are keyed by the host's user id)"


# What Verisoul has confirmed for a record that does not exist yet: nothing.
_NEW_USER = User(
    verisoul_enrolled=False,
    verisoul_blocked=False,
    verisoul_blocked_until=None,
    verisoul_permanent_block=False,
    verisoul_duplicate_account=False,
)


def known_of(user: User | Row) -> Known:
    return Known(user.verisoul_enrolled, user.verisoul_blocked, user.verisoul_duplicate_account)


def needs_sync(user: User | Row, target: Target, now: datetime) -> bool:
    """Calls are missing, or the block Verisoul holds should now end at another time."""
    if plan(target, known_of(user), now):
        return True
    return user.verisoul_blocked and (
        user.verisoul_permanent_block != target.permanent or as_utc(user.verisoul_blocked_until) != target.blocked_until
    )


def sync_state(
    user: User | Row | None,
    reference_id: str,
    account_id: str | None,
    facts: list[InquiryFacts],
    now: datetime,
    configured: bool = True,
) -> tuple[dict, bool]:
    """The record's sync columns once the user's inquiries are `facts`, and whether a sync is needed: the
    record is synced exactly when Verisoul already says what it should. A provisional record (`user` None:
    about to be created with `account_id`) is never synced: Verisoul accounts are keyed by the host
    application's user id, and the record may yet merge into one. Without Verisoul (`configured` false)
    no sync is queued at all: the record says why, and the sweep syncs it once Verisoul is configured."""
    if reference_id == ((user.persona_account_id if user is not None else None) or account_id):
        return {"verisoul_synced": False, "verisoul_error": NO_REFERENCE_ID}, False
    if not configured:
        return {"verisoul_synced": False, "verisoul_error": NOT_CONFIGURED}, False
    known = user if user is not None else _NEW_USER
    needed = needs_sync(known, target_for(facts, overrides=overrides_of(known)), now)
    return {"verisoul_synced": not needed}, needed


def summary_of(user: User | Row | None, facts: list[InquiryFacts], now: datetime, policy: Policy) -> Summary:
    """The user's summary under `policy` once its inquiries are `facts` (`user` None: a record about to be created).
    Its standing columns and the host's notification are both read off it (domain/summary.py)."""
    known = user if user is not None else _NEW_USER
    duplicate = bool(known.verisoul_duplicate_account)
    return summarise(facts, now, duplicate, overrides_of(known), policy)
