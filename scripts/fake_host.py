"""A fake host application for development and tests: it receives the service's `user.updated` notifications
(docs/contracts.md §9) at ``POST /webhooks`` and verifies each with the ``standardwebhooks`` package, as a real
host would (the README's receiving example).

Answers: 401 ``{"error": "invalid signature"}`` when the signature, its headers or its timestamp do not verify;
503 while ``down``; an injected failure (``fail_next``, ``fail_rate_500``, ``fail_rate_429``); else 204.

The switches, set at start (CLI flags) or via ``POST /_control/config``: ``secret`` (the Standard Webhooks secret,
``whsec_`` + base64; default ``DEFAULT_SECRET``), ``down`` (every delivery answered 503), ``fail_next``,
``fail_rate_500``, ``fail_rate_429``, ``seed``. Control API: ``POST /_control/reset``, ``GET``/``POST
/_control/config``, ``GET /_control/calls``: every delivery received, in order, with ``status`` (the answer),
``verified``, ``webhook_id`` and, when it verified, the notification's ``body``.

Run: ``python -m scripts.fake_host --port 8095`` (``--port 0`` picks a free port; the ready line shows it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import Flask, jsonify, request
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from scripts import fake_server

# "development-only-host-webhook-secret" in base64: for development and tests, never for production.
DEFAULT_SECRET = "whsec_ZGV2ZWxvcG1lbnQtb25seS1ob3N0LXdlYmhvb2stc2VjcmV0"


@dataclass
class FakeConfig:
    """The switches; see the module docstring (`api_key` is unused: the host checks signatures, not keys)."""

    api_key: str = ""
    secret: str = DEFAULT_SECRET
    down: bool = False
    fail_rate_500: float = 0.0
    fail_rate_429: float = 0.0
    fail_next: list[int] = field(default_factory=list)
    seed: int | None = None


class FakeState(fake_server.FakeServerState[FakeConfig]):
    """The switches and every delivery received."""


def _config_problem(config: FakeConfig) -> str | None:
    try:
        Webhook(config.secret)
    except Exception:  # noqa: BLE001 - the package raises several kinds for a malformed secret
        return "secret must be whsec_ followed by base64"
    if not all(0 <= rate <= 1 for rate in (config.fail_rate_500, config.fail_rate_429)):
        return "fail rates are probabilities (0..1)"
    return None


def _error_reply(status: int, title: str, detail: str | None):
    return jsonify({"error": detail or title}), status


def _receive(state: FakeState):
    body = request.get_data(as_text=True)
    with state.lock:
        call: dict[str, Any] = {"webhook_id": request.headers.get("webhook-id"), "verified": False, "body": None}
        try:
            call["body"] = Webhook(state.config.secret).verify(body, dict(request.headers))
            call["verified"] = True
        except (WebhookVerificationError, ValueError):
            status = 401
        else:
            status = 503 if state.config.down else (state.injected_failure() or 204)
        call["status"] = status
        state.calls.append(call)
    if status == 401:
        return jsonify({"error": "invalid signature"}), 401
    return ("", 204) if status == 204 else (jsonify({"error": fake_server.phrase(status)}), status)


def create_fake_app(state: FakeState | None = None) -> Flask:
    state = state or FakeState(FakeConfig())
    app = fake_server.fake_app(__name__, state, _config_problem, _error_reply)
    app.add_url_rule("/webhooks", endpoint="webhooks", view_func=lambda: _receive(state), methods=["POST"])
    return app


def main(argv: list[str] | None = None) -> int:
    parser = fake_server.argument_parser(__doc__.splitlines()[0], port=8095, api_key="")
    parser.add_argument("--secret", default=DEFAULT_SECRET)
    args = parser.parse_args(argv)
    config = FakeConfig(**fake_server.fault_switches(args), secret=args.secret)
    problem = _config_problem(config)
    if problem:
        parser.error(problem)
    return fake_server.serve(create_fake_app(FakeState(config)), args.host, args.port, "host")


if __name__ == "__main__":
    raise SystemExit(main())
