"""A fake Persona API for development and tests: the events and inquiries endpoints, in memory.

It fakes the part of Persona's API that docs/persona.md describes (client base URL ``http://host:port``):

- ``GET /api/v1/events``: the stored events, newest first, ordered by (created-at desc, id desc);
  ``page[size]`` (default 10, 1..100) and ``page[after]=<event id>`` (the events after that one in this order);
  answers ``{"data": [...], "links": {"prev": null, "next": "/api/v1/events?page[after]=<last id>&page[size]=N"}}``,
  ``next`` null on the last page;
- ``GET /api/v1/events/<event_id>``: ``{"data": event}``;
- ``GET /api/v1/inquiries/<inquiry_id>``: the stored inquiry document ``{"data": inquiry, "included": [...]}``;
- ``POST /api/v1/inquiries`` with ``{"data": {"attributes": {"inquiry-template-id", "reference-id"}}}``: 201 and a
  ``created`` inquiry; a retry with the same ``Idempotency-Key`` answers 200 and that inquiry again (each create
  is in the call log); 422 for a value that is not a template id, 404 for one in ``unknown_templates``;
- ``POST /api/v1/inquiries/<id>/resume``: ``meta.session-token`` for a created, pending or expired inquiry (an
  expired one becomes pending), 422 for any other or a redacted one;
- ``POST /api/v1/inquiries/<id>/generate-one-time-link``: ``meta.one-time-link`` for a created or pending one;
- ``DELETE /api/v1/inquiries/<id>``: redacts the stored inquiry (``redacted-at`` set, every attribute but the
  status and the lifecycle times dropped, ``included`` emptied) and answers it; 404 for one not stored. Redacting
  again answers the redacted inquiry.

Stored documents are answered exactly as they were stored, in whatever key casing they came in. Every API
request needs ``Authorization: Bearer <api_key>`` (401 otherwise); its ``Persona-Version`` header is recorded,
not checked. Errors have Persona's JSON:API shape ``{"errors": [{"title": "...", "detail": "..."}]}``: 400 for
a bad ``page[size]`` or an unknown ``page[after]``, 404 ``Record not found``. The switches, set at start
(CLI flags) or via ``POST /_control/config``:

- ``api_key`` (default "fake-persona-key");
- ``fail_next``: status codes answered to the next API requests, one each, in order;
- ``fail_rate_500``, ``fail_rate_429``: probability (0..1) that a request fails with that status, drawn from
  ``random.Random(seed)``;
- ``reset_seconds`` (default 1): the ``ratelimit-reset`` header of every 429; null sends none;
- ``seed``: seeds the failure draws (setting it reseeds);
- ``unknown_templates``: template ids answered 404, as Persona answers for a template it does not know.

Requests are checked in the order api key → ``fail_next`` → ``fail_rate_500`` → ``fail_rate_429`` → the
request itself. The fake has no rate limit of its own.

Control API, no api key: ``POST /_control/reset`` (forget events, inquiries and calls; restore the starting
switches), ``POST /_control/events`` with a JSON list of event documents ``{"data": event}`` exactly as Persona
sends them in webhooks (any key casing; each needs an ``id`` and an ISO-8601 ``created-at``; an event with a
stored id replaces it), ``POST /_control/inquiries`` with a list of documents ``{"data": inquiry, "included": [...]}``,
``GET``/``POST /_control/config``, ``GET /_control/calls`` (method, path, query, status and persona_version of
every API request, in order of answer).

Routes match the request path as it came over the wire (``RawPathApp`` in scripts/fake_server.py):
an id is one segment, percent-decoded, so ``/api/v1/inquiries/a%2Fb`` asks for inquiry ``a/b`` and
``/api/v1/events/%2E%2E`` for event ``..``; each call's ``path`` in the log is the raw path.

Run: ``python -m scripts.fake_persona --port 8091`` (``--port 0`` picks a free port; the ready line shows it).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

from flask import Flask, jsonify, request

from scripts import fake_server

DEFAULT_API_KEY = "fake-persona-key"
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
NOT_FOUND = "Record not found"
CREATED_AT_KEYS = ("created-at", "created_at", "createdAt")


@dataclass
class FakeConfig:
    """The switches; see the module docstring."""

    api_key: str = DEFAULT_API_KEY
    fail_next: list[int] = field(default_factory=list)
    fail_rate_500: float = 0.0
    fail_rate_429: float = 0.0
    reset_seconds: float | None = 1
    seed: int | None = None
    # Template ids the fake answers 422 for, as Persona does for a template it does not know.
    unknown_templates: list[str] = field(default_factory=list)


class FakeState(fake_server.FakeServerState[FakeConfig]):
    """Everything the fake remembers, behind one lock."""

    def __init__(self, config: FakeConfig | None = None):
        super().__init__(config or FakeConfig())

    def reset(self) -> None:
        super().reset()
        self.events: dict[str, dict] = {}  # id → the resource, as stored
        self.inquiries: dict[str, dict] = {}  # id → the whole document
        self.idempotency: dict[str, str] = {}  # Idempotency-Key → the inquiry that key created

    def newest_first(self) -> list[dict]:
        return sorted(self.events.values(), key=lambda event: (_created_at(event), event["id"]), reverse=True)


def _created_at(resource: dict) -> datetime | None:
    attributes = resource.get("attributes")
    if not isinstance(attributes, dict):
        return None
    value = next((attributes[key] for key in CREATED_AT_KEYS if key in attributes), None)
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return moment if moment is not None and moment.utcoffset() is not None else None


def _error(status: int, title: str | None = None, detail: str | None = None) -> tuple[int, dict]:
    error = {"title": title or fake_server.phrase(status)}
    if detail:
        error["detail"] = detail
    return status, {"errors": [error]}


def _error_reply(status: int, title: str, detail: str | None):
    """The shared routes' errors (fake_server.ErrorReply) in Persona's shape."""
    return _reply(*_error(status, title, detail))


# --- the gate every API request passes first ---


def _gate(state: FakeState) -> tuple[int, dict] | None:
    if request.headers.get("Authorization") != f"Bearer {state.config.api_key}":
        return _error(401, "Unauthorized", "Must be authenticated with a valid API key")
    status = state.injected_failure()
    return _error(status) if status is not None else None


# --- API handlers: (state, **view args) → (status, body) ---


def _page_size() -> int | None:
    raw = request.args.get("page[size]", str(DEFAULT_PAGE_SIZE))
    size = int(raw) if raw.isascii() and raw.isdigit() else None
    return size if size is not None and 1 <= size <= MAX_PAGE_SIZE else None


def _list_events(state: FakeState) -> tuple[int, dict]:
    size = _page_size()
    if size is None:
        return _error(400, "Bad Request", f"page[size] must be an integer from 1 to {MAX_PAGE_SIZE}")
    ordered = state.newest_first()
    after = request.args.get("page[after]")
    if after is not None:
        ids = [event["id"] for event in ordered]
        if after not in ids:
            return _error(400, "Bad Request", "page[after] is not the id of a listed event")
        ordered = ordered[ids.index(after) + 1 :]
    page = ordered[:size]
    more = len(ordered) > size
    query = urlencode({"page[after]": page[-1]["id"], "page[size]": size}, safe="[]") if more else None
    next_link = f"/api/v1/events?{query}" if query else None
    return 200, {"data": page, "links": {"prev": None, "next": next_link}}


def _get_event(state: FakeState, event_id: str) -> tuple[int, dict]:
    event = state.events.get(event_id)
    return (200, {"data": event}) if event is not None else _error(404, NOT_FOUND)


def _get_inquiry(state: FakeState, inquiry_id: str) -> tuple[int, dict]:
    document = state.inquiries.get(inquiry_id)
    return (200, document) if document is not None else _error(404, NOT_FOUND)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _create_inquiry(state: FakeState) -> tuple[int, dict]:
    """`POST /api/v1/inquiries`: a `created` inquiry for the template and reference id; a retry with the same
    `Idempotency-Key` gets the same inquiry back, not a second one."""
    body = request.get_json(silent=True)
    data = body.get("data") if isinstance(body, dict) else None
    attributes = data.get("attributes") if isinstance(data, dict) else None
    if not isinstance(attributes, dict):
        return _error(400, "Bad Request", "data.attributes is required")
    template = attributes.get("inquiry-template-id") or attributes.get("template-id")
    if not isinstance(template, str) or not template.startswith(("itmpl_", "tmpl_")):
        return _error(422, "Unprocessable Entity", "inquiry-template-id must be a template id")
    if template in state.config.unknown_templates:
        return _error(404, NOT_FOUND, f"no inquiry template {template}")
    key = request.headers.get("Idempotency-Key")
    if key and key in state.idempotency:
        return 200, state.inquiries[state.idempotency[key]]
    inquiry_id = f"inq_{secrets.token_hex(12)}"
    relation = "inquiry-template" if template.startswith("itmpl_") else "template"
    state.inquiries[inquiry_id] = {
        "data": {
            "type": "inquiry",
            "id": inquiry_id,
            "attributes": {"status": "created", "reference-id": attributes.get("reference-id"), "created-at": _now()},
            "relationships": {relation: {"data": {"type": relation, "id": template}}},
        }
    }
    if key:
        state.idempotency[key] = inquiry_id
    return 201, state.inquiries[inquiry_id]


def _resume_inquiry(state: FakeState, inquiry_id: str) -> tuple[int, dict]:
    """`POST .../resume`: a session token for a created, pending or expired inquiry (an expired one is pending
    again); never for a redacted one."""
    document = state.inquiries.get(inquiry_id)
    if document is None:
        return _error(404, NOT_FOUND)
    attributes = document["data"]["attributes"]
    if attributes.get("redacted-at") or attributes.get("status") not in ("created", "pending", "expired"):
        return _error(422, "Unprocessable Entity", f"an inquiry that is {attributes.get('status')} cannot be resumed")
    if attributes["status"] == "expired":
        attributes["status"] = "pending"
    return 200, {**document, "meta": {"session-token": f"sess_{secrets.token_hex(16)}"}}


def _one_time_link(state: FakeState, inquiry_id: str) -> tuple[int, dict]:
    """`POST .../generate-one-time-link`: a link for a created or pending inquiry (resume an expired one first)."""
    document = state.inquiries.get(inquiry_id)
    if document is None:
        return _error(404, NOT_FOUND)
    attributes = document["data"]["attributes"]
    if attributes.get("redacted-at") or attributes.get("status") not in ("created", "pending"):
        return _error(422, "Unprocessable Entity", f"no link for an inquiry that is {attributes.get('status')}")
    link = f"https://withpersona.com/verify?code={secrets.token_urlsafe(16)}"
    return 200, {**document, "meta": {"one-time-link": link}}


# What a redaction keeps of an inquiry's attributes: nothing personal, in any key casing.
KEPT_WHEN_REDACTED = ("status", *CREATED_AT_KEYS, "completed-at", "completed_at", "completedAt")


def _redact_inquiry(state: FakeState, inquiry_id: str) -> tuple[int, dict]:
    """`DELETE /api/v1/inquiries/<id>`: Persona removes the inquiry's personal data; the inquiry itself stays."""
    document = state.inquiries.get(inquiry_id)
    if document is None:
        return _error(404, NOT_FOUND)
    attributes = document["data"].get("attributes") or {}
    kept = {key: value for key, value in attributes.items() if key in KEPT_WHEN_REDACTED}
    kept["redacted-at"] = attributes.get("redacted-at") or _now()
    state.inquiries[inquiry_id] = {"data": {**document["data"], "attributes": kept}, "included": []}
    return 200, state.inquiries[inquiry_id]


