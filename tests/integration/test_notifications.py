"""The host's `user.updated` notifications (docs/contracts.md §9), on SQLite and PostgreSQL with a real Redis and the
fake host (scripts/fake_host.py), which verifies every signature with the `standardwebhooks` package: written to the
outbox in the change's own transaction, only when the announced summary changed, delivered with a growing
`sequence`, retried, dead-lettered, swept when the delivery job was lost, and re-sent by `replay-event --notify`."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from rq import Queue, SimpleWorker
from sqlalchemy import create_engine, text

from app import create_app
from domain.overrides import OverrideRequest
from domain.times import iso_millis
from scripts.fake_host import DEFAULT_SECRET
from store.db import Database
from store.notify_queue import PENDING_PREFIX
from store.operator_actions import override_user
from store.records import apply_event
from tests.helpers.events import inquiry_event, verification_event
from tests.helpers.in_process import clear_job_caches, cli_environment, set_clock
from tests.helpers.replay_event import replay, track_cli_databases
from tests.helpers.waiting import wait_until
from tests.servers import FakeHostControl
from workers import jobs
from workers.notify import HostUnavailable

ADMIN = {"Authorization": "Bearer admin-token"}


@pytest.fixture
def host(fake_host_url) -> FakeHostControl:
    fake = FakeHostControl(fake_host_url)
    fake.reset()
    return fake


@pytest.fixture
def env(monkeypatch, worker_env, real_redis, host):
    env = cli_environment(monkeypatch, worker_env)
    monkeypatch.setenv("HOST_WEBHOOK_URL", host.webhook_url)
    monkeypatch.setenv("HOST_WEBHOOK_SECRET", DEFAULT_SECRET)
    monkeypatch.setenv("HOST_WEBHOOK_RETRIES", "1,1")
    track_cli_databases(monkeypatch)
    clear_job_caches()
    yield env
    clear_job_caches()


def minutes_ago(minutes: float) -> str:
    return iso_millis(datetime.now(UTC) - timedelta(minutes=minutes))


def outbox(url: str) -> list[dict]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT * FROM outbox ORDER BY reference_id, sequence"))
            found = [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()
    for row in found:  # SQLite hands JSON back as text
        row["data"] = json.loads(row["data"]) if isinstance(row["data"], str) else row["data"]
    return found


def deliver_queued(real_redis) -> None:
    """Run the notification jobs queued so far, in this process."""
    queue = Queue("persona-notify", connection=real_redis)
    SimpleWorker([queue], connection=real_redis).work(burst=True)


def test_each_change_is_written_with_its_commit_and_delivered_signed_with_a_growing_sequence(
    env, host, real_config, real_redis
):
    steps = [("created", 30), ("pending", 20), ("approved", 10)]
    for status, minutes in steps:
        jobs.process_event(inquiry_event("inq_1", status, minutes_ago(minutes), "u_life"))
        [row] = [r for r in outbox(real_config.database_url) if r["delivered_at"] is None]
        assert row["data"]["status"] == status  # in the outbox with the commit, before any delivery
        deliver_queued(real_redis)
    accepted = host.accepted()
    assert [body["data"]["sequence"] for body in accepted] == [1, 2, 3]
    assert [body["data"]["decision"] for body in accepted] == ["resume", "resume", "allow"]
    last = accepted[-1]
    assert last["type"] == "user.updated"
    assert last["data"] == {
        "reference_id": "u_life",
        "sequence": 3,
        "status": "approved",
        "inquiry_id": "inq_1",
        "decision": "allow",
        "next_action": "none",
        "strikes": 0,
        "blocked_until": None,
        "verisoul": {"enrolled": False, "blocked": False},
    }
    assert all(call["verified"] for call in host.calls())
    assert [call["webhook_id"] for call in host.calls()] == [
        f"msg_{row['id']}" for row in outbox(real_config.database_url)
    ]


def test_a_commit_that_changes_nothing_announced_writes_nothing(env, real_config):
    event = inquiry_event("inq_2", "pending", minutes_ago(10), "u_same")
    jobs.process_event(event)
    jobs.process_event(event)  # a duplicate
    jobs.process_event(verification_event("ver_1", "inq_2", "passed", minutes_ago(9)))  # not in the summary
    jobs.process_event(inquiry_event("inq_2", "created", minutes_ago(20), "u_same"))  # stale
    assert [row["sequence"] for row in outbox(real_config.database_url)] == [1]


def test_without_a_host_webhook_nothing_is_written(env, monkeypatch, real_config):
    monkeypatch.delenv("HOST_WEBHOOK_URL")
    monkeypatch.delenv("HOST_WEBHOOK_SECRET")
    clear_job_caches()
    jobs.process_event(inquiry_event("inq_3", "approved", minutes_ago(10), "u_quiet"))
    assert outbox(real_config.database_url) == []


def test_a_burst_is_coalesced_into_the_latest(env, host, real_config, real_redis):
    for status, minutes in [("created", 30), ("pending", 20), ("declined", 10)]:
        jobs.process_event(inquiry_event("inq_4", status, minutes_ago(minutes), "u_burst"))
    deliver_queued(real_redis)
    assert [body["data"]["sequence"] for body in host.accepted()] == [3]
    rows = outbox(real_config.database_url)
    assert [row["last_error"] for row in rows[:2]] == ["superseded by sequence 3"] * 2
    assert all(row["delivered_at"] is not None for row in rows)


def test_a_refused_delivery_is_retried_then_dead_lettered_and_a_requeue_delivers_it(env, host, real_config):
    jobs.process_event(inquiry_event("inq_5", "approved", minutes_ago(10), "u_fail"))
    host.configure(fail_next=[500, 503])
    with pytest.raises(HostUnavailable, match="HTTP 500"):
        jobs.notifier().deliver("u_fail", final=False)
    [row] = outbox(real_config.database_url)
    assert (row["attempts"], row["dead_at"], row["delivered_at"]) == (1, None, None)
    with pytest.raises(HostUnavailable, match="HTTP 503"):
        jobs.notifier().deliver("u_fail", final=True)
    [row] = outbox(real_config.database_url)
    assert row["dead_at"] is not None and row["last_error"].startswith("HTTP 503")
    assert jobs.notifier().deliver("u_fail", final=False) == "delivered sequence 1"  # an operator's requeue
    [row] = outbox(real_config.database_url)
    assert (row["attempts"], row["dead_at"]) == (3, None) and row["delivered_at"] is not None


def test_a_delivery_job_lost_after_the_commit_is_queued_by_the_sweep(env, host, real_config, real_redis, monkeypatch):
    jobs.process_event(inquiry_event("inq_6", "approved", minutes_ago(10), "u_lost"))
    real_redis.flushdb()  # the worker died before its delivery job ran: no job, no pending mark
    assert jobs.sweep_notifications() == 0  # within the grace: its own job may still be on its way
    later = datetime.now(UTC) + timedelta(minutes=1)
    monkeypatch.setattr(jobs, "now", lambda: later)
    assert jobs.sweep_notifications() == 1
    assert real_redis.exists(PENDING_PREFIX + "u_lost")
    deliver_queued(real_redis)
    assert [body["data"]["reference_id"] for body in host.accepted()] == ["u_lost"]


def test_the_end_of_a_block_is_announced_by_the_sweep(env, host, real_config, real_redis, monkeypatch):
    jobs.process_event(inquiry_event("inq_7", "declined", minutes_ago(10), "u_block"))
    deliver_queued(real_redis)
    [blocked] = host.accepted()
    assert blocked["data"]["decision"] == "deny" and blocked["data"]["blocked_until"] is not None
    clock = set_clock(monkeypatch, datetime.now(UTC) + timedelta(days=7, minutes=1))
    assert jobs.sweep_notifications() == 0  # nothing lost; the ended block is announced
    deliver_queued(real_redis)
    ended = host.accepted()[-1]["data"]
    assert (ended["sequence"], ended["decision"], ended["blocked_until"]) == (2, "verify", None)
    clock["now"] += timedelta(minutes=1)
    jobs.sweep_notifications()
    assert [row["sequence"] for row in outbox(real_config.database_url)] == [1, 2]  # announced once


def test_an_override_is_announced(env, host, real_config, real_redis):
    jobs.process_event(inquiry_event("inq_8", "declined", minutes_ago(10), "u_lift"))
    config = real_config.__class__(
        **{
            **real_config.__dict__,
            "admin_api_token": "admin-token",
            "host_webhook_url": host.webhook_url,
            "host_webhook_secret": DEFAULT_SECRET,
        }  # fmt: skip
    )
    app = create_app(config, redis=real_redis)
    try:
        answer = app.test_client().post(
            "/users/u_lift/actions",
            json={"action": "lift_block", "reason": "ticket 1", "operator": "ops"},
            headers=ADMIN,
        )
    finally:
        app.extensions["database"].dispose()
    assert answer.status_code == 200
    deliver_queued(real_redis)
    assert host.accepted()[-1]["data"]["decision"] == "verify"


def test_an_override_waits_for_an_event_of_the_same_user_and_announces_the_next_sequence(env, real_config):
    """An event applying to a user holds the user's lock until its commit (store/records.py); an override of that
    user must wait for it, or both write the user's next sequence and the later commit fails on the outbox's
    unique (reference_id, sequence). PostgreSQL only: SQLite's writers run alone."""
    if not real_config.database_url.startswith("postgresql"):
        pytest.skip("advisory locks are PostgreSQL's; SQLite's writers run alone")
    jobs.process_event(inquiry_event("inq_11", "declined", minutes_ago(20), "u_race"))  # sequence 1, blocked
    database, overrides = Database(real_config.database_url), Database(real_config.database_url)
    lift = OverrideRequest("lift_block", "ticket 2", "ops")
    try:
        with ThreadPoolExecutor(1) as pool:
            with database.sessions() as session:  # the event's transaction, held open until the override waits
                applied = apply_event(
                    session,
                    inquiry_event("inq_12", "created", minutes_ago(10), "u_race"),
                    datetime.now(UTC),
                    jobs.record_settings(),
                )
                for statement, params in applied.writes:
                    session.connection().execute(statement, params)
                lifted = pool.submit(
                    override_user, overrides, "u_race", lift, datetime.now(UTC), jobs.record_settings()
                )
                wait_until(lambda: waiting_for_a_lock(session), 10, "the override waiting for the event's commit")
                session.commit()
            lifted.result(timeout=10)
    finally:
        database.dispose()
        overrides.dispose()
    rows = outbox(real_config.database_url)
    assert [row["sequence"] for row in rows] == [1, 2, 3]
    assert (rows[2]["data"]["status"], rows[2]["data"]["decision"]) == ("created", "resume")  # the event's, lifted


