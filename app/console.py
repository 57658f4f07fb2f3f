"""The operators' console (docs/contracts.md §7): server-rendered pages under /console, signed in with the
admin token. Search a user; a user's page with the timeline, verifications, Verisoul's state and the override
forms; the queues with their failed jobs and a requeue button. No JavaScript is needed.

Trust model: the admin token is asked once and never stored; the session cookie (signed with a key derived
from the token, so rotating the token signs everyone out) is HttpOnly and SameSite=Strict, and every form
carries a per-session CSRF token checked on POST. The console shows only what the tables hold: ids,
statuses, times and check results; the service keeps no personal data to show.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from flask import Blueprint, Flask, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask.sessions import SecureCookieSessionInterface
from marshmallow import ValidationError
from redis.exceptions import RedisError
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from werkzeug.exceptions import HTTPException

from app.timeline import timeline
from domain.overrides import ACTIONS, load_override_request
from domain.policy import DECISION_NAMES
from domain.schemas import first_error
from domain.times import iso_millis
from store.failed_jobs import failed_jobs, requeue
from store.operator_actions import override_user
from store.overrides import UnknownInquiry
from store.sync_queue import request_sync
from store.user_list import UserFilter, list_users
from store.user_record import load_user_view

bp = Blueprint("console", __name__, url_prefix="/console", static_folder="static")
PAGE = 50


class ConsoleSession(SecureCookieSessionInterface):
    """Flask's signed cookie session, marked Secure whenever the request came over HTTPS (gunicorn sets the
    scheme from a trusted proxy's X-Forwarded-Proto), so the same deployment works in development."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure


def init_app(app: Flask) -> None:
    """Session settings for the console; with no admin token the console stays disabled (503)."""
    token = app.config["PERSONA"].admin_api_token
    if token:
        app.secret_key = hmac.new(token.encode(), b"persona-events console session", hashlib.sha256).hexdigest()
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_NAME="console")
    app.session_interface = ConsoleSession()
    app.register_blueprint(bp)


@bp.errorhandler(400)
@bp.errorhandler(404)
def _error_page(error: HTTPException):
    """The console answers in pages: a refused form (CSRF) or an unknown user is a page that says so."""
    return render_template(
        "console/index.html", users=[], chosen=UserFilter(), decisions=[], error=error.description
    ), error.code


def _token() -> str:
    token = current_app.config["PERSONA"].admin_api_token
    if not token:
        abort(503, description="set ADMIN_API_TOKEN to enable the console")
    return token


def _csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


@bp.app_context_processor
def _template_globals() -> dict:
    return {"csrf_token": _csrf_token} if request.path.startswith("/console") else {}


@bp.before_request
def _guard():
    """Disabled without a token; every POST carries the session's CSRF token; every page but login needs a session."""
    _token()
    if request.method == "POST":
        sent = request.form.get("csrf_token", "")
        if not session.get("csrf") or not hmac.compare_digest(sent.encode(), session["csrf"].encode()):
            abort(400, description="the form's CSRF token is missing or stale; reload the page")
    if request.endpoint not in ("console.login", "console.static") and not session.get("signed_in"):
        return redirect(url_for("console.login"))
    return None


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("console/login.html")
    given = request.form.get("token", "")
    if not hmac.compare_digest(given.encode(), _token().encode()):
        return render_template("console/login.html", error="That is not the admin token."), 401
    session.clear()
    session.update(signed_in=True, csrf=secrets.token_urlsafe(32))
    return redirect(url_for("console.index"))


@bp.post("/logout")
def logout():
    session.clear()
    return redirect(url_for("console.login"))


def _flag(name: str) -> bool | None:
    value = request.args.get(name, "")
    return {"true": True, "false": False}.get(value)


@bp.get("/")
def index():
    decision = request.args.get("decision") or None
    chosen = UserFilter(decision if decision in DECISION_NAMES else None, _flag("blocked"), _flag("synced"))
    after = request.args.get("after") or None
    with current_app.extensions["database"].sessions() as db:
        found = list_users(db, chosen, after, PAGE + 1, datetime.now(UTC))
    more = found[PAGE - 1]["reference_id"] if len(found) > PAGE else None
    return render_template(
        "console/index.html",
        users=found[:PAGE],
        chosen=chosen,
        decisions=sorted(DECISION_NAMES),
        after_next=more,
    )


