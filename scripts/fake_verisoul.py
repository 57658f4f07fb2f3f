"""A fake Verisoul server for development and tests: both API flavors, in memory, on one server.

It fakes the two generations described in docs/verisoul.md:

- account flavor, at the root (client base URL ``http://host:port``):
  ``GET /account/<id>``, ``POST /account/<id>/enroll`` ``{"externalId": ...}``, ``POST /block/<id>``,
  ``POST /unblock/<id>``;
- lists flavor, under ``/lists`` (client base URL ``http://host:port/lists``):
  ``GET /lists/account/<id>``, ``PUT /lists/account/<id>`` ``{"id": <id>, "metadata": {...}}`` (merged),
  ``POST /lists/list/block/account/<id>``, ``DELETE /lists/list/block/account/<id>``, and
  ``DELETE /lists/account/<id>``, which deletes the account (400 "Account not found" for one it does not hold:
  a delete never creates one). The account flavor has no delete, as Verisoul's has none (404).

Both flavors share one account store: an account's linked-account count is ``numAccounts`` in the account flavor
and ``accounts_linked`` in the lists flavor; a block made through either flavor is visible in both. The fake does
not model the linked accounts themselves, so ``hasBlockedAccounts`` is always false, ``decision`` "Real" and
``account_score`` 0.1. A blocked account's ``lists`` is ``["block"]``.

Every API request needs the ``x-api-key`` header (401 otherwise). Errors have Verisoul's shape
``{"statusCode": n, "message": "..."}``. The switches, set at start (CLI flags) or via ``POST /_control/config``:

- ``api_key`` (default "fake-verisoul-key");
- ``auto_create`` (default true): an unknown account is created on first use; when false it is a
  400 "Account not found" until created with ``POST /_control/accounts/<id>``;
- ``rate_limit_per_minute`` (default 300, null for none): more admitted requests than this within any 60 s
  (sliding window on the injectable ``state.clock``) → 429 "Too Many Requests", without Retry-After;
- ``fail_rate_500``, ``fail_rate_429``: probability (0..1) that an admitted request fails with that status,
  drawn from ``random.Random(seed)``;
- ``fail_next``: status codes answered to the next requests, one each, in order;
- ``delay_seconds``: sleep before answering any API request;
- ``seed``: seeds the failure draws (setting it reseeds).

A failed request (401, 429, injected failure, 400) changes no account. Requests are checked in the order
api key → rate limit → ``fail_next`` → ``fail_rate_500`` → ``fail_rate_429`` → validation → account lookup.

Control API, no api key: ``POST /_control/reset`` (forget accounts, calls and the rate window; restore the
starting switches), ``GET``/``POST /_control/config``, ``POST /_control/accounts/<id>`` with ``{"numAccounts": n}``
or ``{"accounts_linked": n}`` (creates the account if needed), ``GET /_control/accounts`` (every account's state
and successful-call counts, by id), ``GET /_control/calls`` (every API request received, in order of answer).

Routes match the request path as it came over the wire (``RawPathApp`` in scripts/fake_server.py): an account
id is one segment, percent-decoded, so ``/account/a%2Fb`` is account ``a/b`` and ``/account/%2E%2E/enroll``
enrolls account ``..``, as Verisoul itself would read them. Each call in the log has that raw ``path`` and its
raw ``query`` string (empty when there is none).

Run: ``python -m scripts.fake_verisoul --port 8090`` (``--port 0`` picks a free port; the ready line shows it).
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from flask import Flask, jsonify, request

from scripts import fake_server

DEFAULT_API_KEY = "fake-verisoul-key"
WINDOW_SECONDS = 60.0
ACCOUNT_NOT_FOUND = "Account not found"


@dataclass
class FakeConfig:
    """The switches; see the module docstring."""

    api_key: str = DEFAULT_API_KEY
    auto_create: bool = True
    rate_limit_per_minute: int | None = 300
    fail_rate_500: float = 0.0
    fail_rate_429: float = 0.0
    delay_seconds: float = 0.0
    fail_next: list[int] = field(default_factory=list)
    seed: int | None = None


@dataclass
class FakeAccount:
    id: str
    linked: int = 0
    enrolled: bool = False
    external_id: str | None = None
    blocked: bool = False
    last_blocked_at: str | None = None
    metadata: dict = field(default_factory=dict)
    enroll_calls: int = 0
    block_calls: int = 0
    unblock_calls: int = 0
    update_calls: int = 0

    def snapshot(self) -> dict:
        return {
            "id": self.id,
            "numAccounts": self.linked,
            "accounts_linked": self.linked,
            "enrolled": self.enrolled,
            "externalId": self.external_id,
            "blocked": self.blocked,
            "lastBlockedAt": self.last_blocked_at,
            "metadata": dict(self.metadata),
            "enroll_calls": self.enroll_calls,
            "block_calls": self.block_calls,
            "unblock_calls": self.unblock_calls,
            "update_calls": self.update_calls,
        }


class FakeState(fake_server.FakeServerState[FakeConfig]):
    """Everything the fake remembers, behind one lock. `clock` returns seconds since the epoch."""

    def __init__(self, config: FakeConfig | None = None, clock: Callable[[], float] = time.time):
        self.clock = clock
        super().__init__(config or FakeConfig())

    def reset(self) -> None:
        super().reset()
        self.accounts: dict[str, FakeAccount] = {}
        self.admitted: deque[float] = deque()


def _error(status: int, message: str | None = None) -> tuple[int, dict]:
    return status, {"statusCode": status, "message": message or fake_server.phrase(status)}


def _error_reply(status: int, title: str, detail: str | None):
    """The shared routes' errors (fake_server.ErrorReply) in Verisoul's shape."""
    return _reply(*_error(status, detail or title))


def _now_iso(state: FakeState) -> str:
    moment = datetime.fromtimestamp(state.clock(), UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- the gate every API request passes before it may touch an account ---


def _gate(state: FakeState) -> tuple[int, dict] | None:
    if request.headers.get("x-api-key") != state.config.api_key:
        return _error(401, "Unauthorized")
    if _rate_limited(state):
        return _error(429)
    status = state.injected_failure()
    return _error(status) if status is not None else None


def _rate_limited(state: FakeState) -> bool:
    limit = state.config.rate_limit_per_minute
    if limit is None:
        return False
    now = state.clock()
    while state.admitted and state.admitted[0] <= now - WINDOW_SECONDS:
        state.admitted.popleft()
    if len(state.admitted) >= limit:
        return True
    state.admitted.append(now)
    return False


def _find_account(state: FakeState, account_id: str) -> FakeAccount | None:
    account = state.accounts.get(account_id)
    if account is None and state.config.auto_create:
        account = state.accounts[account_id] = FakeAccount(account_id)
    return account


# --- request bodies ---


def _require_external_id(account_id: str, body) -> str | None:
    if not isinstance(body, dict) or not isinstance(body.get("externalId"), str) or not body["externalId"]:
        return "externalId is required"
    return None


def _require_update(account_id: str, body) -> str | None:
    if not isinstance(body, dict) or body.get("id") != account_id:
        return "id must equal the account id in the path"
    if not isinstance(body.get("metadata"), dict):
        return "metadata must be an object"
    return None


# --- account flavor ---


def _account_view(state: FakeState, account: FakeAccount, body) -> dict:
    return {
        "accountId": account.id,
        "numAccounts": account.linked,
        "isBlocked": account.blocked,
        "hasBlockedAccounts": False,
        "isEnrolled": account.enrolled,
        "lastBlockedAt": account.last_blocked_at,
    }


def _enroll(state: FakeState, account: FakeAccount, body) -> dict:
    account.enrolled = True
    account.external_id = body["externalId"]
    account.enroll_calls += 1
    return {"success": True, "accountId": account.id, "externalId": account.external_id}


def _block(state: FakeState, account: FakeAccount, body) -> dict:
    account.blocked = True
    account.last_blocked_at = _now_iso(state)
    account.block_calls += 1
    return {"success": True}


def _unblock(state: FakeState, account: FakeAccount, body) -> dict:
    account.blocked = False
    account.unblock_calls += 1
    return {"success": True}


# --- lists flavor ---


def _lists_view(state: FakeState, account: FakeAccount, body) -> dict:
    return {
        "account": {"id": account.id, "metadata": dict(account.metadata)},
        "decision": "Real",
        "account_score": 0.1,
        "multiple_accounts": account.linked > 0,
        "accounts_linked": account.linked,
        "lists": ["block"] if account.blocked else [],
    }


def _lists_ok(message: str) -> dict:
    return {"request_id": str(uuid.uuid4()), "message": message, "success": True}


def _lists_update(state: FakeState, account: FakeAccount, body) -> dict:
    account.metadata.update(body["metadata"])
    account.update_calls += 1
    return _lists_ok("Account updated")


def _lists_block(state: FakeState, account: FakeAccount, body) -> dict:
    _block(state, account, body)
    return _lists_ok("Account added to block list")


def _lists_unblock(state: FakeState, account: FakeAccount, body) -> dict:
    _unblock(state, account, body)
    return _lists_ok("Account removed from block list")


def _lists_delete(state: FakeState, account: FakeAccount, body) -> dict:
    del state.accounts[account.id]
    return _lists_ok("Account deleted")


# Actions on an account that must exist already: never auto-created.
_EXISTING_ONLY = frozenset({"delete"})

# rule, method, flavor, action, body check, handler
API_ROUTES = [
    ("/account/<segment:account_id>", "GET", "account", "get", None, _account_view),
    ("/account/<segment:account_id>/enroll", "POST", "account", "enroll", _require_external_id, _enroll),
    ("/block/<segment:account_id>", "POST", "account", "block", None, _block),
    ("/unblock/<segment:account_id>", "POST", "account", "unblock", None, _unblock),
    ("/lists/account/<segment:account_id>", "GET", "lists", "get", None, _lists_view),
    ("/lists/account/<segment:account_id>", "PUT", "lists", "update", _require_update, _lists_update),
    ("/lists/list/block/account/<segment:account_id>", "POST", "lists", "block", None, _lists_block),
    ("/lists/list/block/account/<segment:account_id>", "DELETE", "lists", "unblock", None, _lists_unblock),
    ("/lists/account/<segment:account_id>", "DELETE", "lists", "delete", None, _lists_delete),
]


def _serve(state: FakeState, flavor: str, action: str, check, handler, account_id: str):
    body = request.get_json(silent=True)
    if state.config.delay_seconds:
        time.sleep(state.config.delay_seconds)
    with state.lock:
        status, payload = _gate(state) or _handle(state, action, check, handler, account_id, body)
        state.calls.append({
            "method": request.method,
            "path": request.path,
            "query": request.query_string.decode("latin-1"),
            "flavor": flavor,
            "action": action,
            "account_id": account_id,
            "status": status,
            "json": body,
            "at": state.clock(),
        })  # fmt: skip
    return _reply(status, payload)


def _reply(status: int, payload):
    return jsonify(payload), status


def _handle(state: FakeState, action: str, check, handler, account_id: str, body) -> tuple[int, dict]:
    problem = check(account_id, body) if check else None
    if problem:
        return _error(400, problem)
    account = state.accounts.get(account_id) if action in _EXISTING_ONLY else _find_account(state, account_id)
    if account is None:
        return _error(400, ACCOUNT_NOT_FOUND)
    return 200, handler(state, account, body)


# --- control API ---


def _config_problem(config: FakeConfig) -> str | None:
    def is_number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    checks = [
        (isinstance(config.api_key, str), "api_key must be a string"),
        (isinstance(config.auto_create, bool), "auto_create must be a boolean"),
        (config.rate_limit_per_minute is None
         or (isinstance(config.rate_limit_per_minute, int) and config.rate_limit_per_minute > 0),
         "rate_limit_per_minute must be a positive integer or null"),
        (all(is_number(r) and 0 <= r <= 1 for r in (config.fail_rate_500, config.fail_rate_429)),
         "fail rates must be numbers from 0 to 1"),
        (is_number(config.delay_seconds) and config.delay_seconds >= 0, "delay_seconds must be >= 0"),
        (isinstance(config.fail_next, list)
         and all(isinstance(s, int) and 100 <= s <= 599 for s in config.fail_next),
         "fail_next must be a list of HTTP status codes"),
        (config.seed is None or isinstance(config.seed, int), "seed must be an integer or null"),
    ]  # fmt: skip
    return next((message for ok, message in checks if not ok), None)


def _set_linkage(state: FakeState, account_id: str, body) -> str | None:
    """Create the account if needed and apply {"numAccounts": n} / {"accounts_linked": n}."""
    if body is None:
        body = {}
    if not isinstance(body, dict) or set(body) - {"numAccounts", "accounts_linked"}:
        return 'body must be {"numAccounts": n} or {"accounts_linked": n}'
    counts = set(body.values())
    if len(counts) > 1 or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        return "the linked-account count must be one non-negative integer"
    account = state.accounts.setdefault(account_id, FakeAccount(account_id))
    if counts:
        account.linked = counts.pop()
    return None


def _register_control(app: Flask, state: FakeState) -> None:
    @app.post("/_control/accounts/<segment:account_id>")
    def control_set_account(account_id: str):
        with state.lock:
            problem = _set_linkage(state, account_id, request.get_json(silent=True))
            snapshot = None if problem else state.accounts[account_id].snapshot()
        return _reply(*_error(400, problem)) if problem else _reply(200, snapshot)

    @app.get("/_control/accounts")
    def control_accounts():
        with state.lock:
            return jsonify({account_id: a.snapshot() for account_id, a in state.accounts.items()})


def create_fake_app(state: FakeState | None = None) -> Flask:
    state = state or FakeState()
    app = fake_server.fake_app(__name__, state, _config_problem, _error_reply)
    for rule, method, flavor, action, check, handler in API_ROUTES:
        view = partial(_serve, state, flavor, action, check, handler)
        app.add_url_rule(rule, endpoint=f"{flavor}_{action}", view_func=view, methods=[method])
    _register_control(app, state)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = fake_server.argument_parser(__doc__.splitlines()[0], port=8090, api_key=DEFAULT_API_KEY)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before answering")
    args = parser.parse_args(argv)
    config = FakeConfig(**fake_server.fault_switches(args), delay_seconds=args.delay)
    problem = _config_problem(config)
    if problem:
        parser.error(problem)
    return fake_server.serve(create_fake_app(FakeState(config)), args.host, args.port, "Verisoul")


if __name__ == "__main__":
    raise SystemExit(main())
