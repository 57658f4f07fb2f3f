"""`replay-event` (workers/cli.py, workers/replay.py) on SQLite and PostgreSQL, real Redis and the fake Persona:
replays rebuild records from the event log, idempotently; dry runs show differences and write nothing;
selectors, usage errors, the failed-job registry and events fetched from Persona."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rq import Queue
from rq.registry import FailedJobRegistry
from sqlalchemy import delete, select, update

from clients import persona
from clients.persona import event_from_document
from domain import state_machine
from domain.events import QueuedEvent
from domain.times import as_utc
from store.db import Database, migrate
from store.models import Inquiry, User, Verification
from store.queue import EventQueue
from store.records import snapshot_of
from tests.helpers.events import at, broken_event, inquiry_event, verification_event
from tests.helpers.in_process import (
    NOW,
    clear_job_caches,
    cli_environment,
    drain,
    fail_a_sync,
    set_clock,
    use_fake_persona,
)
from tests.helpers.records import events_of, records, tables, without_history
from tests.helpers.replay_event import document, problems, replay, track_cli_databases
from tests.payloads import PERSONAL_ATTRIBUTES, load_fixture, personal_values
from tests.servers import FakePersonaControl
from workers import jobs

pytestmark = pytest.mark.integration

REPLAY_FIELDS = ("replay_count", "replayed_at", "replayed_by")


# --- running the command ---


@pytest.fixture(autouse=True)
def cli_databases(monkeypatch):
    track_cli_databases(monkeypatch)


@pytest.fixture
def clock(monkeypatch) -> dict:
    return set_clock(monkeypatch)


@pytest.fixture
def env(monkeypatch, worker_env, real_redis, clock):
    yield cli_environment(monkeypatch, worker_env)
    clear_job_caches()


# --- reading the database ---


def without(rows: list[dict], *names: str) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in names} for row in rows]


def history_entries(found: dict[str, dict]) -> dict[str, Counter]:
    """Per user, the history entries as a multiset of what does not depend on the order events were applied in."""
    return {ref: Counter((h["event_id"], h["inquiry_id"], h["at"]) for h in r["history"]) for ref, r in found.items()}


def corrupt(database_url: str, statement) -> None:
    database = Database(database_url)
    try:
        with database.transaction() as session:
            session.execute(statement)
    finally:
        database.dispose()


def user_id(database_url: str, reference_id: str) -> int:
    database = Database(database_url)
    try:
        with database.sessions() as session:
            return session.scalars(select(User.id).where(User.reference_id == reference_id)).one()
    finally:
        database.dispose()


def process_elsewhere(monkeypatch, database_url: str, events: list[QueuedEvent]) -> None:
    """Run process_event on events against another, clean database, as live workers would."""
    migrate(database_url)
    with monkeypatch.context() as patch:
        patch.setenv("DATABASE_URL", database_url)
        clear_job_caches()
        for event in events:
            jobs.process_event(event)
        clear_job_caches()
    clear_job_caches()


# --- the events ---


def mixed_stream() -> tuple[list[QueuedEvent], list[QueuedEvent]]:
    """Several users' events, and an arrival order that is not event-time order: verifications before
    their inquiries, decisions before the moves that led to them, an account-only inquiry (act_9) whose
    records merge into user_2, strikes, an unexpected move and a reference id found through the account."""
    e = {
        "u1_created": inquiry_event("inq_1", "created", at(1, 0), "user_1"),
        "u1_pending": inquiry_event("inq_1", "pending", at(1, 10), "user_1"),
        "u1_ver_submitted": verification_event("ver_1", "inq_1", "submitted", at(1, 20)),
        "u1_ver_passed": verification_event("ver_1", "inq_1", "passed", at(1, 25)),
        "u1_completed": inquiry_event("inq_1", "completed", at(1, 30), "user_1"),
        "u1_approved": inquiry_event("inq_1", "approved", at(1, 40), "user_1"),
        "act_created": inquiry_event("inq_2", "created", at(2, 0), account_id="act_9"),
        "act_pending": inquiry_event("inq_2", "pending", at(2, 5), account_id="act_9"),
        "u2_approved": inquiry_event("inq_3", "approved", at(3, 0), "user_2", "act_9"),
        "u3_pending": inquiry_event("inq_4", "pending", at(4, 0), "user_3"),
        "u3_declined": inquiry_event("inq_4", "declined", at(4, 10), "user_3"),
        "u3_ver_failed": verification_event("ver_4", "inq_4", "failed", at(4, 5)),
        "u3_failed": inquiry_event("inq_5", "failed", at(5, 10), "user_3"),
        "u3_created_again": inquiry_event("inq_5", "created", at(5, 20), "user_3"),
        "u4_ver_passed": verification_event("ver_6", "inq_6", "passed", at(6, 0)),
        "u4_approved": inquiry_event("inq_6", "approved", at(6, 5), "user_4"),
        "u5_completed": inquiry_event("inq_7", "completed", at(7, 0), None, "act_5", account_reference_id="user_5"),
    }
    arrival = [
        "u1_approved", "u1_ver_passed", "u1_created", "u1_completed", "u1_ver_submitted", "u1_pending",
        "act_pending", "act_created", "u2_approved",
        "u3_created_again", "u3_declined", "u3_ver_failed", "u3_pending", "u3_failed",
        "u4_ver_passed", "u4_approved", "u5_completed",
    ]  # fmt: skip
    return list(e.values()), [e[name] for name in arrival]


def in_event_time_order(events: list[QueuedEvent]) -> list[QueuedEvent]:
    return sorted(events, key=snapshot_of)


# --- 1. idempotence ---


def test_replaying_everything_twice_rebuilds_the_records_live_processing_made(
    env, clock, real_config, real_redis, tmp_path, monkeypatch
):
    url = real_config.database_url
    events, arrival = mixed_stream()
    for event in arrival:
        jobs.process_event(event)
    live, live_tables = records(url, real_redis), tables(url)
    assert "act_9" not in live and live["user_2"]["persona_account_id"] == "act_9"  # the merge happened
    ordered_url = f"sqlite:///{tmp_path / 'in_order.db'}"
    process_elsewhere(monkeypatch, ordered_url, in_event_time_order(events))
    in_order = records(ordered_url, real_redis)

    first = replay("--since", "2000-01-01")
    assert (first.exit_code, first.stderr) == (0, "")
    once, once_tables = records(url, real_redis), tables(url)
    # Everything but the history is what live processing left; the history holds the same events, and
    # their from/to/outcome are what applying them in event-time order gives (arrival order made some stale).
    assert without_history(once) == without_history(live)
    assert history_entries(once) == history_entries(live)
    assert once == in_order
    for name in ("users", "inquiries", "verifications"):
        assert once_tables[name] == live_tables[name]
    assert without(once_tables["events"], "outcome", *REPLAY_FIELDS) == without(
        live_tables["events"], "outcome", *REPLAY_FIELDS
    )
    assert {e: row.outcome for e, row in events_of(url).items()} == {
        e: row.outcome for e, row in events_of(ordered_url).items()
    }

    clock["now"] = NOW + timedelta(hours=1)
    second = replay("--since", "2000-01-01")
    assert (second.exit_code, second.stderr) == (0, "")
    assert records(url, real_redis) == once
    twice_tables = tables(url)
    assert without(twice_tables["events"], *REPLAY_FIELDS) == without(once_tables["events"], *REPLAY_FIELDS)
    assert {k: v for k, v in twice_tables.items() if k != "events"} == {
        k: v for k, v in once_tables.items() if k != "events"
    }
    for row in events_of(url).values():
        assert row.replay_count == 2
        assert as_utc(row.replayed_at) == NOW + timedelta(hours=1)
        assert row.replayed_by.startswith("replay-event --since 2000-01-01")


def test_replay_summary_names_users_and_events(env, real_config):
    events, arrival = mixed_stream()
    for event in arrival:
        jobs.process_event(event)
    result = replay("--since", "2000-01-01", "--json")
    assert result.exit_code == 0
    report = document(result)
    assert report["dry_run"] is False and report["failed"] == 0
    assert sorted(e["event_id"] for e in report["events"]) == sorted(e["event_id"] for e in events)
    assert all(e["error"] is None and e["outcome"] in ("applied", "unexpected") for e in report["events"])
    assert [u["reference_id"] for u in report["users"]] == ["user_1", "user_2", "user_3", "user_4", "user_5"]
    assert all(u["changes"] == {} for u in report["users"])


# --- 2. repair ---


def user_1_and_3() -> None:
    """user_1 approved with a passed verification, user_3 with two strikes, processed in event-time order."""
    for event in in_event_time_order(mixed_stream()[0]):
        if event.get("reference_id") in ("user_1", "user_3") or event.get("inquiry_id") in ("inq_1", "inq_4"):
            jobs.process_event(event)


def test_dry_run_shows_a_corrupted_record_writes_nothing_and_the_replay_repairs_it(env, real_config, real_redis):
    url = real_config.database_url
    user_1_and_3()
    good, good_tables = records(url, real_redis), tables(url)
    assert (good["user_1"]["status"], good["user_1"]["decision"], len(good["user_1"]["verifications"])) == (
        "approved",
        "allow",
        1,
    )
    # A bug stored a decline a day ago that Persona never sent, and lost the verification.
    yesterday = NOW - timedelta(days=1)
    corrupt(url, update(Inquiry).where(Inquiry.id == "inq_1").values(
        status="declined", snapshot_at=yesterday, status_since=yesterday, snapshot_event_id="evt_bogus"))  # fmt: skip
    corrupt(url, delete(Verification).where(Verification.id == "ver_1"))
    broken_tables = tables(url)

    text = replay("--dry-run", "--user", "user_1")
    assert (text.exit_code, text.stderr) == (0, "")
    [line] = [line for line in text.stdout.splitlines() if line.startswith("user_1:")]
    for change in ("status declined → approved", "decision deny → allow", "strikes 1 → 0",
                   "verisoul_target_enrolled False → True", "verisoul_target_blocked True → False"):  # fmt: skip
        assert change in line
    assert "dry run, nothing written" in text.stdout

    as_json = replay("--dry-run", "--json", "--user", "user_1")
    assert as_json.exit_code == 0
    [user] = document(as_json)["users"]
    blocked_until = (yesterday + timedelta(days=7)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert user["changes"] == {
        "status": ["declined", "approved"], "decision": ["deny", "allow"], "strikes": [1, 0],
        "verisoul_target_enrolled": [False, True], "verisoul_target_blocked": [True, False],
        "verisoul_target_blocked_until": [blocked_until, None],
    }  # fmt: skip
    assert document(as_json)["dry_run"] is True
    assert tables(url) == broken_tables  # nothing written, replay counts included

    repaired = replay("--user", "user_1")
    assert (repaired.exit_code, repaired.stderr) == (0, "")
    assert records(url, real_redis) == good
    after = tables(url)
    for name in ("users", "inquiries", "verifications", "history"):
        assert after[name] == good_tables[name]


def test_replaying_the_true_owner_repairs_an_inquiry_a_bug_gave_to_another_user(env, real_config, real_redis):
    url = real_config.database_url
    user_1_and_3()
    good = records(url, real_redis)
    corrupt(url, update(Inquiry).where(Inquiry.id == "inq_1").values(user_id=user_id(url, "user_3")))
    assert records(url, real_redis)["user_1"]["status"] == "none"

    result = replay("--user", "user_1")
    assert result.exit_code == 0
    # inq_1's events all name user_1; `--user user_1` is every logged event of that user.
    assert records(url, real_redis) == good


def test_replaying_the_wrong_owner_moves_the_inquiry_back(env, real_config, real_redis):
    url = real_config.database_url
    user_1_and_3()
    good = records(url, real_redis)
    corrupt(url, update(Inquiry).where(Inquiry.id == "inq_1").values(user_id=user_id(url, "user_3")))
    result = replay("--user", "user_3")
    assert result.exit_code == 0
    assert records(url, real_redis) == good


def test_dry_run_reports_the_current_state_of_a_user_an_inquiry_moves_to(env, real_config, real_redis):
    url = real_config.database_url
    user_1_and_3()
    corrupt(url, update(Inquiry).where(Inquiry.id == "inq_1").values(user_id=user_id(url, "user_3")))
    result = replay("--dry-run", "--json", "--user", "user_3")
    assert result.exit_code == 0
    users = {u["reference_id"]: u for u in document(result)["users"]}
    # user_1 exists, with no inquiry: that is its `before`, and only what differs is a change.
    assert users["user_1"]["before"] is not None
    assert users["user_1"]["changes"] == {
        "status": ["none", "approved"], "inquiry_id": [None, "inq_1"], "decision": ["verify", "allow"],
        "next_action": ["create_inquiry", "none"], "verisoul_target_enrolled": [False, True],
    }  # fmt: skip


# --- 3. a code change ---


def test_dry_run_shows_what_a_changed_state_machine_would_store(env, real_config, real_redis, monkeypatch):
    url = real_config.database_url
    tie = at(8, 0, 500)
    for event in (
        inquiry_event("inq_8", "pending", at(8, 0), "user_6"),
        inquiry_event("inq_8", "declined", tie, "user_6"),
        inquiry_event("inq_8", "needs_review", tie, "user_6"),
    ):
        jobs.process_event(event)
    assert records(url, real_redis)["user_6"]["status"] == "declined"  # same millisecond: the decision ranks higher
    stored = tables(url)

    monkeypatch.setitem(state_machine.STATUS_RANK, "needs_review", 6)  # a review now outranks a decision
    result = replay("--dry-run", "--json", "--user", "user_6")
    assert result.exit_code == 0
    [user] = document(result)["users"]
    assert user["changes"] == {
        "status": ["declined", "needs_review"], "decision": ["verify", "review"],  # the 2024 block is over
        "next_action": ["create_inquiry", "wait"],
        "strikes": [1, 0], "verisoul_target_blocked_until": ["2024-01-15T00:00:00.500Z", None],
    }  # fmt: skip
    assert tables(url) == stored

    assert replay("--user", "user_6").exit_code == 0
    assert records(url, real_redis)["user_6"]["status"] == "needs_review"
    [inquiry] = tables(url)["inquiries"]
    assert (inquiry["status"], inquiry["snapshot_rank"]) == ("needs_review", 6)


# --- 4. selectors and usage ---


def test_event_ids_unknown_one_is_reported_and_the_others_replayed(env, real_config):
    events, arrival = mixed_stream()
    for event in arrival:
        jobs.process_event(event)
    wanted = [events[0]["event_id"], "evt_nope", events[-1]["event_id"]]
    result = replay(*wanted)
    assert result.exit_code == 1
    assert problems(result) == ["replay-event: evt_nope: not stored (fetch it with --from-persona)"]
    counts = {e: row.replay_count for e, row in events_of(real_config.database_url).items()}
    assert {e for e, n in counts.items() if n} == {wanted[0], wanted[2]}
    assert all(n in (0, 1) for n in counts.values())


def test_unknown_user_is_reported(env):
    result = replay("--user", "nobody")
    assert result.exit_code == 1
    assert problems(result) == ["replay-event: nobody: no such user"]


def test_since_and_until_bound_the_selected_events_inclusively(env, real_config):
    events, arrival = mixed_stream()
    for event in arrival:
        jobs.process_event(event)
    result = replay("--since", "2024-01-02", "--until", "2024-01-03T00:00:00Z", "--json")
    assert result.exit_code == 0
    inside = {e["event_id"] for e in events if "2024-01-02" <= e["created_at"] <= "2024-01-03T00:00:00.000Z"}
    assert len(inside) == 3  # act_created at the lower bound, u2_approved at the upper
    assert {e["event_id"] for e in document(result)["events"]} == inside
    counts = {e: row.replay_count for e, row in events_of(real_config.database_url).items()}
    assert {e for e, n in counts.items() if n} == inside

    only_until = replay("--until", "2024-01-01T00:00:09Z", "--json")
    assert {e["event_id"] for e in document(only_until)["events"]} == {events[0]["event_id"]}


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--dry-run"],
        ["evt_1", "--user", "user_1"],
        ["--user", "user_1", "--since", "2024-01-01"],
        ["--failed", "--reconcile"],
        ["--from-persona", "--user", "user_1"],
        ["--from-persona"],
        ["--function", "process_event", "--user", "user_1"],
        ["--error", "KeyError", "--since", "2024-01-01"],
        ["--since", "2024-02-01", "--until", "2024-01-01"],
        ["--since", "yesterday"],
        ["--until", "2024-13-01"],
        ["--bogus"],
    ],
)
def test_usage_errors_exit_2(env, real_config, args):
    before = tables(real_config.database_url)
    result = replay(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.stderr and "Error" in result.stderr
    assert tables(real_config.database_url) == before


def test_missing_configuration_exits_2(env, monkeypatch):
    monkeypatch.delenv("REDIS_URL")
    result = replay("--user", "user_1")
    assert result.exit_code == 2
    assert problems(result) == ["persona-events: configuration error: REDIS_URL is required but not set"]


def test_replay_needs_no_webhook_secret_since_it_verifies_no_webhook(env, monkeypatch):
    """Issue 11: `replay-event --user X --dry-run` failed on `PERSONA_WEBHOOK_SECRETS is required`."""
    for event in in_event_time_order(mixed_stream()[0]):
        jobs.process_event(event)
    monkeypatch.delenv("PERSONA_WEBHOOK_SECRETS")
    clear_job_caches()
    for args in (("--user", "user_1", "--dry-run"), ("--user", "user_1"), ("--failed",)):
        result = replay(*args)
        assert (result.exit_code, problems(result)) == (0, []), args


def test_replay_says_first_which_database_and_redis_it_acts_on(env, real_config):
    """Issue 11: run from another shell, it read `.env`'s database, not the running stack's, and said nothing."""
    text = replay("--user", "nobody", "--dry-run")
    assert text.stdout.splitlines()[0] == f"replay-event: {real_config.stores}"
    assert real_config.database_url.split("@")[-1] in real_config.stores
    assert document(replay("--user", "nobody", "--json"))["stores"] == real_config.stores


def test_an_unmigrated_database_is_a_clear_error_not_a_traceback(env, monkeypatch, tmp_path):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    clear_job_caches()
    result = replay("--user", "user_1", "--dry-run")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)  # an exit, not an error
    assert problems(result) == [
        "replay-event: database: no such table: users (is it reachable, and migrated: alembic upgrade head?)"
    ]


def test_a_webhook_secret_set_is_still_checked(env, monkeypatch):
    monkeypatch.setenv("PERSONA_WEBHOOK_SECRETS", " , ")
    result = replay("--user", "user_1")
    assert result.exit_code == 2
    assert problems(result) == [
        "persona-events: configuration error: PERSONA_WEBHOOK_SECRETS must list at least one secret"
    ]


def test_from_persona_without_an_api_key_exits_2(env):
    result = replay("--from-persona", "evt_1")
    assert result.exit_code == 2
    assert problems(result) == ["replay-event: configuration error: PERSONA_API_KEY is required to ask Persona's API"]


def test_a_time_beyond_utcs_range_is_a_usage_error(env):
    result = replay("--since", "9999-12-31T23:59:59-01:00")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2


def test_an_event_id_with_an_undecodable_byte_is_a_usage_error_not_a_traceback(env):
    # A shell argument that is not UTF-8 reaches Python as a lone surrogate (PEP 383): bad usage, exit 2.
    result = replay(b"evt_\xff".decode("utf-8", "surrogateescape"))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2
    assert "is not valid UTF-8" in result.stderr


# argv cannot hold NUL; lone surrogates (undecodable argv bytes) have their own test above.
ARGUMENT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    option=st.sampled_from(["--since", "--until", None]),
    values=st.lists(ARGUMENT, min_size=1, max_size=3),
)
def test_arbitrary_text_never_gives_a_traceback(env, option, values):
    args = [option, values[0]] if option else values
    result = replay(*args)
    assert result.exit_code in (0, 1, 2), (args, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
    assert "Traceback" not in result.stderr


# --- 5. the failed registry ---


class FailedJobs:
    """RQ's failed registries of the service's queues (events, syncs, notifications), counted together."""

    def __init__(self, config, connection):
        self.registries = [FailedJobRegistry(name, connection=connection) for name in config.queues]

    @property
    def count(self) -> int:
        return sum(registry.count for registry in self.registries)


@pytest.fixture
def failed(env, monkeypatch, fake_verisoul_url, real_config, real_redis) -> FailedJobs:
    broken = broken_event("evt_broken", "inq_b")
    EventQueue(real_redis, real_config).enqueue_once(broken)  # type: ignore[arg-type]  # no created_at, deliberately
    drain(real_config, real_redis)
    fail_a_sync(monkeypatch, fake_verisoul_url, real_config, real_redis)
    registries = FailedJobs(real_config, real_redis)
    assert [registry.count for registry in registries.registries] == [1, 1, 0]  # the event's, the sync's, none
    return registries


def test_an_event_id_whose_job_failed_is_said_to_be_in_the_failed_registry(failed):
    """Issue 11: `replay-event evt_broken` said "not stored (fetch it with --from-persona)" while its job sat
    in RQ's failed registry."""
    result = replay("evt_broken")
    assert result.exit_code == 1
    assert problems(result) == [
        "replay-event: evt_broken: not stored: its job failed (workers.jobs.PermanentJobError: event evt_broken: "
        "KeyError: 'created_at'); --failed --dry-run lists failed jobs, --failed requeues them"
    ]


