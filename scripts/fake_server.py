"""The server side every fake vendor API shares (scripts/fake_persona.py, scripts/fake_verisoul.py).

A fake is a Flask app on a threaded werkzeug server, its state in memory behind one lock. What does not depend
on the vendor lives here:

- ``RawPathApp``: routing on the path as sent, so a fake sees the ids a client put on the wire;
- ``FakeServerState``: the switches, the seeded failure draws they inject and the call log;
- ``fake_app``: that app with the control routes every fake has (``POST /_control/reset``,
  ``GET``/``POST /_control/config``, ``GET /_control/calls``), HTTP errors in the vendor's shape;
- ``argument_parser``, ``fault_switches`` and ``serve``: the command line and the ready line.

A fake brings its config dataclass (with at least the fields of ``Switches``), its validation of it and its
error shape (an ``ErrorReply``); the vendor's API routes and any control routes of its own it adds itself.
"""

from __future__ import annotations

import argparse
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, fields, replace
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar
from urllib.parse import quote, unquote, urlsplit

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter
from werkzeug.serving import make_server

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


class Switches(Protocol):
    """The fault switches of a fake's config dataclass; see either fake's docstring."""

    __dataclass_fields__: ClassVar[dict[str, Any]]
    api_key: str
    fail_next: list[int]
    fail_rate_500: float
    fail_rate_429: float
    seed: int | None


ConfigT = TypeVar("ConfigT", bound=Switches)

# (status, title, detail) → the response in the vendor's error shape; title is the standard phrase or
# werkzeug's name for the error, detail what was wrong, if anything.
ErrorReply = Callable[[int, str, str | None], ResponseReturnValue]


def phrase(status: int) -> str:
    """The standard reason phrase; fail_next may name a status that has none."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# --- routing on the path as sent ---


class SegmentConverter(BaseConverter):
    """`<segment:name>`: one segment of the raw request path, percent-decoded (UTF-8).

    Only meaningful in a `RawPathApp`: there the path still holds `%2F`, so a `/` inside an id cannot be
    mistaken for a separator, and `..` arrives as the id `%2E%2E` (or `..`), never resolved away.
    """

    regex = "[^/]+"

    def to_python(self, value: str) -> str:
        return unquote(value)

    def to_url(self, value: str) -> str:
        return quote(value, safe="")


def _raw_path(environ: WSGIEnvironment) -> str | None:
    """The path of the request line, still percent-encoded; None when the server does not pass it on."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not raw:
        return None
    if raw.startswith("/"):  # origin form; urlsplit would read a leading `//x` as a host
        return raw.split("#", 1)[0].split("?", 1)[0]
    return urlsplit(raw).path or "/"  # absolute form (a proxy request)


class RawPathApp(Flask):
    """A Flask app routed on the path as sent rather than on PATH_INFO, which the WSGI server has percent-decoded.

    A fake must show what a client put on the wire: with PATH_INFO, `/account/a%2Fb` and `/account/a/b` are
    the same string and an id holding `/` cannot be represented at all. Rules name ids with `<segment:...>`;
    slash merging is off, as it would hide an empty segment.
    """

    def __init__(self, import_name: str):
        super().__init__(import_name)
        self.url_map.converters["segment"] = SegmentConverter
        self.url_map.merge_slashes = False

    def wsgi_app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        raw = _raw_path(environ)
        if raw is not None:
            environ["PATH_INFO"] = raw
        return super().wsgi_app(environ, start_response)


# --- the switches and what they inject ---


class FakeServerState(Generic[ConfigT]):
    """The switches, the failure draws and the call log, behind one lock; a fake's state adds what it stores."""

    def __init__(self, config: ConfigT):
        self.lock = threading.Lock()
        self.initial = config
        self.reset()

    def reset(self) -> None:
        """Back to the starting switches, with nothing remembered; a fake's state extends it to its stores."""
        self.config = replace(self.initial, fail_next=list(self.initial.fail_next))
        self.rng = random.Random(self.config.seed)
        self.calls: list[dict] = []

    def injected_failure(self) -> int | None:
        """The status this request is to fail with: the next of ``fail_next``, else a draw on each fail rate."""
        config = self.config
        if config.fail_next:
            return config.fail_next.pop(0)
        for status, rate in ((500, config.fail_rate_500), (429, config.fail_rate_429)):
            if rate and self.rng.random() < rate:
                return status
        return None

    def apply_config(self, changes: object, problem: Callable[[ConfigT], str | None]) -> str | None:
        """Validate a /_control/config body with `problem` and apply it; return a problem, or None once applied."""
        known = {f.name for f in fields(self.config)}
        if not isinstance(changes, dict) or not changes or set(changes) - known:
            return f"body must be an object with some of: {sorted(known)}"
        merged = replace(self.config, **changes)
        found = problem(merged)
        if found:
            return found
        merged.fail_next = list(merged.fail_next)
        self.config = merged
        if "seed" in changes:
            self.rng = random.Random(merged.seed)
        return None


# --- the app ---


def fake_app(
    import_name: str,
    state: FakeServerState[ConfigT],
    problem: Callable[[ConfigT], str | None],
    error_reply: ErrorReply,
) -> RawPathApp:
    """A `RawPathApp` with the shared control routes; every HTTP error (404, 405, ...) in the vendor's shape."""
    app = RawPathApp(import_name)

    @app.post("/_control/reset")
    def control_reset() -> ResponseReturnValue:
        with state.lock:
            state.reset()
        return jsonify({"success": True})

    @app.get("/_control/config")
    def control_config() -> ResponseReturnValue:
        with state.lock:
            return jsonify(asdict(state.config))

    @app.post("/_control/config")
    def control_set_config() -> ResponseReturnValue:
        with state.lock:
            found = state.apply_config(request.get_json(silent=True), problem)
            config = asdict(state.config)
        return error_reply(400, "Bad Request", found) if found else jsonify(config)

    @app.get("/_control/calls")
    def control_calls() -> ResponseReturnValue:
        with state.lock:
            return jsonify(list(state.calls))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        return error_reply(exc.code or 500, exc.name, None)

    return app


# --- the command line ---


def argument_parser(description: str, port: int, api_key: str) -> argparse.ArgumentParser:
    """The options every fake takes; a fake adds those of its own switches."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port, help="0 picks a free port")
    parser.add_argument("--api-key", default=api_key)
    parser.add_argument("--fail-rate-500", type=float, default=0.0)
    parser.add_argument("--fail-rate-429", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    return parser


def fault_switches(args: argparse.Namespace) -> dict[str, Any]:
    """The switches `argument_parser` sets, as keyword arguments for a fake's config."""
    return {
        "api_key": args.api_key,
        "fail_rate_500": args.fail_rate_500,
        "fail_rate_429": args.fail_rate_429,
        "seed": args.seed,
    }


def serve(app: Flask, host: str, port: int, title: str) -> int:
    """Serve `app` until interrupted. The ready line names the port taken: what tests, chaos and benches wait for."""
    server = make_server(host, port, app, threaded=True)
    print(f"fake {title} listening on http://{host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
