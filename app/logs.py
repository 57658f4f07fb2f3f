"""JSON logs, one object per line, for the web process and the workers.

Only allowlisted `extra` fields are written, so a caller cannot leak a body, a header or a secret
into the logs by passing it along by mistake.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

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
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "at": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({name: getattr(record, name) for name in FIELDS if getattr(record, name, None) is not None})
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


def configure(level: int = logging.INFO) -> None:
    """Send the `app` and `workers` loggers to stderr as JSON (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("app", "workers"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
