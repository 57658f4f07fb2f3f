"""Applying one event to the user record, inside process_event's transaction.

Concurrency: two workers may handle events of one user at once. Each transaction first locks the
inquiry the event is about, then the user keys it touches (reference id, Persona account id), always
in that order and keys sorted, so no two transactions wait on each other in a cycle. On PostgreSQL
the locks are transaction-scoped advisory locks, which, unlike SELECT ... FOR UPDATE, also cover a
user or an inquiry that does not exist yet (two first events of one user must not create it twice).
On SQLite every write transaction begins IMMEDIATE (app/db.py) and so already runs alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from app.events import iso_millis
from app.models import Event, History, Inquiry, User, Verification
from workers.event_log import parse_time
from workers.policy import InquiryFacts
from workers.state_machine import (
    IGNORED,
    Snapshot,
    Verdict,
    judge_inquiry,
    judge_verification,
    status_since,
)


def as_utc(moment: datetime | None) -> datetime | None:
    """Stored timestamps as aware UTC; SQLite hands them back without a zone (they are UTC)."""
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


def to_iso(moment: datetime) -> str:
    """Stored timestamps back to the snapshot form."""
    return iso_millis(as_utc(moment))


def lock(session: Session, *names: str) -> None:
    if session.get_bind().dialect.name != "postgresql":
        return
    for name in sorted(set(names)):
        session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"), {"name": name})


def kind_of(event: dict) -> str | None:
    """`inquiry` or `verification` when the event is about one; None for anything else."""
    if event["name"].startswith("inquiry.") and event["object_type"] == "inquiry":
        return "inquiry"
    if event["name"].startswith("verification.") and event.get("verification_type"):
        return "verification"
    return None


@dataclass(frozen=True)
class Applied:
    """What applying one event did: to which kind of object, the verdict, and the user it concerns."""

    kind: str | None
    verdict: Verdict
    user: User | None

    @property
    def outcome(self) -> str:
        return self.verdict.outcome


def apply_event(session: Session, event: dict) -> Applied:
    """Update the record for a logged event: the verdict for the log and history, and the user."""
    kind = kind_of(event)
    if kind == "inquiry":
        return Applied(kind, *apply_inquiry_event(session, event))
    if kind == "verification":
        return Applied(kind, *apply_verification_event(session, event))
    verdict = Verdict(IGNORED, None, None)
    _add_history(session, None, None, event, verdict)
    return Applied(None, verdict, None)


def snapshot_of(event: dict) -> Snapshot:
    """The event's place in its object's order: created-at, status rank, event id."""
    return Snapshot.of(event["created_at"], event.get("status") or "", event["event_id"])


def _locked_inquiry(session: Session, inquiry_id: str) -> Inquiry:
    """The inquiry row, locked; a placeholder when no event of it has been applied yet."""
    lock(session, f"inquiry:{inquiry_id}")
    inquiry = session.get(Inquiry, inquiry_id)
    if inquiry is None:
        inquiry = Inquiry(id=inquiry_id)
        session.add(inquiry)
    return inquiry


def _stored_snapshot(row: Inquiry | Verification) -> Snapshot | None:
    if row.status is None or row.snapshot_at is None:
        return None
    return Snapshot(to_iso(row.snapshot_at), row.snapshot_rank, row.snapshot_event_id, row.status)


def _keep_snapshot(row: Inquiry | Verification, snapshot: Snapshot) -> None:
    row.status = snapshot.status
    row.snapshot_at = parse_time(snapshot.at)
    row.snapshot_rank = snapshot.rank
    row.snapshot_event_id = snapshot.event_id


def _fill_ids(inquiry: Inquiry, event: dict) -> None:
    """Ids that never change for an inquiry; the inquiry's own reference id wins over its account's."""
    if event.get("reference_id"):
        inquiry.reference_id = event["reference_id"]
    elif not inquiry.reference_id:
        inquiry.reference_id = event.get("account_reference_id")
    inquiry.account_id = inquiry.account_id or event.get("account_id")
    inquiry.template_id = inquiry.template_id or event.get("template_id")
    created_at = event.get("timestamps", {}).get("created_at")
    if inquiry.inquiry_created_at is None and created_at:
        inquiry.inquiry_created_at = parse_time(created_at)


def _inquiry_snapshots(session: Session, inquiry_id: str) -> list[Snapshot]:
    payloads = session.scalars(
        select(Event.payload).where(Event.object_id == inquiry_id, Event.object_type == "inquiry")
    )
    return [snapshot_of(payload) for payload in payloads]


def apply_inquiry_event(session: Session, event: dict) -> tuple[Verdict, User | None]:
    inquiry = _locked_inquiry(session, event["object_id"])
    verdict = judge_inquiry(_stored_snapshot(inquiry), snapshot_of(event))
    _fill_ids(inquiry, event)
    if verdict.changes_state:
        _keep_snapshot(inquiry, snapshot_of(event))
    if inquiry.status is not None:
        session.flush()
        since = status_since(_inquiry_snapshots(session, inquiry.id))
        inquiry.status_since = parse_time(since) if since else None
    user = resolve_user(session, inquiry)
    _add_history(session, user, inquiry.id, event, verdict)
    return verdict, user


def apply_verification_event(session: Session, event: dict) -> tuple[Verdict, User | None]:
    inquiry_id = event.get("inquiry_id")
    inquiry = _locked_inquiry(session, inquiry_id) if inquiry_id else None
    lock(session, f"verification:{event['object_id']}")
    row = session.get(Verification, event["object_id"])
    verdict = judge_verification(_stored_snapshot(row) if row else None, snapshot_of(event))
    if verdict.changes_state:
        if row is None:
            row = Verification(id=event["object_id"])
            session.add(row)
        row.inquiry_id = row.inquiry_id or inquiry_id
        row.type = event["verification_type"]
        row.checks = {check["name"]: check["status"] for check in event.get("checks", [])}
        _keep_snapshot(row, snapshot_of(event))
    user = _locked_owner(session, inquiry) if inquiry is not None else None
    _add_history(session, user, inquiry_id, event, verdict)
    return verdict, user


def _locked_owner(session: Session, inquiry: Inquiry) -> User | None:
    """The inquiry's user, locked like any other user key. A merge may have moved the inquiry to its
    reference id while we waited for the lock, so the inquiry is read again once the lock is held."""
    if inquiry.user_id is None:
        return None
    owner = session.get(User, inquiry.user_id)
    if owner is not None:
        lock(session, f"user:{owner.reference_id}")
    session.refresh(inquiry)
    return session.get(User, inquiry.user_id, populate_existing=True) if inquiry.user_id else None


def _user(session: Session, key: str) -> User | None:
    return session.scalar(select(User).where(User.reference_id == key))


def _create_user(session: Session, key: str, account_id: str | None) -> User:
    user = User(reference_id=key, persona_account_id=account_id, created_at=datetime.now(timezone.utc))
    session.add(user)
    session.flush()
    return user


def _linked_user(session: Session, account_id: str) -> User | None:
    """The user a reference id was linked to this Persona account by an earlier event."""
    return session.scalar(
        select(User).where(User.persona_account_id == account_id, User.reference_id != account_id).limit(1)
    )


def _merge(session: Session, stray: User, user: User) -> None:
    """Records kept under a Persona account id move to the reference id the account turned out to have."""
    session.execute(update(Inquiry).where(Inquiry.user_id == stray.id).values(user_id=user.id))
    session.execute(update(History).where(History.user_id == stray.id).values(user_id=user.id))
    session.flush()
    session.delete(stray)


def resolve_user(session: Session, inquiry: Inquiry) -> User | None:
    """DESIGN §4: the reference id, else the Persona account id until an event links it to one."""
    reference_id, account_id = inquiry.reference_id, inquiry.account_id
    if not reference_id and not account_id:
        return None
    lock(session, *(f"user:{key}" for key in (reference_id, account_id) if key))
    if reference_id:
        user = _user(session, reference_id) or _create_user(session, reference_id, account_id)
        if account_id:
            user.persona_account_id = user.persona_account_id or account_id
            stray = _user(session, account_id)
            if stray is not None and stray.id != user.id:
                _merge(session, stray, user)
    else:
        user = _linked_user(session, account_id) or _user(session, account_id) or _create_user(
            session, account_id, account_id
        )
    if inquiry.user_id != user.id:
        inquiry.user_id = user.id
        session.execute(update(History).where(History.inquiry_id == inquiry.id).values(user_id=user.id))
    return user


def _add_history(session: Session, user: User | None, inquiry_id: str | None, event: dict, verdict: Verdict) -> None:
    session.add(
        History(
            user_id=user.id if user else None,
            inquiry_id=inquiry_id,
            object_id=event["object_id"],
            event_id=event["event_id"],
            from_status=verdict.before,
            to_status=verdict.after,
            outcome=verdict.outcome,
            at=parse_time(event["created_at"]),
        )
    )


def inquiries_of(session: Session, user: User) -> list[Inquiry]:
    """The user's inquiries that have a status (placeholders excluded)."""
    return list(
        session.scalars(
            select(Inquiry).where(Inquiry.user_id == user.id, Inquiry.status.is_not(None)).order_by(Inquiry.id)
        )
    )


def facts_of(inquiry: Inquiry) -> InquiryFacts:
    created = inquiry.inquiry_created_at or inquiry.snapshot_at
    since = inquiry.status_since or inquiry.snapshot_at
    return InquiryFacts(inquiry.id, inquiry.status, to_iso(created), to_iso(since))
