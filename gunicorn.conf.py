"""Gunicorn settings for `web:` (Procfile). Every value can be overridden from the environment."""

import os
import sys

from app.config import share_metrics_dir

# First, before any worker imports the app (and prometheus_client): every worker writes its metrics
# to its own files in this directory, shared with the rq workers, and /metrics sums them. Not wiped
# here: the rq workers share it, and counts of exited processes stay summed, so counters never drop.
share_metrics_dir()

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
# Sync workers: a webhook is a few milliseconds of CPU and one Redis round trip.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Persona gives up on a delivery after 5 s; a request running longer than this is stuck, not slow.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# The app writes one structured line per webhook; gunicorn's access log would repeat it without the event id.
accesslog = None
errorlog = "-"
# gunicorn's own error log (boot, worker start/exit, timeouts) as the app's JSON lines on stderr.
# gunicorn merges this over its defaults key by key, so root is named too (else its plain console
# handler stays); no level on gunicorn.error, so --log-level still decides it.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "app.logs.JsonFormatter"}},
    "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "root": {"level": "INFO", "handlers": ["json"]},
    "loggers": {"gunicorn.error": {"handlers": ["json"], "propagate": False}},
}


def on_starting(server):
    """Refuse to start on a bad setting: one line naming it, before any worker boots."""
    from app.config import ConfigError, load_config

    try:
        load_config()
    except ConfigError as error:
        print(f"persona-events: configuration error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)


def child_exit(server, worker):
    """A worker exited: drop its live-gauge files (its counters and histograms stay summed)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
