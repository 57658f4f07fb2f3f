"""The user record of DESIGN §4, read from the tables and the decision policy."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import History, Inquiry, User, Verification
from workers.policy import InquiryFacts, decide
from workers.records import to_iso


def _facts(inquiry: Inquiry) -> InquiryFacts:
    created = inquiry.inquiry_created_at or inquiry.snapshot_at
    since = inquiry.status_since or inquiry.snapshot_at
    return InquiryFacts(inquiry.id, inquiry.status, to_iso(created), to_iso(since))


def _verisoul_defaults(user: User) -> dict:
    """Verisoul's last known state; nothing is synced yet."""
    return {
        "account_id": user.reference_id,
        "enrolled": False,
        "blocked": False,
        "blocked_until": None,
        "permanent_block": False,
        "duplicate_account": False,
        "synced": False,
    }


def load_user_record(session: Session, reference_id: str, now: datetime) -> dict | None:
    user = session.scalar(select(User).where(User.reference_id == reference_id))
    if user is None:
        return None
    inquiries = session.scalars(
        select(Inquiry).where(Inquiry.user_id == user.id, Inquiry.status.is_not(None)).order_by(Inquiry.id)
    ).all()
    facts = [_facts(inquiry) for inquiry in inquiries]
    decision = decide(facts, now)
    verifications = session.scalars(
        select(Verification).where(Verification.inquiry_id.in_([i.id for i in inquiries])).order_by(Verification.id)
    ).all()
    history = session.scalars(
        select(History).where(History.user_id == user.id).order_by(History.at, History.event_id)
    ).all()
    return {
        "reference_id": user.reference_id,
        "persona_account_id": user.persona_account_id,
        "status": decision.status,
        "inquiry_id": decision.inquiry_id,
        "decision": decision.decision,
        "next_action": decision.next_action,
        "strikes": decision.strikes,
        "verisoul": _verisoul_defaults(user),
        "inquiries": [
            {"id": i.id, "status": i.status, "template_id": i.template_id, "updated_at": to_iso(i.snapshot_at)}
            for i in sorted(inquiries, key=lambda i: (_facts(i).created_at, i.id))
        ],
        "verifications": [
            {"id": v.id, "inquiry_id": v.inquiry_id, "type": v.type, "status": v.status, "checks": v.checks}
            for v in verifications
        ],
        "history": [
            {
                "at": to_iso(h.at),
                "event_id": h.event_id,
                "inquiry_id": h.inquiry_id,
                "from": h.from_status,
                "to": h.to_status,
                "outcome": h.outcome,
            }
            for h in history
        ],
    }
