"""`GET /users/<reference_id>`: the user record, for the host application to ask before it offers a
new verification (docs/contracts.md §4, §5); `GET /users`: users by standing, a page at a time, and
`POST /users/<reference_id>/actions`: an operator's override (§7). Guarded by a bearer token; with no token
configured the routes are disabled (503), never open."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from flask import Blueprint, current_app, jsonify, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate
from rq import Queue
from werkzeug.routing import BaseConverter

from domain.events import MAX_TEXT_LENGTH, text_problem
from domain.overrides import load_override_request
from domain.policy import DECISION_NAMES
from domain.schemas import first_error
from store.notify_queue import request_delivery_unless_away
from store.operator_actions import override_user
from store.overrides import UnknownInquiry
from store.sync_queue import request_sync_unless_away
from store.user_list import UserFilter, list_users
from store.user_record import load_user_record

T = TypeVar("T")
bp = Blueprint("users", __name__)


class ReferenceIdConverter(BaseConverter):
    """`<reference_id:...>`: the rest of the path, whatever it holds, as the host's reference id.

    docs/contracts.md §3: a reference id is any string the host chose, `/` included, sent raw or as `%2F`. The WSGI
    server percent-decodes PATH_INFO before Flask sees it, so both forms arrive as the same `a/b` and only a
    converter that spans segments can read them. Its regex, any character once or more, also takes what
    werkzeug's `path` (`[^/].*?`) refuses: an id that starts or ends with `/`, or holds a line break (`%0A`).
    `%2E%2E`, `%3F`, `%23`, `%25`, `%20` and UTF-8 escapes arrive decoded too.

    Room for the sub-resources of later issues (`POST /users/<reference_id>/inquiries`, `.../actions`): the
    converter is anchored by whatever static text follows it in a rule, so `POST /users/a%2Fb/inquiries` is
    the inquiries of user `a/b`. Werkzeug picks among rules by method as well as path, so `GET /users/x/actions`
    still reads user `x/actions`: keep each sub-resource on a method the record's own route does not answer
    (GET, DELETE), or that suffix can no longer end a readable reference id.
    """

    regex = r"[\s\S]+"
    # Werkzeug would infer True from a regex without "/"; this one must see several segments at once.
    part_isolating = False


@bp.record_once
def _register_converter(state) -> None:
    """Before this blueprint's rules are added (deferred functions run in order), so they can use it."""
    state.app.url_map.converters["reference_id"] = ReferenceIdConverter


def json_error(status: int, code: str, detail: str, **headers):
    response = jsonify(error=code, detail=detail)
    response.status_code = status
    response.headers.update(headers)
    return response


def refusal_of(host_may: bool = False):
    """An error response when the caller may not use this route, else None: the admin token opens every route;
    the host's token (HOST_API_TOKEN), when `host_may`, opens reading a user's record (docs/contracts.md §3)."""
    config = current_app.config["PERSONA"]
    tokens = [token for token in (config.admin_api_token, config.host_api_token if host_may else None) if token]
    if not tokens:
        return json_error(503, "admin_api_disabled", "set ADMIN_API_TOKEN to enable the users API")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    sent = given.strip().encode()
    # every token compared, so the time taken does not tell which one came close
    matches = [hmac.compare_digest(sent, token.encode()) for token in [*tokens, config.host_api_token or ""]]
    if scheme.lower() == "bearer" and any(matches[:-1]):
        return None
    if scheme.lower() == "bearer" and config.host_api_token and matches[-1]:
        return json_error(403, "forbidden", "the host's token may read a user's record and ask the gate, nothing else")
    return json_error(
        401, "unauthorized", "a valid Authorization: Bearer token is required", **{"WWW-Authenticate": "Bearer"}
    )


# merge_slashes=False: `a//b` and ids starting or ending with `/` are ids too, not untidy URLs to redirect.
@bp.before_request
def _small_bodies() -> None:
    """An override is a few hundred bytes; the webhook has its own cap (MAX_WEBHOOK_BYTES)."""
    request.max_content_length = MAX_BODY_BYTES


def admin_request(reference_id: str, load: Callable[[object], T]) -> tuple[Any, T | None]:
    """An admin route's checks on a user, in order: the admin token, an id no record can have (404), the JSON body
    as `load` reads it (400 naming the field). `(refusal, None)`, or `(None, what load made of the body)`."""
    refusal = refusal_of()
    if refusal is not None:
        return refusal, None
    if unstorable(reference_id):
        return unknown_user(reference_id), None
    try:
        document = request.get_json(silent=True)
    except RecursionError:
        return json_error(400, "invalid_request", "body: JSON nested too deeply"), None
    try:
        return None, load(document)
    except ValidationError as error:
        return json_error(400, "invalid_request", first_error(error.messages)), None


def unstorable(reference_id: str) -> bool:
    """An id no record can have: empty, over 255 characters (the column's size), or holding a NUL, which
    PostgreSQL refuses in text outright (a query with one fails instead of finding nothing)."""
    return not 0 < len(reference_id) <= MAX_TEXT_LENGTH or "\x00" in reference_id


def unknown_user(reference_id: str):
    """The 404 for an unstorable id, answered without a query."""
    return json_error(404, "user_not_found", f"no user with reference id {reference_id!r}")


