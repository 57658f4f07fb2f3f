"""Queued events (domain/events.py's QueuedEvent) built directly, each with an event id of its own."""

from __future__ import annotations

import itertools

from domain.events import QueuedEvent

_ids = itertools.count()


def inquiry_event(
    inquiry_id: str,
    status: str,
    at: str,
    reference_id: str | None = None,
    account_id: str | None = None,
    name: str | None = None,
    account_reference_id: str | None = None,
) -> QueuedEvent:
    return {
        "event_id": f"evt_{next(_ids):06d}",
        "name": name or f"inquiry.{status}",
        "created_at": at,
        "received_at": at,
        "body_sha256": "0" * 64,
        "object_type": "inquiry",
        "object_id": inquiry_id,
        "status": status,
        "reference_id": reference_id,
        "account_id": account_id,
        "account_reference_id": account_reference_id,
        "template_id": "itmpl_1",
        "inquiry_id": None,
        "verification_type": None,
        "checks": [],
        "timestamps": {"created_at": "2024-01-01T00:00:00.000Z"},
    }


def verification_event(verification_id: str, inquiry_id: str, status: str, at: str) -> QueuedEvent:
    return {
        "event_id": f"evt_{next(_ids):06d}",
        "name": f"verification.{status}",
        "created_at": at,
        "received_at": at,
        "body_sha256": "0" * 64,
        "object_type": "verification/government-id",
        "object_id": verification_id,
        "status": status,
        "reference_id": None,
        "account_id": None,
        "account_reference_id": None,
        "template_id": None,
        "inquiry_id": inquiry_id,
        "verification_type": "government-id",
        "checks": [{"name": "id_expired_detection", "status": status}],
        "timestamps": {},
    }


def at(day: int, second: int = 0, millis: int = 0) -> str:
    return f"2024-01-{day:02d}T00:00:{second:02d}.{millis:03d}Z"


def broken_event(event_id: str, inquiry_id: str) -> dict[str, object]:
    """An event process_event fails on for good (no created-at): it lands in RQ's failed registry."""
    event = dict(inquiry_event(inquiry_id, "approved", at(9, 0), "user_9"))
    event["event_id"] = event_id
    del event["created_at"]
    return event
