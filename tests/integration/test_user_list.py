"""`GET /users?decision=&blocked=&synced=&limit=&after=` (docs/contracts.md §7), on SQLite and PostgreSQL: the
standing kept on each user's row agrees with the record computed from the inquiries, whatever the events
and overrides; filters by decision, block and sync; pages by cursor without a gap or a repeat."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import create_app
from domain.times import iso_millis
from store.db import migrate
from tests.helpers.events import inquiry_event
from tests.helpers.in_process import clear_job_caches, cli_environment
from workers import jobs

TOKEN = "operator-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api(monkeypatch, worker_env, real_config, real_redis):
    cli_environment(monkeypatch, worker_env)
    app = create_app(dataclasses.replace(real_config, admin_api_token=TOKEN), redis=real_redis)
    yield app.test_client()
    app.extensions["database"].dispose()  # PostgreSQL's connections are few: none left to the garbage collector
    clear_job_caches()


def hours_ago(hours: float) -> str:
    return iso_millis(datetime.now(UTC) - timedelta(hours=hours))


def deliver(reference_id: str, *steps: tuple[str, str, float]) -> None:
    """Each (inquiry, status, hours ago) as an event of the user's."""
    for inquiry_id, status, hours in steps:
        jobs.process_event(inquiry_event(inquiry_id, status, hours_ago(hours), reference_id))


def population() -> None:
    deliver("u_allow", ("inq_1", "approved", 5))
    deliver("u_blocked", ("inq_2", "declined", 2), ("inq_3", "pending", 1))  # 7-day block in force
    deliver("u_expired", ("inq_4", "declined", 24 * 8), ("inq_5", "pending", 1))  # its block ended a day ago
    deliver("u_declined", ("inq_6", "declined", 24 * 9))  # its block is over: verify again (§5 as revised)
    deliver("u_pending", ("inq_7", "created", 3))


def listed(api, query: str = "") -> dict:
    answer = api.get(f"/users{query}", headers=AUTH)
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def names(api, query: str) -> list[str]:
    return [user["reference_id"] for user in listed(api, query)["users"]]


def test_each_filter_lists_the_users_whose_standing_it_names(api):
    population()
    assert names(api, "") == ["u_allow", "u_blocked", "u_declined", "u_expired", "u_pending"]
    assert names(api, "?decision=deny") == ["u_blocked"]
    assert names(api, "?decision=verify") == ["u_declined"]
    assert names(api, "?decision=resume") == ["u_expired", "u_pending"]
    assert names(api, "?decision=allow") == ["u_allow"]
    assert names(api, "?blocked=true") == ["u_blocked"]
    assert names(api, "?blocked=false&decision=verify") == ["u_declined"]
    assert names(api, "?synced=true") == []  # no Verisoul configured: nobody is in step with it
    [blocked] = listed(api, "?blocked=true")["users"]
    assert blocked | {"blocked_until": None} == {
        "reference_id": "u_blocked",
        "status": "pending",
        "decision": "deny",
        "strikes": 1,
        "blocked": True,
        "blocked_until": None,
        "synced": False,
    }
    assert blocked["blocked_until"] > iso_millis(datetime.now(UTC) + timedelta(days=6))


def test_pages_follow_the_cursor_without_a_gap_or_a_repeat(api):
    population()
    seen, query = [], "?limit=2"
    while True:
        page = listed(api, query)
        seen += [user["reference_id"] for user in page["users"]]
        if page["next"] is None:
            break
        assert len(page["users"]) == 2
        query = f"?limit=2&after={page['next']}"
    assert seen == names(api, "")


def test_a_lifted_block_leaves_the_blocked_list(api):
    population()
    answer = api.post(
        "/users/u_blocked/actions", json={"action": "lift_block", "reason": "wrong", "operator": "ops"}, headers=AUTH
    )
    assert answer.status_code == 200
    assert names(api, "?blocked=true") == []
    assert "u_blocked" in names(api, "?decision=resume")


