"""The webhook's ceiling for scripts/bench.py: a bare Flask app that reads the body and answers a small JSON.

Served by the Procfile's own gunicorn command and gunicorn.conf.py (same worker class, count and hooks),
only the app factory differs:

    gunicorn --config gunicorn.conf.py "scripts.bench_ceiling:create_app()"

So the ratio real app / this app is what the service's own work costs (signature, JSON, validation,
minimisation, the Redis round trip, the log line, metrics) on top of HTTP, gunicorn and Flask.
"""

from __future__ import annotations

from flask import Flask, jsonify, request

_READ_CHUNK = 64 * 1024  # as app/webhooks.py reads it


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/webhooks/persona")
    def receive():
        size = 0
        while chunk := request.stream.read(_READ_CHUNK):
            size += len(chunk)
        return jsonify(status="received", size=size)

    @app.get("/readyz")
    @app.get("/healthz")
    def ready():
        return jsonify(status="ok")

    return app
