"""`GET /users/<reference_id>`: the user record, for the host application to ask before it offers a
new verification (DESIGN §4, §5). Guarded by a bearer token; with no token configured the route is
disabled (503), never open."""

from __future__ import annotations

import hmac
from datetime import datetime, timezone

from flask import Blueprint, current_app, jsonify, request

from app.user_record import load_user_record

bp = Blueprint("users", __name__)


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
        return _error(401, "unauthorized", "a valid Authorization: Bearer token is required", **{"WWW-Authenticate": "Bearer"})
    return None


@bp.get("/users/<reference_id>")
def get_user(reference_id: str):
    refusal = _refusal()
    if refusal is not None:
        return refusal
    with current_app.extensions["database"].sessions() as session:
        record = load_user_record(session, reference_id, datetime.now(timezone.utc))
    if record is None:
        return _error(404, "user_not_found", f"no user with reference id {reference_id!r}")
    return jsonify(record)