def waiting_for_a_lock(session) -> bool:
    """Some other session of this database waits for a lock (the override, on the user's or on the outbox row)."""
    query = text(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE NOT l.granted AND a.datname = current_database() AND a.pid <> pg_backend_pid()"
    )
    return bool(session.connection().execute(query).scalar())


def test_replay_event_notify_re_sends_the_current_state_with_a_new_sequence(env, host, real_config, real_redis):
    jobs.process_event(inquiry_event("inq_9", "approved", minutes_ago(10), "u_again"))
    deliver_queued(real_redis)
    result = replay("--notify", "--user", "u_again")
    assert result.exit_code == 0, result.output
    assert "u_again: sequence 2 queued" in result.stdout
    deliver_queued(real_redis)
    first, second = host.accepted()
    assert second["data"] == first["data"] | {"sequence": 2}
    assert replay("--notify", "--since", "2000-01-01").exit_code == 0
    assert replay("--notify", "--user", "nobody").exit_code == 1
    assert replay("--notify", "inq_9").exit_code == 2


def test_the_metrics_show_deliveries_and_the_oldest_waiting(env, host, real_config, real_redis):
    jobs.process_event(inquiry_event("inq_10", "approved", minutes_ago(10), "u_metrics"))
    config = real_config.__class__(**{**real_config.__dict__, "host_webhook_url": host.webhook_url})
    app = create_app(config, redis=real_redis)
    try:
        waiting = app.test_client().get("/metrics").get_data(as_text=True)
        deliver_queued(real_redis)
        done = app.test_client().get("/metrics").get_data(as_text=True)
    finally:
        app.extensions["database"].dispose()
    assert gauge(waiting, "persona_outbox_oldest_undelivered_seconds") > 0
    assert gauge(done, "persona_outbox_oldest_undelivered_seconds") == 0
    assert gauge(done, "persona_outbox_dead") == 0
    assert gauge(done, 'persona_notifications_total{result="delivered"}') >= 1


def gauge(text: str, name: str) -> float:
    [value] = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(value)