API_ROUTES = [
    ("/api/v1/events", "list_events", _list_events, "GET"),
    ("/api/v1/events/<segment:event_id>", "get_event", _get_event, "GET"),
    ("/api/v1/inquiries/<segment:inquiry_id>", "get_inquiry", _get_inquiry, "GET"),
    ("/api/v1/inquiries/<segment:inquiry_id>", "redact_inquiry", _redact_inquiry, "DELETE"),
    ("/api/v1/inquiries", "create_inquiry", _create_inquiry, "POST"),
    ("/api/v1/inquiries/<segment:inquiry_id>/resume", "resume_inquiry", _resume_inquiry, "POST"),
    ("/api/v1/inquiries/<segment:inquiry_id>/generate-one-time-link", "one_time_link", _one_time_link, "POST"),
]


def _make_view(state: FakeState, handler):
    def view(**args):
        with state.lock:
            status, body = _gate(state) or handler(state, **args)
            state.calls.append({
                "method": request.method,
                "path": request.path,
                "query": request.args.to_dict(),
                "status": status,
                "persona_version": request.headers.get("Persona-Version"),
            })  # fmt: skip
            reset_seconds = state.config.reset_seconds
        return _reply(status, body, reset_seconds)

    return view


def _reply(status: int, body, reset_seconds: float | None = None):
    response = jsonify(body)
    response.status_code = status
    if status == 429 and reset_seconds is not None:
        response.headers["ratelimit-reset"] = str(reset_seconds)
    return response


