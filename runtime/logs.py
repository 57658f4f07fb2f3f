"""JSON logs, one object per line, for the web process and the workers (our code and RQ's).

Only allowlisted `extra` fields are written, so a caller cannot leak a body, a header or a secret
into the logs by passing it along by mistake.

RQ's loggers (`rq.worker`, `rq.queue`, `rq.job`, `rq.scheduler`, ...) are children of `rq`, which
`configure()` takes too. `rq worker --config workers.rq_settings` imports the settings module (which
calls `configure()`) before it calls `rq.logutils.setup_loghandlers`, and that adds RQ's plain-text
handlers only when no handler is found on the logger or its ancestors: with ours on `rq`, it adds
none, and only sets a level if `--verbose`/`--quiet`/`--logging_level` ask for one. The scheduler
process RQ forks inherits the same handler.

Tracebacks. For a record with `exc_info` only the exception's class is written, never its message
or frames: in the web process an exception raised while parsing a request can quote the untrusted
body (a date parser's "Invalid isoformat string: '...'"), and such messages cannot be vetted.
RQ's own line for a failed job is different: RQ formats the job's whole traceback into the message
text (no `exc_info`), and that text is kept, class and message included, because a failed job is
what an operator has to debug. It is safe by construction, not by filtering: the frames are file
names, line numbers and our source lines, and an exception message can only quote what the job
was given or read, which is the minimised event (ids, statuses, timestamps, check names and
statuses: domain/events.py `minimise`; SQLAlchemy errors quote SQL and bound parameters from the same
values) or, for the Verisoul jobs, a user's reference id and Verisoul's answer about it. No job
receives a raw body, so no traceback line can hold a name, a birthdate or an address; a job that
ever takes unminimised data must not rely on this. The same record's `arguments`/`kwargs` extras
(the job's arguments) are not in FIELDS and are dropped.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

from domain.times import iso_millis

# Fields a log call may attach with `extra=`; anything else is dropped.
FIELDS = (
    "event_id",
    "event_name",
    "outcome",
    "status",
    "reason",
    "attempts_made",
    "duration_ms",
    "method",
    "path",
    "job_id",
    "queue",
    "sentry_event_id",
    "user",  # a reference id: the host's id for a person, never their name or documents
)

# Loggers `configure()` sends to stderr as JSON: ours, and RQ's (all under `rq`).
LOGGERS = ("app", "workers", "rq")

# RQ colours queue names and job ids when stdout is a terminal; the codes do not belong in JSON.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# gunicorn names the client in its error lines ("Invalid request from ip=203.0.113.7: ..."): an IP address is
# personal data, and never reaches our logs.
_CLIENT_ADDRESS = re.compile(r"\bip=[^\s:,]*(?::[0-9a-fA-F:.]*[0-9a-fA-F])?")
# The event jobs' ids (store/queue.py `job_id_for`): `e_<event id>`, or `h-<sha256>` for an odd event id.
_EVENT_JOB_ID = re.compile(r"e_[A-Za-z0-9_-]+|h-[0-9a-f]{64}")


def _rq_job_id(record: logging.LogRecord) -> str | None:
    """RQ passes the job id in `extra` only on its failure line; elsewhere it is a %-argument
    (`Worker w: persona-events: process_event evt_1 inquiry.approved (e_evt_1)`): take the first
    argument shaped like an event job's id."""
    if not record.name.startswith("rq") or not isinstance(record.args, tuple):
        return None
    for arg in record.args:
        if isinstance(arg, str):
            candidate = _ANSI.sub("", arg)
            if _EVENT_JOB_ID.fullmatch(candidate):
                return candidate
    return None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name.startswith("gunicorn") and "ip=" in message:
            message = _CLIENT_ADDRESS.sub("ip=<hidden>", message)
        entry = {
            "at": iso_millis(datetime.fromtimestamp(record.created, UTC)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _ANSI.sub("", message) if "\x1b" in message else message,
        }
        entry.update({name: getattr(record, name) for name in FIELDS if getattr(record, name, None) is not None})
        if "job_id" not in entry and (job_id := _rq_job_id(record)):
            entry["job_id"] = job_id
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


def configure(level: int = logging.INFO) -> None:
    """Send the `app`, `workers` and `rq` loggers to stderr as JSON (idempotent: each call replaces
    the handler, bound to the `sys.stderr` of the moment)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
