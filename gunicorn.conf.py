"""Gunicorn settings for `web:` (Procfile). Every value can be overridden from the environment."""

import os
import sys
import time

from runtime.config import share_metrics_dir

# First, before any worker imports the app (and prometheus_client): every worker writes its metrics
# to its own files in this directory, shared with the rq workers, and /metrics sums them. Not wiped
# here: the rq workers share it, and counts of exited processes stay summed, so counters never drop.
share_metrics_dir()


def _seconds(name: str, default: str) -> int:
    """A whole, positive number of seconds: 0 would switch a bound off (keepalive 0 drops gevent's
    header deadline altogether)."""
    value = os.environ.get(name, default)
    if not value.strip().isdigit() or int(value) <= 0:
        raise SystemExit(f"persona-events: configuration error: {name} must be a whole number of seconds above 0")
    return int(value)


bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Slow clients must not shut the door (a connection trickling its headers or body, or idle after
# them). gunicorn's sync worker gives a whole process to each connection until the body is read,
# and its gthread worker a thread, with no read timeout once the first byte came: a few slow
# connections held every worker for GUNICORN_TIMEOUT. gevent's worker gives each connection a
# greenlet (a few KB), up to worker_connections per process, and bounds reading the request line
# and headers by `keepalive` seconds in all (gevent.Timeout around the parser, in
# gunicorn/workers/base_async.py); the body is bounded by BODY_TIMEOUT below. The worker
# monkey-patches the standard library before it loads the app, so redis-py, psycopg 3 (it then
# waits with a patched poll instead of its C wait), SQLAlchemy's pool and prometheus_client's
# locks all yield to other connections instead of blocking the process.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
# Connections each worker serves at once (slow ones included); past workers x this, new
# connections wait in the listen backlog until a slow one is cut off by the deadlines below.
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
# Seconds an idle keep-alive connection is kept, and (gevent) the deadline for a request's line and
# headers, from the moment gunicorn starts reading them. Persona gives up after 5 s anyway.
keepalive = _seconds("GUNICORN_KEEPALIVE", "5")
# Seconds, in all, for a request body to arrive once its headers have: see pre_request. (Not a
# gunicorn setting: the hooks below read it from this module.)
BODY_TIMEOUT = _seconds("GUNICORN_BODY_TIMEOUT", "5")
# Persona gives up on a delivery after 5 s; a worker silent for longer than this is stuck, not slow.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
# gunicorn 25.1+ opens a control socket at one path per user ($HOME/.gunicorn/gunicorn.ctl), which every
# gunicorn of that user on the host would share; nothing here uses gunicornc, so none is opened.
control_socket_disable = True
# The app writes one structured line per webhook; gunicorn's access log would repeat it without the event id.
accesslog = None
errorlog = "-"
# gunicorn's own error log (boot, worker start/exit, timeouts) as the app's JSON lines on stderr.
# gunicorn merges this over its defaults key by key, so root is named too (else its plain console
# handler stays); no level on gunicorn.error, so --log-level still decides it.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "runtime.logs.JsonFormatter"}},
    "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "root": {"level": "INFO", "handlers": ["json"]},
    "loggers": {"gunicorn.error": {"handlers": ["json"], "propagate": False}},
}


def on_starting(server):
    """Refuse to start on a bad setting: one line naming it, before any worker boots."""
    from runtime.config import ConfigError, load_config

    try:
        load_config()
    except ConfigError as error:
        print(f"persona-events: configuration error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)


def post_fork(server, worker):
    """Before the gevent worker patches the standard library: keep its warning off the JSON logs.

    It warns that `ssl` was imported before the patch. gunicorn itself imports it in the master, where
    no SSL context is made; redis-py makes its context when it connects (ssl.create_default_context,
    patched by then) and psycopg's TLS is libpq's, so nothing holds an unpatched SSL object.
    """
    if "gevent" in server.cfg.worker_class_str:
        import warnings

        from gevent.monkey import MonkeyPatchWarning

        warnings.filterwarnings("ignore", category=MonkeyPatchWarning)


def post_worker_init(worker):
    """The app is loaded: its objects (modules, the schema, compiled regexes) are kept out of the garbage
    collector's passes from now on (`gc.freeze`), which otherwise rescan them every few hundred requests."""
    import gc

    gc.freeze()


class _BodyDeadline:
    """The request's socket as gunicorn's reader sees it, each recv() bounded by what is left of the
    body's deadline: a client trickling one byte at a time cannot stretch it, as it could a plain
    per-read socket timeout. Past it recv() raises TimeoutError, an OSError, which werkzeug's request
    stream turns into ClientDisconnected: a 400, and the connection is closed."""

    def __init__(self, sock, seconds: float):
        self._sock, self._deadline = sock, time.monotonic() + seconds

    def recv(self, size, *flags):
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request body not received in time")
        self._sock.settimeout(remaining)
        return self._sock.recv(size, *flags)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def pre_request(worker, req):
    """Headers read: give the body BODY_TIMEOUT seconds in all (gunicorn has no body read timeout)."""
    unreader = req.unreader
    sock = getattr(unreader, "sock", None)
    if sock is not None and hasattr(sock, "settimeout"):
        req.persona_events_socket = (sock, sock.gettimeout())
        unreader.sock = _BodyDeadline(sock, BODY_TIMEOUT)


def post_request(worker, req, environ, resp):
    """Give the reader its socket back as it was, for the next request on a kept-alive connection."""
    saved = getattr(req, "persona_events_socket", None)
    if saved is not None:
        sock, prior_timeout = saved
        req.unreader.sock = sock
        sock.settimeout(prior_timeout)
