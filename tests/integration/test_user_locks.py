"""Everything that writes a user's row takes the same lock (store/records.py `user_lock`): an operator's override, a
Verisoul sync's record and the sweeps wait for an event of that user in flight, and the other way round, so the
user's standing and notified sequence have one writer at a time. PostgreSQL only: SQLite's writers run alone.
(An override used to lock the bare reference id while events locked `user:<id>`: they never waited for each other.)"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from domain.overrides import load_override_request
from store.db import Database
from store.operator_actions import override_user
from store.records import lock, user_lock
from tests.helpers.events import inquiry_event
from tests.helpers.in_process import cli_environment
from workers import jobs


def test_an_override_waits_for_the_users_lock(real_database_url, real_config, monkeypatch, worker_env):
    if not real_database_url.startswith("postgresql"):
        pytest.skip("advisory locks: PostgreSQL only")
    cli_environment(monkeypatch, worker_env)
    jobs.process_event(inquiry_event("inq_l", "declined", "2026-01-01T00:00:00.000Z", "u_locked"))
    database = Database(real_database_url)
    request = load_override_request({"action": "lift_block", "reason": "ticket 7", "operator": "ops"})
    done = threading.Event()

    def override() -> None:
        override_user(database, "u_locked", request, datetime.now(UTC), real_config.record_settings)
        done.set()

    try:
        with database.transaction() as holder:  # an event of this user, mid-transaction
            lock(holder, user_lock("u_locked"))
            thread = threading.Thread(target=override)
            thread.start()
            assert not done.wait(1.0), "the override did not wait for the user's lock"
        thread.join(10)
        assert done.is_set()
    finally:
        database.dispose()
