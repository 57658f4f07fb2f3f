"""Optional error reporting to Sentry, on when SENTRY_DSN is set: the web's unexpected errors and jobs that fail.

Personal data stays home. Persona's webhook bodies carry names, birthdates, addresses and ID numbers,
and a stack frame's local variables can hold such a body, so request bodies, local variables and
sentry-sdk's default personal data (IP addresses, cookies, user) are never sent; what is sent is the
traceback's code, the route and the log lines before it, which hold ids and statuses only
(runtime/logs.py). Each report's event id is returned, so the 500 answer and the log line can name it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sentry_sdk
from sentry_sdk.integrations.flask import FlaskIntegration
from sentry_sdk.integrations.rq import RqIntegration

from runtime.config import Config

if TYPE_CHECKING:
    from sentry_sdk._types import DataCollectionUserOptions

# sentry-sdk's data_collection (2.75+): each category it would gather on its own, turned off.
NOTHING_PERSONAL: DataCollectionUserOptions = {
    "user_info": False,  # the client's IP address and user
    "cookies": {"mode": "off"},
    "http_headers": {"request": {"mode": "off"}},
    "http_bodies": [],  # webhook bodies carry names, birthdates, addresses and ID numbers
    "url_query_params": {"mode": "off"},
    "database_query_data": False,
    "queues": False,  # a job's arguments are ids and statuses, but need not leave either
    "stack_frame_variables": False,  # a frame's locals may hold a raw body
}


def init_error_reporting(config: Config, process: str) -> bool:
    """Start reporting for this process (`web`, `worker`, `scheduler`) when SENTRY_DSN is set; True if on."""
    if config.sentry_dsn is None:
        return False
    sentry_sdk.init(
        dsn=config.sentry_dsn,
        environment=config.sentry_environment,
        server_name=process,  # which process of the Procfile, not the host's name
        integrations=[FlaskIntegration(), RqIntegration()],
        data_collection=NOTHING_PERSONAL,
        max_request_body_size="never",
        # No performance tracing: errors only, so nothing is sent while all goes well.
        traces_sample_rate=None,
    )
    return True


def report_error(error: BaseException) -> str | None:
    """Send `error` to Sentry; its event id, or None when reporting is off (or the event was dropped)."""
    return sentry_sdk.capture_exception(error)


def last_reported() -> str | None:
    """The event id of this scope's latest report (RQ's integration reports a job's final failure itself)."""
    return sentry_sdk.last_event_id()
