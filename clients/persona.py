"""Persona API client: fetch events and inquiries again, to replay or reconcile what the webhooks delivered.

A fetched event is as untrusted as a webhook body: `event_from_document` sends it through the webhook's
own path (normalise, validate, minimise), so nothing personal goes further than this module's caller.
Transient failures (connection errors, 5xx, 429) are retried here, with backoff, and nowhere else; a 429
waits for Persona's `ratelimit-reset` instead. Any other 4xx is final (PersonaError). The API key goes in
the session's headers only: never into a log line or an exception message.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator
from datetime import datetime
from urllib.parse import quote

import requests
from marshmallow import ValidationError

from clients.urls import SendsUrlsAsBuilt, segment
from domain.events import QueuedEvent, body_sha256, minimise, normalise_keys
from domain.schemas import first_error, load_envelope
from domain.times import iso_millis, parse_rfc3339

# The envelope shape we parse is this version's; a later version must be adopted deliberately.
PERSONA_VERSION = "2023-01-05"
# (connect, read) seconds: listing pages of 100 events can be slow, a dead host must not hold a worker.
TIMEOUTS = (3.05, 15)
# 5 attempts over ~8 s of backoff (0.5, 1, 2, 4 s, each with up to 50% jitter), longer when rate limited.
ATTEMPTS = 5
BACKOFF_BASE = 0.5
MAX_PAGE_SIZE = 100
# Persona's window is a minute; a larger reset value is a bug or an attack on our worker's time.
MAX_RATELIMIT_WAIT = 60
# Seconds an attempt needs after a wait, before the caller's deadline: a wait that leaves less is not taken.
MIN_ATTEMPT_TIME = 0.5


class PersonaError(Exception):
    """Persona refused the request (a 4xx other than 429), or answered 2xx with something unusable."""

    def __init__(self, status: int, message: str):
        super().__init__(f"Persona answered {status}: {message}")
        self.status = status


class PersonaNotFound(PersonaError):
    """404: the event or inquiry does not exist (events are kept for 30 days)."""


class PersonaUnavailable(Exception):
    """Persona did not answer usefully after every attempt. `retry_after`: the seconds Persona's rate limit
    asked to wait, when that wait did not fit before the deadline (None otherwise)."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class InvalidEvent(ValueError):
    """A fetched document is not an event envelope the webhook would have accepted."""


class _Session(SendsUrlsAsBuilt, requests.Session):
    """A session that sends `segment()`'s encoding as it is (see clients.urls)."""


