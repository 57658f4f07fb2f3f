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
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from werkzeug.exceptions import HTTPException

from app.timeline import timeline
from app.users import queue_notification, unstorable
from domain.events import text_problem
from domain.overrides import ACTIONS, load_override_request
from domain.policy import DECISION_NAMES
from domain.schemas import first_error
from domain.times import iso_millis
from store.console_sessions import close_session, count_failed_sign_in, open_session, session_open, sign_in_refused
from store.failed_jobs import failed_jobs, requeue
from store.operator_actions import override_user
from store.overrides import UnknownInquiry
from store.sync_queue import request_sync_unless_away
from store.user_list import UserFilter, list_users
from store.user_record import load_user_view

bp = Blueprint("console", __name__, url_prefix="/console", static_folder="static")
PAGE = 50
# An override form is a few hundred bytes; nothing the console takes is bigger than this.
MAX_FORM_BYTES = 64 * 1024


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


def _redis() -> Redis:
    return current_app.extensions["event_queue"].connection


@bp.before_request
def _guard():
    """Disabled without a token; small bodies only; every POST carries the session's CSRF token; every page but
    the sign-in needs a session that is still open in Redis (signed out, idle or old sessions are not)."""
    _token()
    request.max_content_length = MAX_FORM_BYTES
    if request.method == "POST":
        sent = request.form.get("csrf_token", "")
        if not session.get("csrf") or not hmac.compare_digest(sent.encode(), session["csrf"].encode()):
            abort(400, description="the form's CSRF token is missing or stale; reload the page")
    if request.endpoint in ("console.login", "console.static"):
        return None
    if not session.get("sid") or not session_open(_redis(), session["sid"]):
        session.pop("sid", None)  # the CSRF token stays, so a sign-in form already open still works
        return redirect(url_for("console.login"))
    return None


@bp.after_request
def _page_headers(response):
    """Pages about people's verification: never framed, cached or sniffed."""
    response.headers.update(
        {
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
        }
    )
    return response


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("console/login.html")
    address = request.remote_addr or "unknown"
    if sign_in_refused(_redis(), address):
        return render_template("console/login.html", error="Too many wrong tokens; wait a few minutes."), 429
    given = request.form.get("token", "")
    if not hmac.compare_digest(given.encode(), _token().encode()):
        count_failed_sign_in(_redis(), address)
        return render_template("console/login.html", error="That is not the admin token."), 401
    session.clear()
    session.update(sid=open_session(_redis()), csrf=secrets.token_urlsafe(32))
    return redirect(url_for("console.index"))


@bp.post("/logout")
def logout():
    close_session(_redis(), session.get("sid", ""))
    session.clear()
    return redirect(url_for("console.login"))


def _flag(name: str) -> bool | None:
    """A yes/no filter: empty is any; anything but true or false is a 400 naming it, as GET /users answers."""
    value = request.args.get(name, "")
    if value not in ("", "true", "false"):
        abort(400, description=f"{name}: true or false")
    return {"true": True, "false": False}.get(value)


@bp.get("/")
def index():
    decision = request.args.get("decision") or None
    if decision is not None and decision not in DECISION_NAMES:
        abort(400, description=f"decision: one of {', '.join(sorted(DECISION_NAMES))}")
    chosen = UserFilter(decision, _flag("blocked"), _flag("synced"))
    after = request.args.get("after") or None
    if after is not None and text_problem(after):
        abort(400, description="after: not a reference id from the list")
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


def _reference_id(value: str) -> str:
    """A reference id from a form or the query string; one no record can have (app/users.py) is a 404.

    Ids travel in the query string and form fields, never in the path: a browser resolves `..` and `.` path
    segments (even as `%2E%2E`), so the user `x/../y`'s page would act on user `y`."""
    if unstorable(value):
        abort(404, description=f"no user {value!r}")
    return value


@bp.get("/search")
def search():
    reference_id = request.args.get("q", "").strip()
    found = None
    if not unstorable(reference_id):
        with current_app.extensions["database"].sessions() as db:
            found = load_user_view(db, reference_id, datetime.now(UTC), current_app.config["PERSONA"].policy)
    if found is None:
        flash(f"no user {reference_id!r}", "error")  # a flash, not a parameter: no link can put words here
        return redirect(url_for("console.index"))
    return redirect(url_for("console.user", ref=reference_id))


@bp.get("/user")
def user():
    reference_id, now = _reference_id(request.args.get("ref", "")), datetime.now(UTC)
    with current_app.extensions["database"].sessions() as db:
        found = load_user_view(db, reference_id, now, current_app.config["PERSONA"].policy)
    if found is None:
        abort(404, description=f"no user {reference_id!r}")
    record, block = found
    return render_template(
        "console/user.html", record=record, picture=timeline(record, block, now), actions=ACTIONS, now=iso_millis(now)
    )


@bp.post("/user/actions")
def act():
    reference_id = _reference_id(request.form.get("reference_id", ""))
    form = {name: request.form.get(name, "") for name in ("action", "reason", "operator", "inquiry_id")}
    back = url_for("console.user", ref=reference_id)
    try:
        action = load_override_request({name: value for name, value in form.items() if value})
    except ValidationError as error:
        flash(f"Not recorded: {first_error(error.messages)}", "error")
        return redirect(back)
    config = current_app.config["PERSONA"]
    database, now = current_app.extensions["database"], datetime.now(UTC)
    try:
        to_sync = override_user(database, reference_id, action, now, config.record_settings)
    except UnknownInquiry:
        flash(f"Not recorded: {reference_id} has no inquiry {action.inquiry_id}", "error")
        return redirect(back)
    if to_sync is None:
        abort(404, description=f"no user {reference_id!r}")
    current_app.logger.info("override recorded", extra={"outcome": action.action, "user": reference_id})
    message = f"{action.action} recorded"
    queue_notification(reference_id)
    if to_sync:
        away = request_sync_unless_away(_redis(), Queue(config.sync_queue, connection=_redis()), reference_id)
        message += "; the sync will be queued by the sweep (Redis unavailable)" if away else "; Verisoul sync queued"
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