@bp.get("/users/<reference_id:reference_id>", merge_slashes=False)
def get_user(reference_id: str):
    """The record of `reference_id` (docs/contracts.md §4), or a JSON 404; the host's token may read it."""
    refusal = refusal_of(host_may=True)
    if refusal is not None:
        return refusal
    if unstorable(reference_id):
        return unknown_user(reference_id)
    policy = current_app.config["PERSONA"].policy
    with current_app.extensions["database"].sessions() as session:
        record = load_user_record(session, reference_id, datetime.now(UTC), policy)
    if record is None:
        return json_error(404, "user_not_found", f"no user with reference id {reference_id!r}")
    return jsonify(record)


@bp.post("/users/<reference_id:reference_id>/actions", merge_slashes=False)
def act_on_user(reference_id: str):
    """An operator's override (docs/contracts.md §7): 200 and the record; 400 naming the field at fault; 404 for an
    unknown user or an inquiry not the user's. Verisoul follows through the ordinary sync, queued here."""
    refusal, action = admin_request(reference_id, load_override_request)
    if refusal is not None:
        return refusal
    assert action is not None
    config = current_app.config["PERSONA"]
    database = current_app.extensions["database"]
    now = datetime.now(UTC)
    try:
        to_sync = override_user(database, reference_id, action, now, config.record_settings)
    except UnknownInquiry:
        return json_error(404, "inquiry_not_found", f"user {reference_id!r} has no inquiry {action.inquiry_id!r}")
    if to_sync is None:
        return json_error(404, "user_not_found", f"no user with reference id {reference_id!r}")
    current_app.logger.info("override recorded", extra={"outcome": action.action, "user": reference_id})
    if to_sync:
        _queue_sync(reference_id, config.sync_queue)
    queue_notification(reference_id)
    with database.sessions() as session:
        return jsonify(load_user_record(session, reference_id, now, config.policy))


def _queue_sync(reference_id: str, sync_queue: str) -> None:
    """Queue the user's Verisoul sync; with Redis away the override stands and the sweep syncs within a minute."""
    connection = current_app.extensions["event_queue"].connection
    away = request_sync_unless_away(connection, Queue(sync_queue, connection=connection), reference_id)
    if away:
        current_app.logger.warning("sync not queued; the sweep will", extra={"reason": away})


def queue_notification(reference_id: str) -> None:
    """After a commit that may have written the user's notification, queue its delivery (a delivery that finds
    nothing new sends nothing); with Redis away the notification waits in the outbox for the sweep."""
    connection = current_app.extensions["event_queue"].connection
    away = request_delivery_unless_away(connection, current_app.config["PERSONA"], reference_id)
    if away:
        current_app.logger.warning("notification not queued; the sweep will", extra={"reason": away})


# An override's body: a few hundred bytes.
MAX_BODY_BYTES = 64 * 1024
# A page of the users list: enough for a screen, small enough that a page is one index range scan.
DEFAULT_PAGE, MAX_PAGE = 50, 500


class UserListQuery(Schema):
    """`?decision=&blocked=&synced=&limit=&after=`; an unknown parameter is refused, so a typo filters nothing."""

    class Meta:
        unknown = RAISE

    decision = fields.String(validate=validate.OneOf(sorted(DECISION_NAMES)))
    blocked = fields.Boolean()
    synced = fields.Boolean()
    limit = fields.Integer(load_default=DEFAULT_PAGE, validate=validate.Range(1, MAX_PAGE))
    after = fields.String()


def encode_cursor(reference_id: str) -> str:
    """The `next` cursor: the page's last reference id, opaque and URL-safe (ids may hold any character)."""
    return base64.urlsafe_b64encode(reference_id.encode("utf-8", "surrogatepass")).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The reference id in a cursor; raises ValidationError when it is not one of ours."""
    try:
        reference_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        reference_id = ""
    if text_problem(reference_id, max_length=MAX_TEXT_LENGTH):  # no reference id is empty, or holds a NUL
        raise ValidationError({"after": ["not a cursor from a previous page's `next`"]})
    return reference_id


@bp.get("/users")
def list_users_route():
    """Users by standing (docs/contracts.md §7): `{"users": [...], "next": cursor or null}`, 400 naming a bad parameter."""
    refusal = refusal_of()
    if refusal is not None:
        return refusal
    repeated = sorted(name for name in request.args if len(request.args.getlist(name)) > 1)
    if repeated:
        return json_error(400, "invalid_query", f"{repeated[0]}: given more than once")
    try:
        query = UserListQuery().load(request.args.to_dict())
        after = decode_cursor(query["after"]) if "after" in query else None
    except ValidationError as error:
        return json_error(400, "invalid_query", first_error(error.messages))
    chosen = UserFilter(query.get("decision"), query.get("blocked"), query.get("synced"))
    with current_app.extensions["database"].sessions() as session:
        users = list_users(session, chosen, after, query["limit"] + 1, datetime.now(UTC))
    page, more = users[: query["limit"]], len(users) > query["limit"]
    return jsonify(users=page, next=encode_cursor(page[-1]["reference_id"]) if more else None)
