"""What applying one event costs the database, and how the lean path survives what the old one tolerated.

Statement counts are taken with SQLAlchemy's cursor events on the workers' own engine (`workers.jobs.database`),
so they count what the worker sends, pipelined or not; the round trips at the wire are measured by
`python -m scripts.bench` (a counting proxy in front of PostgreSQL).
"""

from __future__ import annotations

import itertools
from contextlib import contextmanager

import pytest
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import select, text

from store.db import Database
from store.models import Event, History, Inquiry
from tests.helpers.events import verification_event
from workers import jobs
from workers.jobs import process_event

pytestmark = pytest.mark.integration

_ids = itertools.count()


def _at(second: int) -> str:
    return f"2026-01-01T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}.000Z"


def _inquiry_event(inquiry_id: str, status: str, second: int, reference_id: str | None = "user_cost") -> dict:
    return {
        "event_id": f"evt_cost{next(_ids):07d}",
        "name": f"inquiry.{status}",
        "created_at": _at(second),
        "received_at": _at(second),
        "body_sha256": "0" * 64,
        "object_type": "inquiry",
        "object_id": inquiry_id,
        "status": status,
        "reference_id": reference_id,
        "account_id": "act_cost",
        "template_id": "itmpl_1",
        "timestamps": {"created_at": _at(0)},
    }


@contextmanager
def _statements():
    """The SQL the worker's engine executes meanwhile, as strings."""
    seen: list[str] = []
    engine = jobs.database().engine

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    sqlalchemy_event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sqlalchemy_event.remove(engine, "before_cursor_execute", record)


def test_an_events_cost_does_not_grow_with_the_events_its_inquiry_had(worker_env):
    statuses = itertools.cycle(["pending", "completed", "needs_review", "pending"])
    for second in range(60):
        process_event(_inquiry_event("inq_long", next(statuses), second))
    with _statements() as seen:
        assert process_event(_inquiry_event("inq_long", "approved", 100)) in ("applied", "unexpected")
    assert not [s for s in seen if "FROM events" in s], "the event log is not read to apply an in-order event"
    # The lock, the inquiries, the users; every write then goes in one round trip with the COMMIT.
    assert len([s for s in seen if s.lstrip().upper().startswith("SELECT")]) <= 3, seen


def test_status_since_follows_late_events_without_rereading_the_log_unless_one_breaks_the_run(worker_env):
    for second, status in [(10, "pending"), (20, "completed"), (30, "completed"), (40, "completed")]:
        process_event(_inquiry_event("inq_run", status, second))
    with _statements() as seen:
        process_event(_inquiry_event("inq_run", "completed", 15))  # late, same status, before the run: extends it
    assert not [s for s in seen if "FROM events" in s]
    assert _since("inq_run") == "2026-01-01 00:00:15"
    process_event(_inquiry_event("inq_run", "pending", 25))  # late, another status, inside the run: breaks it
    assert _since("inq_run") == "2026-01-01 00:00:30"


def _since(inquiry_id: str) -> str:
    with jobs.database().sessions() as session:
        since = session.scalar(select(Inquiry.status_since).where(Inquiry.id == inquiry_id))
    assert since is not None, f"{inquiry_id} has no status_since"
    return since.strftime("%Y-%m-%d %H:%M:%S")


def test_an_event_is_inserted_once_with_its_outcome_and_never_updated(worker_env):
    event = _inquiry_event("inq_once", "created", 1)
    with _statements() as seen:
        assert process_event(event) == "applied"
    assert not [s for s in seen if s.lstrip().upper().startswith("UPDATE EVENTS")]
    assert process_event(event) == "duplicate"
    with jobs.database().sessions() as session:
        assert session.scalars(select(Event.outcome)).all() == ["applied"]
        assert len(session.scalars(select(History)).all()) == 1


def test_a_duplicate_leaves_the_connection_usable_for_the_next_event(worker_env):
    event = _inquiry_event("inq_dup", "created", 1)
    assert [process_event(event) for _ in range(3)] == ["applied", "duplicate", "duplicate"]
    assert process_event(_inquiry_event("inq_dup", "completed", 2)) == "applied"


def test_an_event_finding_its_pooled_connection_dead_is_applied_without_a_retry(worker_env, real_database_url):
    if not real_database_url.startswith("postgresql"):
        pytest.skip("a connection to terminate: PostgreSQL only")
    process_event(_inquiry_event("inq_dead", "created", 1))  # leaves a connection in the pool
    killer = Database(real_database_url)
    with killer.transaction() as session:
        session.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    killer.dispose()
    assert process_event(_inquiry_event("inq_dead", "completed", 2)) == "applied"


def test_an_event_costs_at_most_five_round_trips_at_the_wire(worker_env, real_database_url, monkeypatch):
    """BEGIN, the lock, two reads, the writes with the COMMIT: counted by a proxy in front of PostgreSQL
    (scripts/roundtrips.py). Issue 10 asked for at most 6."""
    if not real_database_url.startswith("postgresql"):
        pytest.skip("round trips to a server: PostgreSQL only")
    from scripts.roundtrips import RoundTripProxy

    with RoundTripProxy.for_url(real_database_url, postgres=True) as proxy:
        monkeypatch.setenv("DATABASE_URL", proxy.url)
        jobs.database.cache_clear()
        try:
            # Connecting, and psycopg preparing each statement on its sixth use (one round trip more, once
            # per connection): not what is measured.
            for second in range(1, 9):
                process_event(_inquiry_event(f"inq_warm{second}", "created", second))
                process_event(verification_event(f"ver_warm{second}", f"inq_warm{second}", "submitted", _at(second)))
            process_event(_inquiry_event("inq_wire", "created", 1))
            lifecycle = [
                _inquiry_event("inq_wire", "pending", 2),
                verification_event("ver_wire", "inq_wire", "submitted", _at(3)),
                verification_event("ver_wire", "inq_wire", "passed", _at(4)),
                _inquiry_event("inq_wire", "completed", 5),
                _inquiry_event("inq_wire", "approved", 6),
                _inquiry_event("inq_wire", "declined", 5),  # late: stale
            ]
            for event in lifecycle:
                before = proxy.flights()
                process_event(event)
                spent = proxy.flights() - before
                assert spent <= 5, f"{event['name']}: {spent} round trips\n" + proxy.describe(proxy.recent(spent))
        finally:
            jobs.database().dispose()
            jobs.database.cache_clear()
