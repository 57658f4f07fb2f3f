"""Gunicorn settings for `web:` (Procfile). Every value can be overridden from the environment."""

import os
import sys

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
# Sync workers: a webhook is a few milliseconds of CPU and one Redis round trip.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Persona gives up on a delivery after 5 s; a request running longer than this is stuck, not slow.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# The app writes one structured line per webhook; gunicorn's access log would repeat it without the event id.
accesslog = None
errorlog = "-"


def on_starting(server):
    """Refuse to start on a bad setting: one line naming it, before any worker boots."""
    from app.config import ConfigError, load_config

    try:
        load_config()
    except ConfigError as error:
        print(f"persona-events: configuration error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
