"""`GET /users/<reference_id>`: the user record, for the host application to ask before it offers a
new verification (docs/contracts.md §4, §5). Guarded by a bearer token; with no token configured the route is
disabled (503), never open."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

from flask import Blueprint, current_app, jsonify, request
from werkzeug.routing import BaseConverter

from store.user_record import load_user_record

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


def _error(status: int, code: str, detail: str, **headers):
    response = jsonify(error=code, detail=detail)
    response.status_code = status
    response.headers.update(headers)
    return response


def _refusal():
    """An error response when the caller may not read records, else None."""
    token = current_app.config["PERSONA"].admin_api_token
    if not token:
        return _error(503, "admin_api_disabled", "set ADMIN_API_TOKEN to enable the users API")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        return _error(
            401, "unauthorized", "a valid Authorization: Bearer token is required", **{"WWW-Authenticate": "Bearer"}
        )
    return None


# merge_slashes=False: `a//b` and ids starting or ending with `/` are ids too, not untidy URLs to redirect.
@bp.get("/users/<reference_id:reference_id>", merge_slashes=False)
def get_user(reference_id: str):
    """The record of `reference_id` (docs/contracts.md §4), or a JSON 404."""
    refusal = _refusal()
    if refusal is not None:
        return refusal
    with current_app.extensions["database"].sessions() as session:
        record = load_user_record(session, reference_id, datetime.now(UTC))
    if record is None:
        return _error(404, "user_not_found", f"no user with reference id {reference_id!r}")
    return jsonify(record)