# --- control API ---


def _documents_problem(documents, needs_created_at: bool) -> str | None:
    if not isinstance(documents, list):
        return "body must be a JSON list of documents"
    for index, document in enumerate(documents):
        data = document.get("data") if isinstance(document, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
            return f"document {index}: data must be an object with a non-empty string id"
        if needs_created_at and _created_at(data) is None:
            return f"document {index}: data.attributes needs an ISO-8601 created-at with a time zone"
    return None


def _store_events(state: FakeState, documents) -> str | None:
    problem = _documents_problem(documents, needs_created_at=True)
    if problem is None:
        state.events.update((document["data"]["id"], document["data"]) for document in documents)
    return problem


def _store_inquiries(state: FakeState, documents) -> str | None:
    problem = _documents_problem(documents, needs_created_at=False)
    if problem is None:
        state.inquiries.update((document["data"]["id"], document) for document in documents)
    return problem


def _config_problem(config: FakeConfig) -> str | None:
    def is_number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    checks = [
        (isinstance(config.api_key, str) and config.api_key != "", "api_key must be a non-empty string"),
        (isinstance(config.fail_next, list)
         and all(isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in config.fail_next),
         "fail_next must be a list of HTTP status codes"),
        (all(is_number(r) and 0 <= r <= 1 for r in (config.fail_rate_500, config.fail_rate_429)),
         "fail rates must be numbers from 0 to 1"),
        (config.reset_seconds is None or (is_number(config.reset_seconds) and config.reset_seconds >= 0),
         "reset_seconds must be a number >= 0 or null"),
        (config.seed is None or (isinstance(config.seed, int) and not isinstance(config.seed, bool)),
         "seed must be an integer or null"),
        (isinstance(config.unknown_templates, list) and all(isinstance(t, str) for t in config.unknown_templates),
         "unknown_templates must be a list of template ids"),
    ]  # fmt: skip
    return next((message for ok, message in checks if not ok), None)


def _control_answer(problem: str | None, body):
    return _error_reply(400, "Bad Request", problem) if problem else _reply(200, body)


def _register_control(app: Flask, state: FakeState) -> None:
    @app.post("/_control/events")
    def control_events():
        documents = request.get_json(silent=True)
        with state.lock:
            problem = _store_events(state, documents)
            count = len(state.events)
        return _control_answer(problem, {"stored": count})

    @app.post("/_control/inquiries")
    def control_inquiries():
        documents = request.get_json(silent=True)
        with state.lock:
            problem = _store_inquiries(state, documents)
            count = len(state.inquiries)
        return _control_answer(problem, {"stored": count})


def create_fake_app(state: FakeState | None = None) -> Flask:
    state = state or FakeState()
    app = fake_server.fake_app(__name__, state, _config_problem, _error_reply)
    for rule, endpoint, handler, method in API_ROUTES:
        app.add_url_rule(rule, endpoint=endpoint, view_func=_make_view(state, handler), methods=[method])
    _register_control(app, state)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = fake_server.argument_parser(__doc__.splitlines()[0], port=8091, api_key=DEFAULT_API_KEY)
    parser.add_argument("--reset-seconds", type=float, default=1, help="ratelimit-reset of every 429")
    args = parser.parse_args(argv)
    config = FakeConfig(**fake_server.fault_switches(args), reset_seconds=args.reset_seconds)
    problem = _config_problem(config)
    if problem:
        parser.error(problem)
    return fake_server.serve(create_fake_app(FakeState(config)), args.host, args.port, "Persona")


if __name__ == "__main__":
    raise SystemExit(main())