def test_failed_dry_run_lists_without_requeueing(failed, real_config, real_redis):
    result = replay("--failed", "--dry-run")
    assert (result.exit_code, result.stderr) == (0, "")
    stores, *lines = result.stdout.splitlines()
    assert stores == f"replay-event: {real_config.stores}"
    assert [line.split()[:2] for line in lines[:2]] == [["would", "requeue"]] * 2
    assert any("PermanentJobError: event evt_broken: KeyError: 'created_at'" in line for line in lines)
    assert any("user user_s: Verisoul answered 401" in line for line in lines)
    assert lines[-1] == "2 failed jobs would be requeued"
    assert failed.count == 2
    assert Queue(real_config.events_queue, connection=real_redis).count == 0


def test_failed_filters_by_function_and_error(failed):
    by_function = document(replay("--failed", "--dry-run", "--json", "--function", "process_event"))
    assert [j["function"] for j in by_function["jobs"]] == ["workers.jobs.process_event"]
    by_full_name = document(replay("--failed", "--dry-run", "--json", "--function", "workers.jobs.sync_verisoul"))
    assert [j["function"] for j in by_full_name["jobs"]] == ["workers.jobs.sync_verisoul"]
    by_error = document(replay("--failed", "--dry-run", "--json", "--error", "Verisoul answered 401"))
    assert [j["function"] for j in by_error["jobs"]] == ["workers.jobs.sync_verisoul"]
    assert document(replay("--failed", "--dry-run", "--json", "--error", "no such text"))["jobs"] == []
    both = replay("--failed", "--dry-run", "--json", "--function", "process_event", "--error", "KeyError")
    assert [j["job_id"] for j in document(both)["jobs"]] == ["e_evt_broken"]
    assert failed.count == 2


