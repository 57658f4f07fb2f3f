"""`POST /users/<reference_id>/inquiries`: the inquiry gate (docs/contracts.md §8). The host asks once, before it
shows Persona to a user; the answer comes from the record (domain/gate.py) and, where an inquiry is needed, from
Persona's API: an open one resumed, or a new one created and recorded at once as `created`.

One gate call per user and template runs at a time (a Redis lock: SQLite's readers would not wait for a database
lock), and a create carries an Idempotency-Key made of the user, the template and the template's latest
inquiry, so a call retried after a timeout gets the inquiry Persona made the first time, never a second one.
A call answers within GATE_BUDGET seconds, or 503 with Retry-After.
"""

from __future__ import annotations

import hashlib
import math
import time
from datetime import UTC, datetime, timedelta

from flask import Blueprint, current_app, jsonify, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate
from redis.exceptions import RedisError
from sqlalchemy import select

from app.users import json_error, queue_notification, refusal_of
from clients.persona import (
    InvalidEvent,
    PersonaError,
    PersonaNotFound,
    PersonaUnavailable,
    event_from_document,
    make_persona_client,
)
from domain import gate
from domain.events import QueuedEvent, text_problem
from domain.overrides import NO_OVERRIDES
from domain.schemas import first_error
from domain.summary import summarise
from domain.times import iso_millis
from store.models import User
from store.overrides import overrides_of
from store.records import DuplicateEvent, apply_and_log, facts_of, inquiries_of

bp = Blueprint("gate", __name__)
# Persona gives up on a webhook after 5 s; a host's page load should not wait longer for its answer.
GATE_BUDGET = 4.5
LOCK_PREFIX = "persona-events:gate-lock:"
RETRY_AFTER = 5


def _template_problem(value: str) -> None:
    problem = text_problem(value)
    if problem:
        raise ValidationError(problem)


class GateRequest(Schema):
    class Meta:
        unknown = RAISE

    template_id = fields.String(required=True, validate=_template_problem)
    mode = fields.String(load_default="embedded", validate=validate.OneOf(["embedded", "hosted"]))


def _unavailable(detail: str, retry_after: float | None = None):
    """503 with Retry-After: our usual pause, or the longer one Persona's rate limit asked for."""
    seconds = max(RETRY_AFTER, math.ceil(retry_after or 0))
    return json_error(503, "persona_unavailable", detail, **{"Retry-After": str(seconds)})


@bp.post("/users/<reference_id:reference_id>/inquiries", merge_slashes=False)
def ask(reference_id: str):
    """allow 200, resume 200, create 201, deny 403, review 409 (docs/contracts.md §8)."""
    refusal = refusal_of(host_may=True)
    if refusal is not None:
        return refusal
    problem = gate.reference_problem(reference_id)
    if problem:
        return json_error(400, "invalid_request", f"reference_id: {problem}")
    try:
        document = request.get_json(silent=True)
        if document is None:
            return json_error(400, "invalid_request", 'body: expected JSON such as {"template_id": "itmpl_..."}')
        asked = GateRequest().load(document)
    except (ValidationError, RecursionError) as error:
        detail = first_error(error.messages) if isinstance(error, ValidationError) else "body: nested too deeply"
        return json_error(400, "invalid_request", detail)
    config = current_app.config["PERSONA"]
    client = make_persona_client(config)
    if client is None:
        return json_error(503, "persona_api_disabled", "set PERSONA_API_KEY to enable the inquiry gate")
    deadline = time.monotonic() + GATE_BUDGET
    key = hashlib.sha256(f"{reference_id}\x00{asked['template_id']}".encode()).hexdigest()
    try:
        lock = current_app.extensions["event_queue"].connection.lock(
            LOCK_PREFIX + key, timeout=30, blocking_timeout=GATE_BUDGET
        )
        if not lock.acquire():
            return _unavailable("another call for this user and template is still running; retry")
    except RedisError:
        return _unavailable("the queue is unavailable; retry later")
    try:
        return _answer(client, reference_id, asked["template_id"], asked["mode"], deadline, config)
    except PersonaUnavailable as error:
        detail = "Persona did not answer in time; retry (a retry never creates a second inquiry)"
        return _unavailable(detail, error.retry_after)
    finally:
        client.close()
        try:
            lock.release()
        except RedisError:
            pass  # it expires on its own