@pytest.mark.parametrize(
    ("query", "names_the"),
    [
        ("?decision=maybe", "decision"),
        ("?blocked=perhaps", "blocked"),
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?limit=ten", "limit"),
        ("?after=%%%", "after"),
        ("?after=AA", "after"),  # a NUL once decoded: no reference id holds one
        ("?decisions=allow", "decisions"),
    ],
)
def test_a_bad_parameter_is_a_400_naming_it(api, query, names_the):
    answer = api.get(f"/users{query}", headers=AUTH)
    assert (answer.status_code, answer.get_json()["error"]) == (400, "invalid_query")
    assert answer.get_json()["detail"].startswith(names_the)


def test_the_list_needs_the_admin_token(api):
    assert api.get("/users").status_code == 401


STATUSES = ["created", "pending", "completed", "approved", "failed", "declined", "expired", "needs_review"]
steps = st.lists(
    st.tuples(st.sampled_from(["u1", "u2", "u3"]), st.integers(0, 2), st.sampled_from(STATUSES), st.integers(0, 400)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps, seed=st.integers(0, 2**16))
def test_the_kept_standing_always_agrees_with_the_record(api, real_config, steps, seed):
    """Whatever events arrive, in any order, and a forgiven inquiry: the list says what each record says."""
    for user, inquiry, status, hours in random.Random(seed).sample(steps, len(steps)):
        deliver(user, (f"inq_{user}_{inquiry}", status, hours))
    if random.Random(seed).random() < 0.5:
        api.post("/users/u1/actions", json={"action": "forgive_inquiry", "inquiry_id": "inq_u1_0", "reason": "r", "operator": "o"}, headers=AUTH)  # fmt: skip
    for entry in listed(api, "?limit=500")["users"]:
        record = api.get(f"/users/{entry['reference_id']}", headers=AUTH).get_json()
        assert (entry["status"], entry["decision"], entry["strikes"]) == (
            record["status"],
            record["decision"],
            record["strikes"],
        ), entry


# What the revisions after 0008 added, undone by hand: their downgrades rebuild `users`, which SQLite's foreign keys
# forbid once other rows point at it.
UNDO_0009_AND_LATER = (
    "DROP TABLE erased_ids",
    "DROP TABLE erasures",
    "DROP TABLE outbox",
    "ALTER TABLE inquiries DROP COLUMN redacted",
    "ALTER TABLE users DROP COLUMN notified_digest",
    "ALTER TABLE users DROP COLUMN notified_sequence",
    "ALTER TABLE users DROP COLUMN block_lifted_since",
)


def test_the_migration_fills_the_standing_of_existing_users(real_database_url, real_config, monkeypatch, worker_env):
    """0008 computes each existing user's standing from their inquiries, so the list is right at once."""
    # built at 0007 by the code of today, then the columns of 0008 and later dropped, as 0008 would find them
    cli_environment(monkeypatch, worker_env)
    deliver("u_old", ("inq_o1", "declined", 2), ("inq_o2", "pending", 1))
    from sqlalchemy import create_engine, text

    engine = create_engine(real_database_url)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM alembic_version"))
        connection.execute(text("INSERT INTO alembic_version VALUES ('0007')"))
        for statement in (
            "DROP INDEX ix_users_block_until",
            "DROP INDEX ix_users_verisoul_synced_reference_id",
            "DROP INDEX ix_users_unblocked_decision_reference_id",
        ):
            connection.execute(text(statement))
    engine.dispose()
    with engine.begin() as connection:
        for statement in UNDO_0009_AND_LATER:
            connection.execute(text(statement))
        for column in (
            "block_permanent",
            "block_until",
            "unblocked_decision",
            "strikes",
            "status",
        ):
            connection.execute(text(f"ALTER TABLE users DROP COLUMN {column}"))
    engine.dispose()
    migrate(real_database_url)
    with engine.begin() as connection:
        row = connection.execute(
            text("SELECT status, strikes, unblocked_decision, block_permanent FROM users WHERE reference_id = 'u_old'")
        ).one()
    engine.dispose()
    assert tuple(row) == ("pending", 1, "resume", False)


def test_a_parameter_given_twice_is_a_400_not_the_first_one_silently(api):
    answer = api.get("/users?decision=deny&decision=allow", headers=AUTH)
    assert (answer.status_code, answer.get_json()["detail"]) == (400, "decision: given more than once")
