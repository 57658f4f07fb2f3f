"""Recording events in the `events` table, exactly once per event id."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Insert, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from domain.events import QueuedEvent
from domain.times import parse_time
from store.models import Event
from store.writes import Write, insert_row

RECORDED = "recorded"
DUPLICATE = "duplicate"


def inquiry_of(event: QueuedEvent) -> str | None:
    """The inquiry an event is about: its own object, or the inquiry a verification belongs to."""
    return event["object_id"] if event["object_type"] == "inquiry" else event.get("inquiry_id")


def event_insert(event: QueuedEvent, processed_at: datetime, outcome: str) -> Write:
    """A plain INSERT: a second run of the event breaks the unique constraint (`is_duplicate`) and its
    transaction rolls back whole, so the event is recorded once and nothing it did is written twice."""
    return insert_row(Event, **event_row(event, processed_at, outcome))


def event_row(event: QueuedEvent, processed_at: datetime, outcome: str) -> dict:
    return {
        "event_id": event["event_id"],
        "name": event["name"],
        "object_type": event["object_type"],
        "object_id": event["object_id"],
        "inquiry_id": inquiry_of(event),
        "occurred_at": parse_time(event["created_at"]),
        "received_at": parse_time(event["received_at"]),
        "processed_at": processed_at,
        "outcome": outcome,
        "payload": event,
        "body_sha256": event["body_sha256"],
    }


def is_duplicate(error: IntegrityError) -> bool:
    """The event's row already exists: its id broke `uq_events_event_id` (PostgreSQL names the constraint,
    SQLite the column)."""
    diag = getattr(error.orig, "diag", None)
    if diag is not None:
        return diag.constraint_name == "uq_events_event_id"
    return "events.event_id" in str(error.orig)


def record_event(session: Session, event: QueuedEvent, processed_at: datetime, outcome: str = RECORDED) -> bool:
    """Insert the event unless its id is already recorded; True when inserted by this call.

    `ON CONFLICT DO NOTHING` rather than check-then-insert: two workers racing on one event id
    (a redelivery picked up while the first run is still in flight) cannot both insert."""
    dialect = session.get_bind().dialect.name
    values = event_row(event, processed_at, outcome)
    statement: Insert
    if dialect == "postgresql":
        statement = postgresql.insert(Event).values(values).on_conflict_do_nothing(index_elements=["event_id"])
    elif dialect == "sqlite":
        statement = sqlite.insert(Event).values(values).on_conflict_do_nothing(index_elements=["event_id"])
    else:
        statement = insert(Event).values(values)
    # RETURNING, not rowcount: psycopg 3 reports -1 for INSERT .. ON CONFLICT through SQLAlchemy 2.1.
    return session.execute(statement.returning(Event.id)).first() is not None
