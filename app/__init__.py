"""persona-events: Persona webhooks in, a trustworthy per-user verification record out."""

from __future__ import annotations

from flask import Flask, jsonify, request
from redis import Redis
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException

from runtime import logs
from runtime.config import Config, load_config_or_exit
from runtime.errors import init_error_reporting, report_error
from store.db import Database
from store.queue import EventQueue, connect_redis

# A database outage is usually a restart or a failover: seconds, rarely more.
RETRY_AFTER_SECONDS = 5


def _json_errors(app: Flask) -> None:
    """Every error is JSON `{"error", "detail"}`, never an HTML page or a traceback."""

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        code = (error.name or "error").lower().replace(" ", "_")
        return jsonify(error=code, detail=error.description), error.code

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeoutError)
    def database_unavailable(error: Exception):
        """The database is away (a restart, a failover, the network): the caller may retry, not a bug."""
        app.logger.warning("database unavailable", extra={"reason": type(error).__name__})
        response = jsonify(error="database_unavailable", detail="the database is unavailable; retry later")
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception):
        """A bug: logged, reported to Sentry when it is on, and answered with the report's id to quote."""
        event_id = report_error(error)
        where = {"method": request.method, "path": request.path}  # which route; the traceback says where in it
        app.logger.exception("unhandled error", extra={"sentry_event_id": event_id, **where})
        body = {"error": "internal_error", "detail": "unexpected error; see the server log"}
        if event_id is not None:
            body["sentry_event_id"] = event_id
        return jsonify(body), 500


def create_app(config: Config | None = None, redis: Redis | None = None) -> Flask:
    config = config or load_config_or_exit()
    logs.configure()
    init_error_reporting(config, "web")
    app = Flask(__name__)
    app.config["PERSONA"] = config
    app.extensions["event_queue"] = EventQueue(redis or connect_redis(config.redis_url), config)
    app.extensions["database"] = Database(config.database_url)

    from app import console, erasures, gate, health, metrics, users, webhooks

    app.register_blueprint(webhooks.bp)
    app.register_blueprint(users.bp)
    app.register_blueprint(gate.bp)
    app.register_blueprint(erasures.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    console.init_app(app)
    _json_errors(app)
    return app