@bp.get("/search")
def search():
    reference_id = request.args.get("q", "").strip()
    with current_app.extensions["database"].sessions() as db:
        found = load_user_view(db, reference_id, datetime.now(UTC)) if reference_id else None
    if found is None:
        flash(f"no user {reference_id!r}", "error")  # a flash, not a parameter: no link can put words here
        return redirect(url_for("console.index"))
    return redirect(url_for("console.user", reference_id=reference_id))


@bp.get("/users/<reference_id:reference_id>", merge_slashes=False)
def user(reference_id: str):
    now = datetime.now(UTC)
    with current_app.extensions["database"].sessions() as db:
        found = load_user_view(db, reference_id, now)
    if found is None:
        abort(404, description=f"no user {reference_id!r}")
    record, block = found
    return render_template(
        "console/user.html", record=record, picture=timeline(record, block, now), actions=ACTIONS, now=iso_millis(now)
    )


@bp.post("/users/<reference_id:reference_id>/actions", merge_slashes=False)
def act(reference_id: str):
    form = {name: request.form.get(name, "") for name in ("action", "reason", "operator", "inquiry_id")}
    back = url_for("console.user", reference_id=reference_id)
    try:
        action = load_override_request({name: value for name, value in form.items() if value})
    except ValidationError as error:
        flash(f"Not recorded: {first_error(error.messages)}", "error")
        return redirect(back)
    config = current_app.config["PERSONA"]
    try:
        to_sync = override_user(
            current_app.extensions["database"],
            reference_id,
            action,
            datetime.now(UTC),
            config.verisoul_api_url is not None,
        )
    except UnknownInquiry:
        flash(f"Not recorded: {reference_id} has no inquiry {action.inquiry_id}", "error")
        return redirect(back)
    if to_sync is None:
        abort(404, description=f"no user with reference id {reference_id!r}")
    current_app.logger.info("override recorded", extra={"outcome": action.action, "user": reference_id})
    message = f"{action.action} recorded"
    if to_sync:
        connection = current_app.extensions["event_queue"].connection
        try:
            request_sync(connection, Queue(config.sync_queue, connection=connection), reference_id)
            message += "; Verisoul sync queued"
        except RedisError:
            message += "; the sync will be queued by the sweep (Redis unavailable)"
    flash(message, "ok")
    return redirect(back)


def _queues() -> list[Queue]:
    connection = current_app.extensions["event_queue"].connection
    return [Queue(name, connection=connection) for name in current_app.config["PERSONA"].queues]


@bp.get("/queues")
def queues():
    depths, failed = [], []
    for queue in _queues():
        depths.append(
            {
                "name": queue.name,
                "waiting": queue.count,
                "running": StartedJobRegistry(queue=queue).count,
                "scheduled": ScheduledJobRegistry(queue=queue).count,
                "failed": FailedJobRegistry(queue=queue).count,
            }
        )
        failed += [(queue.name, job) for job in failed_jobs(queue)]
    failed.sort(key=lambda item: item[1].failed_at or datetime.min.replace(tzinfo=UTC), reverse=True)
    return render_template("console/queues.html", depths=depths, failed=failed, iso=iso_millis)


@bp.post("/queues/failed/<job_id>/requeue")
def requeue_failed(job_id: str):
    """Back to the front of its queue, with its retries reset (store/failed_jobs.py)."""
    holding = [queue for queue in _queues() if job_id in FailedJobRegistry(queue=queue)]
    if not holding:
        flash(f"{job_id} is not a failed job (any more)", "error")
        return redirect(url_for("console.queues"))
    try:
        requeue(holding[0], job_id)
    except Exception as error:  # RQ's InvalidJobOperation or NoSuchJobError, or a RedisError
        flash(f"{job_id} not requeued: {type(error).__name__}", "error")
    else:
        flash(f"{job_id} requeued", "ok")
    return redirect(url_for("console.queues"))