def _answer(client, reference_id: str, template_id: str, mode: str, deadline: float, config):
    now = datetime.now(UTC)
    database = current_app.extensions["database"]
    with database.sessions() as session:
        user = session.scalar(select(User).where(User.reference_id == reference_id))
        inquiries = inquiries_of(session, user) if user is not None else []
        facts = {inquiry.id: facts_of(inquiry) for inquiry in inquiries}
        overrides = overrides_of(user) if user is not None else NO_OVERRIDES
        duplicate = bool(user and user.verisoul_duplicate_account)
        decision = summarise(list(facts.values()), now, duplicate, overrides, config.policy).decision
        of_template = [facts[i.id] for i in inquiries if i.template_id == template_id]
        redacted = frozenset(i.id for i in inquiries if i.redacted)  # Persona's redaction: never resumed
    window = timedelta(hours=config.gate_resume_expired_hours)
    answer = gate.answer(
        decision, of_template, now, window, redacted=redacted, retry_after_block=config.retry_after_block
    )
    if answer.action == gate.DENY:
        until = iso_millis(answer.blocked_until) if answer.blocked_until else None
        return jsonify(action="deny", reason=answer.reason, blocked_until=until), 403
    if answer.action == gate.REVIEW:
        return jsonify(action="review"), 409
    if answer.action == gate.ALLOW:
        return jsonify(action="allow"), 200
    if answer.action == gate.RESUME:
        assert answer.inquiry_id is not None
        return jsonify(
            action="resume", inquiry_id=answer.inquiry_id, **_entry(client, answer.inquiry_id, mode, deadline)
        ), 200
    latest = max(of_template, key=lambda f: (f.created_at, f.id)).id if of_template else "none"
    idempotency_key = hashlib.sha256(f"{reference_id}\x00{template_id}\x00{latest}".encode()).hexdigest()
    try:
        document = client.create_inquiry(template_id, reference_id, idempotency_key, deadline)
    except PersonaNotFound:
        return json_error(400, "invalid_request", f"template_id: Persona has no template {template_id!r}")
    except PersonaError as error:
        if error.status in (400, 422):
            return json_error(400, "invalid_request", f"template_id: Persona refused {template_id!r}")
        raise
    inquiry_id = _record_created(database, document, now, config)
    return jsonify(action="create", inquiry_id=inquiry_id, **_entry(client, inquiry_id, mode, deadline)), 201


def _entry(client, inquiry_id: str, mode: str, deadline: float) -> dict:
    """How the user enters the inquiry: a session token (embedded flow) or a one-time link (hosted flow)."""
    if mode == "hosted":
        client.resume_inquiry(inquiry_id, deadline)  # an expired inquiry must be pending before it has a link
        return {"link": client.one_time_link(inquiry_id, deadline)}
    return {"session_token": client.resume_inquiry(inquiry_id, deadline)}


def _record_created(database, document: dict, now: datetime, config) -> str:
    """The new inquiry recorded as `created` through the ordinary event path, so the webhooks that follow find
    it, and the next gate call resumes it."""
    event = _created_event(document, now)
    try:
        applied = apply_and_log(database, event, now, config.record_settings)
    except DuplicateEvent:
        pass  # recorded by an earlier call that Persona answered with this same inquiry
    else:
        if applied.announced and applied.user:
            queue_notification(applied.user)
    return event["object_id"]


def _created_event(document: dict, now: datetime) -> QueuedEvent:
    data = document.get("data")
    data = data if isinstance(data, dict) else {}
    attributes = data.get("attributes")
    attributes = attributes if isinstance(attributes, dict) else {}
    at = attributes.get("created-at") or attributes.get("created_at") or iso_millis(now)
    envelope = {
        "data": {
            "type": "event",
            "id": f"gate_{data.get('id')}",
            "attributes": {"name": "inquiry.created", "created-at": at, "payload": document},
        }
    }
    try:
        return event_from_document(envelope, now)
    except InvalidEvent as error:
        raise PersonaError(200, f"the created inquiry is not one the service can record: {error}") from None
