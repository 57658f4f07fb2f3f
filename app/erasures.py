"""`DELETE /users/<reference_id>`: erase a user on the person's request, and `GET /erasures/<id>`: its receipt
(docs/contracts.md §10). Admin token only. The erasure is recorded (and the user's ids forgotten by the event path)
in the request's transaction; the job that does the steps (workers/erasure.py) is queued after the commit."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, current_app, jsonify, request
from redis.exceptions import RedisError
from rq import Queue

from app.users import MAX_BODY_BYTES, admin_request, json_error, refusal_of, unknown_user
from domain.erasure import load_erasure_request
from domain.events import text_problem
from store.erasures import last_erasure_of, load_receipt, queue_erasure, start_erasure

bp = Blueprint("erasures", __name__)
RETRY_AFTER = 5


@bp.before_request
def _small_bodies() -> None:
    """A reason and an operator: a few hundred bytes."""
    request.max_content_length = MAX_BODY_BYTES


@bp.delete("/users/<reference_id:reference_id>", merge_slashes=False)
def erase_user(reference_id: str):
    """202 `{"erasure_id"}`; the same id while that erasure is unfinished; 400 naming the field; 404 unknown user;
    503 when the job could not be queued (the erasure stands: asking again queues it)."""
    refusal, asked = admin_request(reference_id, load_erasure_request)
    if refusal is not None:
        return refusal
    assert asked is not None
    database = current_app.extensions["database"]
    started = start_erasure(database, reference_id, asked, datetime.now(UTC))
    if started is None:
        erased = last_erasure_of(database, reference_id)
        if erased is None:
            return unknown_user(reference_id)
        detail = f"no user with reference id {reference_id!r}: erased by {erased} (GET /erasures/{erased})"
        return jsonify(error="user_not_found", detail=detail, erasure_id=erased), 404
    current_app.logger.info("erasure requested", extra={"outcome": started.erasure_id})
    connection = current_app.extensions["event_queue"].connection
    try:
        queue_erasure(
            connection, Queue(current_app.config["PERSONA"].sync_queue, connection=connection), started.erasure_id
        )
    except RedisError:
        detail = f"erasure {started.erasure_id} is recorded but its job is not queued; ask again to queue it"
        return json_error(503, "queue_unavailable", detail, **{"Retry-After": str(RETRY_AFTER)})
    return jsonify(erasure_id=started.erasure_id), 202


@bp.get("/erasures/<erasure_id>")
def show_erasure(erasure_id: str):
    """The receipt: status, steps, counts, who and why; 404 for an unknown id."""
    refusal = refusal_of()
    if refusal is not None:
        return refusal
    found = None if text_problem(erasure_id, 64) else load_receipt(current_app.extensions["database"], erasure_id)
    if found is None:
        return json_error(404, "erasure_not_found", f"no erasure {erasure_id!r}")
    return jsonify(found)