def test_failed_jobs_show_when_they_failed_and_since_until_select_by_it(failed):
    """Issue 11: `--failed` had no time filter and printed no times."""
    listed = replay("--failed", "--dry-run")
    assert all(re.search(r" failed \d{4}-\d\d-\d\dT[\d:.]+Z ", line) for line in listed.stdout.splitlines()[1:-1])
    now = datetime.now(UTC)
    recent = document(replay("--failed", "--dry-run", "--json", "--since", (now - timedelta(hours=1)).isoformat()))
    assert len(recent["jobs"]) == 2
    later = document(replay("--failed", "--dry-run", "--json", "--since", (now + timedelta(hours=1)).isoformat()))
    assert later["jobs"] == []
    earlier = document(replay("--failed", "--dry-run", "--json", "--until", (now - timedelta(hours=1)).isoformat()))
    assert earlier["jobs"] == []
    assert failed.count == 2


def test_failed_requeues_into_the_queue(failed, real_config, real_redis):
    queue = Queue(real_config.events_queue, connection=real_redis)
    result = replay("--failed", "--json", "--function", "process_event")
    assert (result.exit_code, result.stderr) == (0, "")
    report = document(result)
    failed_at = report["jobs"][0].pop("failed_at")
    assert abs(datetime.now(UTC) - datetime.fromisoformat(failed_at)) < timedelta(minutes=5)
    assert report == {
        "stores": real_config.stores,
        "dry_run": False,
        "jobs": [{"job_id": "e_evt_broken", "function": "workers.jobs.process_event",
                  "description": "process_event evt_broken inquiry.approved",
                  "error": "workers.jobs.PermanentJobError: event evt_broken: KeyError: 'created_at'"}],
        "failed": 0,
    }  # fmt: skip
    assert queue.job_ids == ["e_evt_broken"]
    assert failed.count == 1
    rest = replay("--failed")
    assert rest.exit_code == 0 and rest.stdout.splitlines()[-1] == "1 failed jobs requeued"
    assert failed.count == 0 and len(queue.job_ids) == 1
    assert len(Queue(real_config.sync_queue, connection=real_redis).job_ids) == 1


