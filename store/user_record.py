"""The user record of docs/contracts.md §4, read from the tables and the decision policy."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from domain.policy import Block, Policy
from domain.summary import by_template, summarise
from domain.times import to_iso
from store.models import History, User, Verification
from store.overrides import overrides_listing, overrides_of
from store.records import facts_of, inquiries_of


def _verisoul(user: User) -> dict:
    """What Verisoul last confirmed; `synced` is false while it differs from what it should say."""
    until = user.verisoul_blocked_until
    return {
        "account_id": user.reference_id,
        "enrolled": user.verisoul_enrolled,
        "blocked": user.verisoul_blocked,
        "blocked_until": to_iso(until) if until and user.verisoul_blocked else None,
        "permanent_block": user.verisoul_permanent_block,
        "duplicate_account": user.verisoul_duplicate_account,
        "synced": user.verisoul_synced,
        "error": user.verisoul_error,  # why the last sync did not complete, or why none was made
        "synced_at": to_iso(user.verisoul_synced_at),
    }


def load_user_record(session: Session, reference_id: str, now: datetime, policy: Policy) -> dict | None:
    """The record of docs/contracts.md §4 (with §7's overrides) under `policy`, or None for an unknown user."""
    found = load_user_view(session, reference_id, now, policy)
    return found[0] if found else None


def load_user_view(
    session: Session, reference_id: str, now: datetime, policy: Policy
) -> tuple[dict, Block | None] | None:
    """The record, and the user's latest block (the console draws it), or None for an unknown user."""
    user = session.scalar(select(User).where(User.reference_id == reference_id))
    if user is None:
        return None
    inquiries = inquiries_of(session, user)
    facts = {inquiry.id: facts_of(inquiry) for inquiry in inquiries}
    summary = summarise(list(facts.values()), now, user.verisoul_duplicate_account, overrides_of(user), policy)
    of_template: dict[str, list] = {}
    for inquiry in inquiries:
        if inquiry.template_id:
            of_template.setdefault(inquiry.template_id, []).append(facts[inquiry.id])
    overrides = overrides_listing(session, user)
    verifications = session.scalars(
        select(Verification).where(Verification.inquiry_id.in_([i.id for i in inquiries])).order_by(Verification.id)
    ).all()
    history = session.scalars(
        select(History).where(History.user_id == user.id).order_by(History.at, History.event_id)
    ).all()
    record = {
        "reference_id": user.reference_id,
        "persona_account_id": user.persona_account_id,
        **summary.verdict(),
        "templates": by_template(summary, of_template, overrides_of(user)),
        "verisoul": _verisoul(user),
        "inquiries": [
            {
                "id": i.id,
                "status": i.status,
                "template_id": i.template_id,
                "updated_at": to_iso(i.snapshot_at),
                "forgiven": i.forgiven,
                "redacted": i.redacted,  # Persona redacted it: the gate never resumes it
            }
            for i in sorted(inquiries, key=lambda i: (facts[i.id].created_at, i.id))
        ],
        "verifications": [
            {"id": v.id, "inquiry_id": v.inquiry_id, "type": v.type, "status": v.status, "checks": v.checks}
            for v in verifications
        ],
        "overrides": overrides,
        "history": _history(history, overrides),
    }
    return record, summary.decision.block


def _history(events: Sequence[History], overrides: list[dict]) -> list[dict]:
    """What each event did and each override (outcome `override`, no event), in time order."""
    entries = [
        {
            "at": to_iso(h.at),
            "event_id": h.event_id,
            "inquiry_id": h.inquiry_id,
            "from": h.from_status,
            "to": h.to_status,
            "outcome": h.outcome,
        }
        for h in events
    ]
    entries += [
        {"at": o["at"], "event_id": None, "inquiry_id": o["inquiry_id"], "from": None, "to": None}
        | {"outcome": "override", "action": o["action"]}
        for o in overrides
    ]
    return sorted(entries, key=lambda entry: entry["at"])  # stable: events keep their order at one time
