"""Reconciliation: ask Persona about inquiries whose webhooks may never have come.

Candidates are inquiries still `created` or `pending` past Persona's expiry window plus a grace period
(Persona would have expired or finished them by now), inquiries whose `process_event` job failed for good,
and inquiries of users whose Verisoul sync failed. Each is fetched (`GET /api/v1/inquiries/{id}`) and
turned into an `inquiry.reconciled` event through the webhook's own normalisation and minimisation. The
event's time is the inquiry's own timestamp for its current status, so it sorts among the webhook events
as the matching webhook would, and its id is derived from (inquiry, status, that time): reconciling the
same state twice logs it once. A snapshot whose status the record already has is not applied; any other is
applied by the replay machinery, and when it becomes the inquiry's state its outcome is `reconciled`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import cast

from rq import Queue
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from clients.persona import InvalidEvent, PersonaClient, PersonaError, PersonaUnavailable, event_from_document
from domain.events import QueuedEvent, normalise_keys
from domain.times import iso_millis, parse_time
from store.db import Database
from store.event_log import inquiry_of
from store.failed_jobs import jobs_in_failed_registry
from store.models import Inquiry, User
from store.queue import PROCESS_EVENT
from store.sync_state import NO_REFERENCE_ID, NOT_CONFIGURED
from workers.replay import RECONCILED_NAME, Replayer, Report, chunks, plan_units

OPEN_STATUSES = ("created", "pending")
# The attribute that says when an inquiry entered each status; `updated-at` when it is missing.
STATUS_TIMES = {
    "created": "created_at",
    "pending": "started_at",
    "completed": "completed_at",
    "failed": "failed_at",
    "expired": "expired_at",
    "needs_review": "marked_for_review_at",
    "approved": "decisioned_at",
    "declined": "decisioned_at",
}
END_OF_SECOND = timedelta(milliseconds=999)
# Persona allows 300 requests a minute; one run stays well inside that, the next run takes the rest.
BATCH = 200


@dataclass
class Reconciliation:
    report: Report = field(default_factory=Report)
    checked: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # inquiry id → why it could not be fetched


def due_inquiries(session: Session, now: datetime, window: timedelta, limit: int = BATCH) -> list[str]:
    """Open inquiries whose status is older than the window, not asked about within the window."""
    cutoff = now - window
    query = (
        select(Inquiry.id)
        .where(
            Inquiry.status.in_(OPEN_STATUSES),
            Inquiry.status_since < cutoff,
            or_(Inquiry.checked_at.is_(None), Inquiry.checked_at < cutoff),
        )
        .order_by(Inquiry.status_since, Inquiry.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def failed_sync_inquiries(session: Session, limit: int = BATCH) -> list[str]:
    """The latest inquiry of each user whose Verisoul sync failed (not merely unconfigured or unkeyed)."""
    users = select(User.id).where(
        User.verisoul_synced.is_(False),
        User.verisoul_error.is_not(None),
        User.verisoul_error.not_in([NO_REFERENCE_ID, NOT_CONFIGURED]),
    )
    rows = session.execute(
        select(Inquiry.user_id, Inquiry.id, Inquiry.inquiry_created_at)
        .where(Inquiry.user_id.in_(users), Inquiry.status.is_not(None))
        .order_by(Inquiry.user_id, Inquiry.inquiry_created_at, Inquiry.id)
    ).all()
    latest = {row.user_id: row.id for row in rows}  # ordered, so the last one per user wins
    return sorted(latest.values())[:limit]


def failed_event_inquiries(queue: Queue, limit: int = BATCH) -> list[str]:
    """Inquiries of `process_event` jobs in the failed registry: their event never reached the record."""
    found: set[str] = set()
    for job in jobs_in_failed_registry(queue):
        if job.func_name != PROCESS_EVENT or not job.args or not isinstance(job.args[0], dict):
            continue
        try:
            inquiry_id = inquiry_of(cast(QueuedEvent, job.args[0]))  # a job's argument is the queued event
        except KeyError:
            continue
        if inquiry_id:
            found.add(inquiry_id)
    return sorted(found)[:limit]


def _status_time(document: dict, fetched_at: datetime) -> str:
    """When the inquiry entered its status. Persona's attribute times are whole seconds while event times
    have milliseconds, so a whole-second time is taken at the end of its second: a webhook of the same
    second (a `completed` just before a decline) then sorts before the snapshot, as it happened before it."""
    attributes = normalise_keys(document.get("data", {})).get("attributes") or {}
    status = attributes.get("status")
    name = STATUS_TIMES.get(status, "updated_at") if isinstance(status, str) else "updated_at"
    moment = attributes.get(name) or attributes.get("updated_at")
    try:
        at = parse_time(moment) if isinstance(moment, str) else fetched_at
    except (ValueError, OverflowError):
        at = fetched_at
    return iso_millis(at + END_OF_SECOND if at.microsecond == 0 else at)


def snapshot_event(document: dict, fetched_at: datetime) -> QueuedEvent:
    """An inquiry fetched from Persona as a minimised `inquiry.reconciled` event."""
    data = document.get("data")
    inquiry: dict = data if isinstance(data, dict) else {}
    status = (inquiry.get("attributes") or {}).get("status")
    at = _status_time(document, fetched_at)
    envelope = {
        "data": {
            "type": "event",
            "id": f"rec_{inquiry.get('id')}_{status}_{at}",
            "attributes": {"name": RECONCILED_NAME, "created-at": at, "payload": document},
        }
    }
    return event_from_document(envelope, fetched_at)


def fetch_snapshots(
    client: PersonaClient, inquiry_ids: list[str], fetched_at: datetime
) -> tuple[list[QueuedEvent], dict]:
    events: list[QueuedEvent] = []
    errors: dict[str, str] = {}
    for inquiry_id in inquiry_ids:
        try:
            events.append(snapshot_event(client.get_inquiry(inquiry_id), fetched_at))
        except (PersonaError, PersonaUnavailable, InvalidEvent) as error:
            errors[inquiry_id] = f"{type(error).__name__}: {error}"
    return events, errors


def _asked_recently(session: Session, inquiry_ids: list[str], cutoff: datetime) -> set[str]:
    found: set[str] = set()
    for chunk in chunks(inquiry_ids):
        found.update(session.scalars(select(Inquiry.id).where(Inquiry.id.in_(chunk), Inquiry.checked_at >= cutoff)))
    return found


def candidates(database: Database, queue: Queue | None, now: datetime, window: timedelta) -> list[str]:
    """Overdue open inquiries first (oldest first), then those of failed jobs and failed syncs; none asked
    about within the window, so a job that stays in the failed registry is not asked about every hour."""
    failed = [] if queue is None else failed_event_inquiries(queue)
    with database.sessions() as session:
        found = list(dict.fromkeys([*due_inquiries(session, now, window), *failed, *failed_sync_inquiries(session)]))
        recent = _asked_recently(session, found, now - window)
    return [inquiry_id for inquiry_id in found if inquiry_id not in recent][:BATCH]


def _news(database: Database, events: list[QueuedEvent]) -> list[QueuedEvent]:
    """The snapshots whose status differs from the record's: the same status again would only move the
    inquiry's snapshot time to Persona's whole-second clock, which tells nothing new."""
    with database.sessions() as session:
        ids = [event["object_id"] for event in events]
        known = dict(session.execute(select(Inquiry.id, Inquiry.status).where(Inquiry.id.in_(ids))).all())
    return [event for event in events if event["status"] != known.get(event["object_id"])]


def reconcile(
    database: Database, client: PersonaClient, replayer: Replayer, queue: Queue | None, window: timedelta
) -> Reconciliation:
    """Fetch every candidate inquiry, apply the snapshots that differ, and remember when each was asked about."""
    now = replayer.clock()
    inquiry_ids = candidates(database, queue, now, window)
    events, errors = fetch_snapshots(client, inquiry_ids, now)
    with database.sessions() as session:
        units = plan_units(session, [], _news(database, events))
    result = Reconciliation(replayer.run(units), [e["object_id"] for e in events], errors)
    if not replayer.dry_run and result.checked:
        with database.transaction() as session:
            session.execute(update(Inquiry).where(Inquiry.id.in_(result.checked)).values(checked_at=now))
    return result
