"""`POST /webhooks/persona`: verify, validate, minimise, queue, answer.

Events are untrusted until verified. The checks run in a fixed order so that nothing an
unauthenticated sender controls is parsed: size cap, signature on the raw bytes, then JSON and the
envelope. A 2xx is sent only once the event is durably queued (or was already): Persona retries
anything else, so a 503 while Redis is down loses nothing.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Blueprint, current_app, jsonify, request
from marshmallow import ValidationError
from redis.exceptions import RedisError

from domain import signature
from domain.events import QueuedEvent, body_sha256, is_queued_name, normalise_envelope
from domain.schemas import first_error, load_event
from domain.times import iso_millis
from runtime import metrics

bp = Blueprint("webhooks", __name__)
log = logging.getLogger(__name__)

# Persona retries on its own schedule; the header is for anyone else posting here.
RETRY_AFTER_SECONDS = 30
_READ_CHUNK = 64 * 1024


class Rejection(Exception):
    """A request answered with an error; `fields` add to the request's log line."""

    def __init__(self, status: int, code: str, detail: str, **fields):
        super().__init__(detail)
        self.status, self.code, self.detail, self.fields = status, code, detail, fields


def _read_capped(limit: int) -> bytes:
    """The raw body, refusing by Content-Length first and stopping a chunked body at the cap."""
    if request.content_length is not None and request.content_length > limit:
        raise Rejection(413, "payload_too_large", f"body is over {limit} bytes")
    chunks, size = [], 0
    while chunk := _read_some(min(_READ_CHUNK, limit + 1 - size)):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise Rejection(413, "payload_too_large", f"body is over {limit} bytes")
    if request.content_length is not None and size < request.content_length:
        # gunicorn hands over what came before the client stopped sending, without an error.
        detail = f"the request body ended after {size} of its {request.content_length} bytes"
        raise Rejection(400, "invalid_body", detail, reason="short_body")
    return b"".join(chunks)


def _read_some(size: int) -> bytes:
    """Up to `size` bytes of the body; a body the server cannot deliver is the client's fault, a 400.

    The server's input stream raises its own classes when the body's framing is broken or the client
    goes away: gunicorn's InvalidChunkSize and ChunkMissingTerminator (ParseExceptions, which derive
    from Exception only), NoMoreData and socket timeouts (OSErrors), werkzeug's ClientDisconnected for
    a body shorter than its Content-Length. Which of them depends on the server and its worker class
    (sync, gthread, gevent), and none is an error of this service: whatever the stream raises is
    answered as bad framing, so it is logged and counted like any rejection instead of escaping as a 500.
    """
    try:
        return request.stream.read(size)
    except Exception as error:  # noqa: BLE001 - see above: every failure to read the body is the request's
        reason = type(error).__name__
        detail = f"the request body is malformed or incomplete ({reason})"
        raise Rejection(400, "invalid_body", detail, reason=reason) from None


def _verify(body: bytes) -> None:
    config = current_app.config["PERSONA"]
    try:
        signature.verify(
            body,
            request.headers.get("Persona-Signature"),
            config.webhook_secrets,
            time.time(),
            config.signature_tolerance,
        )
    except signature.SignatureError as error:
        raise Rejection(401, "invalid_signature", error.detail, reason=error.reason) from None


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


def _number(digits: str) -> int | float:
    return int(digits) if len(digits) <= 4000 else float(digits)


def parse_json(body: bytes) -> Any:
    """The body's JSON document; raises ValueError (RecursionError when nested too deeply) when it is not one.

    What json.loads takes, as it reads it: strictly UTF-8 (RFC 8259 §8.1; json.loads(bytes) would also take
    UTF-16 and UTF-32). A `\\ud800` escape decodes to a lone surrogate: refused only where it is kept
    (domain/events.py), since a personal-data attribute holding one is dropped anyway and must not cost an
    authentic event. A leading BOM, NaN and Infinity are taken (RFC 8259 allows parsers extensions).
    Integers longer than Python converts (4300 digits) become floats: no kept field is a number, and a huge
    one in dropped data must not cost the event.

    orjson reads most bodies in a third of the time. It refuses more (a BOM, NaN, 1e400, a lone surrogate,
    nesting past 1024 levels), and those json decides, so the bodies taken are json's. Where both take a
    body, they read it alike but for integers beyond 64 bits, which orjson reads as floats: no kept field is
    a number, so the answer and the queued event are the same."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body.decode("utf-8-sig"), parse_int=_number)


def _parse(body: bytes) -> QueuedEvent:
    """JSON → normalised keys where they are read → a validated envelope's queued form (`minimise`)."""
    if not _is_json(request.mimetype):
        raise Rejection(415, "unsupported_media_type", "Content-Type must be application/json")
    try:
        document = normalise_envelope(parse_json(body))
    except ValueError:  # UnicodeError and JSONDecodeError are ValueErrors
        raise Rejection(400, "invalid_json", "body is not valid UTF-8 JSON") from None
    except RecursionError:
        raise Rejection(400, "invalid_json", "body JSON is nested too deeply") from None
    try:
        return load_event(document, body_sha256(body))
    except ValidationError as error:
        raise Rejection(400, "invalid_envelope", first_error(error.messages)) from None


def _queue(event: QueuedEvent) -> str:
    event["received_at"] = iso_millis(datetime.now(UTC))
    try:
        queued = current_app.extensions["event_queue"].enqueue_once(event)
    except RedisError as error:
        detail = "the event queue is unavailable; retry later"
        raise Rejection(503, "queue_unavailable", detail, reason=type(error).__name__) from None
    return "queued" if queued else "duplicate"


def _handle(fields: dict) -> tuple[int, dict]:
    body = _read_capped(current_app.config["PERSONA"].max_webhook_bytes)
    _verify(body)
    event = _parse(body)
    event_id, name = event["event_id"], event["name"]
    fields.update(event_id=event_id, event_name=name)
    status = _queue(event) if is_queued_name(name) else "ignored"
    return 200, {"status": status, "event_id": event_id}


def _attempts_made() -> int | None:
    """Persona's retry counter, logged only when it is a plain number (the header is sender-controlled)."""
    value = request.headers.get("Persona-Webhook-Attempts-Made", "")
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 6 else None


@bp.post("/webhooks/persona")
def receive():
    started = time.perf_counter()
    fields: dict = {"attempts_made": _attempts_made()}
    try:
        status, payload = _handle(fields)
        fields["outcome"] = payload["status"]
    except Rejection as rejection:
        status, payload = rejection.status, {"error": rejection.code, "detail": rejection.detail}
        fields.update(outcome=rejection.code, **rejection.fields)
    elapsed = time.perf_counter() - started
    fields.update(status=status, duration_ms=round(elapsed * 1000, 3))
    log.info("webhook", extra=fields)
    metrics.WEBHOOKS.labels(fields["outcome"]).inc()
    if status == 401:
        metrics.SIGNATURE_FAILURES.labels(fields["reason"]).inc()
    metrics.WEBHOOK_DURATION.observe(elapsed)
    response = jsonify(payload)
    response.status_code = status
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
