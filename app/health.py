"""`/healthz` (the process runs) and `/readyz` (Redis and the database answer)."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


def _check(name: str, probe) -> str:
    try:
        probe()
        return "ok"
    except (RedisError, SQLAlchemyError, OSError) as error:
        log.warning("readiness check failed", extra={"reason": f"{name}: {type(error).__name__}"})
        return "unavailable"


@bp.get("/readyz")
def readyz():
    checks = {
        "redis": _check("redis", current_app.extensions["event_queue"].ping),
        "database": _check("database", current_app.extensions["database"].ping),
    }
    failed = [name for name, result in checks.items() if result != "ok"]
    if failed:
        body = {"error": "not_ready", "detail": f"unavailable: {', '.join(failed)}", "checks": checks}
        return jsonify(body), 503
    return jsonify(status="ok", checks=checks)