def test_failed_with_redis_down_is_one_line_not_a_traceback(env, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    result = replay("--failed", "--dry-run")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (1, 2)
    assert len(problems(result)) == 1


# --- 6. --from-persona ---


@pytest.fixture
def fake_persona(env, monkeypatch, fake_persona_url) -> FakePersonaControl:
    return use_fake_persona(monkeypatch, fake_persona_url)


def webhook_document(event: QueuedEvent) -> dict:
    """The full Persona webhook body (kebab case, personal data included) a minimised test event stands for."""
    attributes: dict[str, object] = {"status": event["status"], **PERSONAL_ATTRIBUTES}
    relationships = {}
    if event["object_type"] == "inquiry":
        attributes["reference-id"] = event["reference_id"]
        attributes["created-at"] = event["timestamps"]["created_at"]
        relationships["inquiry-template"] = {"data": {"type": "inquiry-template", "id": event["template_id"]}}
    else:
        attributes["checks"] = [
            {"name": c["name"], "status": c["status"], "reasons": [], "requirement": "required"}
            for c in event["checks"]
        ]
        attributes["identification-number"] = "I1234562"
        relationships["inquiry"] = {"data": {"type": "inquiry", "id": event["inquiry_id"]}}
    included = []
    if event.get("account_id"):
        relationships["account"] = {"data": {"type": "account", "id": event["account_id"]}}
        account = {"reference-id": event.get("account_reference_id"), "name-first": "Alexander"}
        included.append({"type": "account", "id": event["account_id"], "attributes": account})
    obj = {
        "type": event["object_type"],
        "id": event["object_id"],
        "attributes": attributes,
        "relationships": relationships,
    }
    body = {"name": event["name"], "created-at": event["created_at"], "payload": {"data": obj, "included": included}}
    return {"data": {"type": "event", "id": event["event_id"], "attributes": body}}


def persona_documents() -> list[dict]:
    """The mixed stream as Persona's webhook bodies, plus the real-shaped fixtures (a sandbox approval and
    a verification of the same inquiry, and a docs completion)."""
    documents = [webhook_document(event) for event in mixed_stream()[0]]
    fixtures = [load_fixture("sandbox_inquiry_approved.json", "user_sb"), load_fixture("docs_verification_passed.json"),
                load_fixture("docs_inquiry_completed.json")]  # fmt: skip
    return documents + fixtures


def test_webhook_documents_minimise_to_the_test_events():
    def meaning(event: dict) -> dict:
        return {k: v for k, v in event.items() if v not in (None, [], {}) and k not in ("body_sha256", "received_at")}

    for event in mixed_stream()[0]:
        assert meaning(event_from_document(webhook_document(event), NOW)) == meaning(event)


def test_from_persona_rebuilds_what_live_processing_built(fake_persona, real_config, real_redis, tmp_path, monkeypatch):
    documents = persona_documents()
    fake_persona.store_events(*documents)
    live_url = f"sqlite:///{tmp_path / 'live.db'}"
    shuffled = [event_from_document(d, NOW) for d in documents]
    random.Random(5).shuffle(shuffled)
    process_elsewhere(monkeypatch, live_url, shuffled)
    live = records(live_url, real_redis)

    result = replay("--from-persona", "--since", "2000-01-01", "--json")
    assert (result.exit_code, result.stderr) == (0, "")
    assert len(document(result)["events"]) == len(documents)
    rebuilt = records(real_config.database_url, real_redis)
    assert sorted(rebuilt) == sorted(live) == ["abc-123", "user_1", "user_2", "user_3", "user_4", "user_5", "user_sb"]
    assert without_history(rebuilt) == without_history(live)
    assert history_entries(rebuilt) == history_entries(live)
    stored = events_of(real_config.database_url)
    assert sorted(stored) == sorted(d["data"]["id"] for d in documents)
    assert all(row.replay_count == 1 and as_utc(row.received_at) == NOW for row in stored.values())


def payload_leaks(rows, documents) -> set[str]:
    """Personal values of `documents` found among the stored payloads' values, or inside their text."""
    forbidden = {v for d in documents for v in personal_values(d) if any(c.isalnum() for c in v)}
    leaves: set[str] = set()

    def walk(value) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif value is not None:
            leaves.add(str(value))

    texts = []
    for row in rows:
        walk(row.payload)
        texts.append(json.dumps(row.payload))
    text = "\n".join(texts)
    return (forbidden & leaves) | {v for v in forbidden if len(v) >= 6 and v in text}


def test_events_fetched_from_persona_hold_no_personal_values(fake_persona, real_config):
    documents = persona_documents()
    fake_persona.store_events(*documents)
    assert replay("--from-persona", "--since", "2000-01-01").exit_code == 0
    rows = list(events_of(real_config.database_url).values())
    assert len(rows) == len(documents)
    assert {"1977-07-17", "Alexander", "SAMPLE"} <= {v for d in documents for v in personal_values(d)}
    assert payload_leaks(rows, documents) == set()


def test_from_persona_event_ids_and_one_persona_does_not_know(fake_persona, real_config, real_redis):
    events = mixed_stream()[0]
    u1 = [e for e in events if e["event_id"] and (e.get("reference_id") == "user_1" or e.get("inquiry_id") == "inq_1")]
    fake_persona.store_events(*[webhook_document(e) for e in u1])
    result = replay("--from-persona", *[e["event_id"] for e in u1], "evt_unknown")
    assert result.exit_code == 1
    assert problems(result) == ["replay-event: evt_unknown: not found at Persona (it keeps events for 30 days)"]
    assert sorted(events_of(real_config.database_url)) == sorted(e["event_id"] for e in u1)
    user = records(real_config.database_url, real_redis)["user_1"]
    assert (user["status"], user["decision"], user["verifications"][0]["status"]) == ("approved", "allow", "passed")


def test_from_persona_dry_run_reports_only_what_changes_for_an_existing_user(fake_persona, real_config, real_redis):
    """A lost webhook of a known user's new inquiry: the dry run's `before` is the user as stored."""
    declined = inquiry_event("inq_1", "declined", at(1, 0), "user_1")
    jobs.process_event(declined)
    later = inquiry_event("inq_9", "approved", at(20, 0), "user_1")
    later["timestamps"] = {"created_at": "2024-01-20T00:00:00.000Z"}
    fake_persona.store_events(webhook_document(later))
    result = replay("--from-persona", later["event_id"], "--dry-run", "--json")
    assert result.exit_code == 0
    [user] = document(result)["users"]
    assert user["before"] is not None and user["before"]["status"] == "declined"
    assert user["changes"] == {
        "status": ["declined", "approved"], "inquiry_id": ["inq_1", "inq_9"], "decision": ["verify", "allow"],
        "next_action": ["create_inquiry", "none"], "verisoul_target_enrolled": [False, True],
    }  # fmt: skip
    assert list(events_of(real_config.database_url)) == [declined["event_id"]]


def test_persona_down_is_one_line_and_nothing_written(fake_persona, real_config, monkeypatch):
    fake_persona.store_events(*[webhook_document(e) for e in mixed_stream()[0]])
    fake_persona.configure(fail_next=[503] * persona.ATTEMPTS)
    before = tables(real_config.database_url)
    result = replay("--from-persona", "--since", "2000-01-01")
    assert result.exit_code == 1
    [line] = problems(result)
    assert line.startswith("replay-event: persona: PersonaUnavailable: ") and "HTTP 503" in line
    assert tables(real_config.database_url) == before

    monkeypatch.setenv("PERSONA_API_URL", "http://127.0.0.1:1")
    closed = replay("--from-persona", "evt_1")
    assert closed.exit_code == 1
    [line] = problems(closed)
    assert line.startswith("replay-event: persona: PersonaUnavailable: ") and "ConnectionError" in line
    assert tables(real_config.database_url) == before