class PersonaClient:
    def __init__(self, base_url: str, api_key: str, *, sleep=time.sleep, attempts: int = ATTEMPTS):
        self.base_url = base_url.rstrip("/")
        self.session = _Session()
        self.session.headers.update(
            {"Authorization": f"Bearer {api_key}", "Persona-Version": PERSONA_VERSION, "Accept": "application/json"}
        )
        self._api_key = api_key
        self.sleep = sleep
        self.attempts = attempts

    def close(self) -> None:
        self.session.close()

    def get_event(self, event_id: str) -> dict:
        return self._get(f"/api/v1/events/{segment(event_id)}")

    def get_inquiry(self, inquiry_id: str) -> dict:
        """The current inquiry with its `included` objects: full of personal data, so never store or log it."""
        return self._get(f"/api/v1/inquiries/{segment(inquiry_id)}")

    def list_events(
        self, since: datetime | None = None, until: datetime | None = None, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[dict]:
        """Events created from `since` to `until` (both inclusive), newest first, each as `{"data": event}`.

        The arguments are checked now, not at the first `next()`, so a bad call fails where it is made.
        """
        if not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be from 1 to {MAX_PAGE_SIZE}, got {page_size}")
        for bound in (since, until):
            if bound is not None and bound.utcoffset() is None:
                raise ValueError("since and until must be timezone-aware datetimes")
        return self._events(since, until, page_size)

    def _events(self, since: datetime | None, until: datetime | None, page_size: int) -> Iterator[dict]:
        after = None
        while True:
            page = self._get(_events_path(page_size, after))
            resources = page.get("data")
            if not isinstance(resources, list):
                raise PersonaError(200, "the events page has no `data` list")
            for resource in resources:
                created = _created_at(resource)
                # An unreadable created-at is yielded, not dropped: event_from_document reports it.
                if created is not None and until is not None and created > until:
                    continue
                if created is not None and since is not None and created < since:
                    return  # newest first: every later event is older still
                yield {"data": resource}
            links = page.get("links")
            if not resources or not isinstance(links, dict) or not links.get("next"):
                return
            after = _cursor(resources[-1])

    def create_inquiry(self, template_id: str, reference_id: str, idempotency_key: str, deadline: float) -> dict:
        """`POST /api/v1/inquiries` (docs/persona.md): a `created` inquiry of the template for the host's user,
        its document. The key makes a retry (here, or the caller's after a timeout) return the same inquiry.
        `deadline` is a `time.monotonic()` by which to give up: PersonaUnavailable then, not a late answer."""
        key = "template-id" if template_id.startswith("tmpl_") else "inquiry-template-id"
        body = {"data": {"attributes": {key: template_id, "reference-id": reference_id}}}
        return self._request("POST", "/api/v1/inquiries", body, {"Idempotency-Key": idempotency_key}, deadline)

    def resume_inquiry(self, inquiry_id: str, deadline: float) -> str:
        """A session token for a created, pending or expired inquiry (`meta.session-token`); an expired one is
        pending again. Raises PersonaError for one that cannot be resumed (decided, redacted)."""
        answer = self._request("POST", f"/api/v1/inquiries/{segment(inquiry_id)}/resume", None, {}, deadline)
        return _meta(answer, "session-token")

    def one_time_link(self, inquiry_id: str, deadline: float) -> str:
        """A one-time link to the hosted flow for a created or pending inquiry (`meta.one-time-link`)."""
        path = f"/api/v1/inquiries/{segment(inquiry_id)}/generate-one-time-link"
        return _meta(self._request("POST", path, None, {}, deadline), "one-time-link")

    def redact_inquiry(self, inquiry_id: str) -> bool:
        """`DELETE /api/v1/inquiries/{id}` (docs/persona.md): Persona removes the inquiry's personal data. True when
        redacted now, False when Persona has no such inquiry (404: already gone)."""
        try:
            self._request("DELETE", f"/api/v1/inquiries/{segment(inquiry_id)}", None, {}, None)
        except PersonaNotFound:
            return False
        return True

    def _get(self, path: str) -> dict:
        return self._request("GET", path, None, {}, None)

    def _request(self, method: str, path: str, body: dict | None, headers: dict, deadline: float | None) -> dict:
        """One call, retried on a connection error, a 5xx or a 429 (after `ratelimit-reset`) until the attempts
        run out, or the deadline leaves no time to wait and try again (then at once, not late)."""
        problem, wait = "no attempt made", 0.0
        for attempt in range(self.attempts):
            if attempt:
                if deadline is not None and time.monotonic() + wait + MIN_ATTEMPT_TIME > deadline:
                    raise PersonaUnavailable(
                        f"{method} {path}: {problem} after {attempt} attempts, and no time left to wait for another",
                        retry_after=wait if problem == "HTTP 429" else None,
                    )
                self.sleep(wait)
            timeouts = TIMEOUTS if deadline is None else _within(deadline)
            try:
                response = self.session.request(
                    method, self.base_url + path, json=body, headers=headers, timeout=timeouts
                )
            except requests.RequestException as error:
                # Its name only: the message quotes the URL and whatever else requests saw fit to add.
                problem, wait = type(error).__name__, _backoff(attempt)
                continue
            if response.status_code == 429:
                problem, wait = "HTTP 429", _ratelimit_wait(response.headers, attempt)
                continue
            if response.status_code >= 500:
                problem, wait = f"HTTP {response.status_code}", _backoff(attempt)
                continue
            return self._answer(response)
        raise PersonaUnavailable(f"{method} {path}: {problem} after {self.attempts} attempts")

    def _answer(self, response: requests.Response) -> dict:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            kind = PersonaNotFound if response.status_code == 404 else PersonaError
            # Persona's own text, quoted: it should never hold the key, but nothing here relies on that.
            raise kind(response.status_code, self._redact(_error_text(body, response.reason)))
        if not isinstance(body, dict):
            raise PersonaError(response.status_code, "the body is not a JSON object")
        return body

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "[redacted]") if self._api_key else text


def _events_path(page_size: int, after: str | None) -> str:
    """The list request's path and query. The names keep Persona's literal brackets; each value (the cursor
    is an event id) is encoded whole, brackets included, so no id can add or end a parameter."""
    params = {"page[size]": str(page_size)}
    if after is not None:
        params["page[after]"] = after
    return "/api/v1/events?" + "&".join(f"{name}={quote(value, safe='')}" for name, value in params.items())


def _cursor(resource) -> str:
    event_id = resource.get("id") if isinstance(resource, dict) else None
    if not isinstance(event_id, str) or not event_id:
        raise PersonaError(200, "the last event of a page has no id to page on from")
    return event_id


def _created_at(resource) -> datetime | None:
    """The event's created-at in any key casing, or None when absent or not an RFC 3339 time (the webhook's rule)."""
    attributes = normalise_keys(resource.get("attributes")) if isinstance(resource, dict) else None
    value = attributes.get("created_at") if isinstance(attributes, dict) else None
    try:
        return parse_rfc3339(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _within(deadline: float) -> tuple[float, float]:
    """The (connect, read) timeouts of one attempt that must end by `deadline` (at least a tenth of a second)."""
    left = max(deadline - time.monotonic(), 0.1)
    return min(TIMEOUTS[0], left), min(TIMEOUTS[1], left)


def _meta(answer: dict, name: str) -> str:
    value = answer.get("meta", {}).get(name) if isinstance(answer.get("meta"), dict) else None
    if not isinstance(value, str) or not value:
        raise PersonaError(200, f"the answer has no meta.{name}")
    return value


def _backoff(attempt: int) -> float:
    return BACKOFF_BASE * 2**attempt * (1 + random.random() / 2)


def _ratelimit_wait(headers, attempt: int) -> float:
    """Persona says when its window resets; without a usable value, back off as for a 5xx."""
    reset = reset_seconds(headers.get("ratelimit-reset"))
    return _backoff(attempt) if reset is None else min(reset, MAX_RATELIMIT_WAIT)


def reset_seconds(value: str | None) -> float | None:
    """`ratelimit-reset` as seconds (int or float text); None when missing, negative or not a number."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def _error_text(body, fallback: str) -> str:
    """JSON:API `errors[0]`: its title and detail, whichever are present."""
    errors = body.get("errors") if isinstance(body, dict) else None
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    parts = [first.get(key) for key in ("title", "detail")]
    return ": ".join(part for part in parts if isinstance(part, str) and part) or fallback or "no message"


def event_from_document(document: dict, received_at: datetime) -> QueuedEvent:
    """A fetched event envelope, minimised exactly as the webhook minimises a delivery."""
    body_hash = body_sha256(_canonical_json(document))
    try:
        envelope = load_envelope(normalise_keys(document))
    except ValidationError as error:
        raise InvalidEvent(first_error(error.messages)) from None
    event = minimise(envelope, body_hash)
    event["received_at"] = iso_millis(received_at)
    return event


def _canonical_json(document) -> bytes:
    """What the event's hash covers. A fetched event has no raw delivery body to hash, so its canonical JSON
    stands in: the same document gets the same hash whatever order Persona sent its keys in."""
    try:
        # surrogatepass: a lone surrogate in personal data the service drops must not cost the event
        # (the webhook takes it too); in a kept field, load_envelope refuses it, naming the field.
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
            "utf-8", "surrogatepass"
        )
    except (TypeError, ValueError, RecursionError):  # not JSON-shaped, or nested too deeply
        raise InvalidEvent("body: not a JSON document") from None


def make_persona_client(config) -> PersonaClient | None:
    """The client for `config` (runtime.config.Config), or None when no PERSONA_API_KEY is set."""
    if not config.persona_api_key:
        return None
    return PersonaClient(config.persona_api_url, config.persona_api_key)
