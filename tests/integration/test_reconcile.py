"""Reconciliation (workers/reconcile.py) through `replay-event --reconcile` and the scheduled
`reconcile_inquiries` job, against the fake Persona, on SQLite and PostgreSQL with real Redis."""

from __future__ import annotations

from datetime import timedelta

import pytest
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry
from sqlalchemy import select

from domain.times import as_utc
from store.db import Database
from store.models import Inquiry
from store.queue import EventQueue
from tests.helpers.events import broken_event, inquiry_event
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
from tests.payloads import PERSONAL_ATTRIBUTES
from workers import jobs

pytestmark = pytest.mark.integration

INQUIRY_PATH = "/api/v1/inquiries/"


@pytest.fixture(autouse=True)
def cli_databases(monkeypatch):
    track_cli_databases(monkeypatch)


@pytest.fixture
def clock(monkeypatch) -> dict:
    return set_clock(monkeypatch)


@pytest.fixture
def fake(monkeypatch, worker_env, real_redis, clock, fake_persona_url):
    """The CLI and the jobs pointed at the fake Persona, the clock at NOW (2024-09-01 12:00 UTC)."""
    cli_environment(monkeypatch, worker_env)
    yield use_fake_persona(monkeypatch, fake_persona_url)
    clear_job_caches()


def inquiry_document(inquiry_id: str, status: str, reference_id: str, **times: str) -> dict:
    """Persona's answer to GET /api/v1/inquiries/{id}: kebab case, personal data included."""
    attributes = {
        "status": status,
        "reference-id": reference_id,
        "created-at": "2024-01-01T00:00:00.000Z",
        **PERSONAL_ATTRIBUTES,
    }
    attributes.update({name.replace("_", "-"): value for name, value in times.items()})
    template = {"data": {"type": "inquiry-template", "id": "itmpl_1"}}
    return {"data": {"type": "inquiry", "id": inquiry_id, "attributes": attributes, "relationships": {"inquiry-template": template}},
            "included": []}  # fmt: skip


def pending_since_august(inquiry_id: str, reference_id: str) -> None:
    """An inquiry started a month before NOW whose later webhooks never came."""
    jobs.process_event(inquiry_event(inquiry_id, "created", "2024-08-01T00:00:00.250Z", reference_id))
    jobs.process_event(inquiry_event(inquiry_id, "pending", "2024-08-01T00:05:00.250Z", reference_id))


EXPIRED_AT = "2024-08-02T00:05:00.000Z"
# Persona's attribute times are whole seconds; the snapshot is placed at the end of that second.
SNAPSHOT_AT = "2024-08-02T00:05:00.999Z"


def expired_at_persona(fake, inquiry_id: str = "inq_r1", reference_id: str = "user_r1") -> None:
    pending_since_august(inquiry_id, reference_id)
    fake.store_inquiries(inquiry_document(inquiry_id, "expired", reference_id, started_at="2024-08-01T00:05:00.000Z",
                                           expired_at=EXPIRED_AT))  # fmt: skip


def asked(fake) -> list[str]:
    """The inquiries the fake Persona was asked about, in order."""
    return [call["path"].removeprefix(INQUIRY_PATH) for call in fake.calls() if call["path"].startswith(INQUIRY_PATH)]


def checked_at(database_url: str, inquiry_id: str):
    database = Database(database_url)
    try:
        with database.sessions() as session:
            return as_utc(session.scalar(select(Inquiry.checked_at).where(Inquiry.id == inquiry_id)))
    finally:
        database.dispose()


def reconciled_rows(database_url: str) -> list:
    return [row for row in events_of(database_url).values() if row.name == "inquiry.reconciled"]


def fail_event_job(real_config, real_redis, event: dict[str, object]) -> None:
    """process_event fails for good on `event` (no created-at): the job sits in RQ's failed registry."""
    EventQueue(real_redis, real_config).enqueue_once(event)  # type: ignore[arg-type]  # no created_at, deliberately
    drain(real_config, real_redis)
    assert FailedJobRegistry(real_config.events_queue, connection=real_redis).count == 1


# --- --reconcile ---


def test_reconcile_applies_the_expiry_persona_reports(fake, real_config, real_redis):
    url = real_config.database_url
    expired_at_persona(fake)
    assert records(url, real_redis)["user_r1"]["status"] == "pending"

    result = replay("--reconcile")
    assert (result.exit_code, result.stderr) == (0, "")
    assert "1 inquiries fetched from Persona" in result.stdout
    assert "user_r1: " in result.stdout and "status pending → expired" in result.stdout
    user = records(url, real_redis)["user_r1"]
    assert (user["status"], user["decision"], user["next_action"]) == ("expired", "verify", "create_inquiry")
    [row] = reconciled_rows(url)
    assert (row.event_id, row.outcome, row.inquiry_id) == (f"rec_inq_r1_expired_{SNAPSHOT_AT}", "reconciled", "inq_r1")
    assert row.payload["status"] == "expired" and row.replayed_by == "replay-event --reconcile"
    entry = user["history"][-1]
    assert (entry["event_id"], entry["from"], entry["to"], entry["at"]) == (
        row.event_id,
        "pending",
        "expired",
        SNAPSHOT_AT,
    )
    assert checked_at(url, "inq_r1") == NOW
    assert asked(fake) == ["inq_r1"]


def test_the_history_says_the_inquiry_was_reconciled(fake, real_config, real_redis):
    expired_at_persona(fake)
    assert replay("--reconcile").exit_code == 0
    [row] = reconciled_rows(real_config.database_url)
    [entry] = [
        h for h in records(real_config.database_url, real_redis)["user_r1"]["history"] if h["event_id"] == row.event_id
    ]
    # The events table says `reconciled`; the user's history, which the host application reads, should agree.
    assert entry["outcome"] == row.outcome == "reconciled"


def test_a_second_run_asks_persona_nothing_and_changes_nothing(fake, clock, real_config):
    expired_at_persona(fake)
    assert replay("--reconcile").exit_code == 0
    after_first, calls = tables(real_config.database_url), asked(fake)
    clock["now"] = NOW + timedelta(hours=2)
    second = replay("--reconcile")
    assert (second.exit_code, second.stderr) == (0, "")
    assert "0 inquiries fetched from Persona" in second.stdout
    assert asked(fake) == calls == ["inq_r1"]
    assert tables(real_config.database_url) == after_first


def test_an_inquiry_persona_still_reports_pending_is_left_as_it_is_and_asked_once_a_window(
    fake, clock, real_config, real_redis
):
    url = real_config.database_url
    pending_since_august("inq_p", "user_p")
    fake.store_inquiries(inquiry_document("inq_p", "pending", "user_p", started_at="2024-08-01T00:05:00.000Z"))
    before = records(url, real_redis)

    result = replay("--reconcile", "--json")
    assert result.exit_code == 0
    assert without_history(records(url, real_redis)) == without_history(before)
    assert document(result)["users"] == []  # the same status again is not applied, so no user is touched
    assert reconciled_rows(url) == []
    assert checked_at(url, "inq_p") == NOW
    assert asked(fake) == ["inq_p"]

    window = real_config.reconcile_after
    clock["now"] = NOW + window - timedelta(minutes=1)
    assert replay("--reconcile").exit_code == 0
    assert asked(fake) == ["inq_p"]  # checked within the window: not asked again
    clock["now"] = NOW + window + timedelta(minutes=1)
    assert replay("--reconcile").exit_code == 0
    assert asked(fake) == ["inq_p", "inq_p"]
    assert checked_at(url, "inq_p") == NOW + window + timedelta(minutes=1)


def test_a_snapshot_that_changes_nothing_is_not_counted_as_reconciled(fake, real_config, real_redis):
    """Persona still says pending, as of its started-at, a fraction of a second before the webhook's event."""
    url = real_config.database_url
    pending_since_august("inq_p", "user_p")
    fake.store_inquiries(inquiry_document("inq_p", "pending", "user_p", started_at="2024-08-01T00:05:00.000Z"))
    before = records(url, real_redis)["user_p"]
    assert jobs.reconcile_inquiries() == 0  # the job's count of inquiries reconciliation changed
    assert reconciled_rows(url) == []  # the record already says pending: nothing is logged or applied
    assert records(url, real_redis)["user_p"] == before


def test_an_inquiry_checked_recently_or_opened_recently_is_not_a_candidate(fake, clock, real_config, real_redis):
    jobs.process_event(inquiry_event("inq_new", "pending", "2024-09-01T00:00:00.000Z", "user_new"))
    result = replay("--reconcile")
    assert result.exit_code == 0 and "0 inquiries fetched from Persona" in result.stdout
    assert asked(fake) == []


def test_the_inquiry_of_a_failed_process_event_job_is_a_candidate(fake, real_config, real_redis):
    fail_event_job(real_config, real_redis, broken_event("evt_lost", "inq_f"))
    fake.store_inquiries(inquiry_document("inq_f", "approved", "user_f", completed_at="2024-08-03T00:00:00.000Z",
                                           decisioned_at="2024-08-03T00:01:00.000Z"))  # fmt: skip
    result = replay("--reconcile", "--json")
    assert (result.exit_code, result.stderr) == (0, "")
    assert asked(fake) == ["inq_f"]
    user = records(real_config.database_url, real_redis)["user_f"]
    assert (user["status"], user["decision"], user["inquiry_id"]) == ("approved", "allow", "inq_f")
    assert [row.outcome for row in reconciled_rows(real_config.database_url)] == ["reconciled"]


def test_the_inquiry_of_a_failed_job_is_not_asked_about_again_within_the_window(fake, clock, real_config, real_redis):
    fail_event_job(real_config, real_redis, broken_event("evt_lost", "inq_f"))
    fake.store_inquiries(inquiry_document("inq_f", "approved", "user_f", decisioned_at="2024-08-03T00:01:00.000Z"))
    assert replay("--reconcile").exit_code == 0
    assert checked_at(real_config.database_url, "inq_f") == NOW
    clock["now"] = NOW + timedelta(hours=1)  # the scheduled job's next pass
    assert replay("--reconcile").exit_code == 0
    # checked_at says Persona was asked an hour ago; the job stays in the failed registry for 30 days.
    assert asked(fake) == ["inq_f"]


def test_the_latest_inquiry_of_a_user_whose_sync_failed_is_a_candidate(
    fake, monkeypatch, fake_verisoul_url, real_config, real_redis
):
    older = inquiry_event("inq_s0", "declined", "2023-12-01T00:00:00.000Z", "user_s")
    older["timestamps"] = {"created_at": "2023-12-01T00:00:00.000Z"}
    jobs.process_event(older)
    fail_a_sync(monkeypatch, fake_verisoul_url, real_config, real_redis)  # user_s, approved inq_s: Verisoul said 401
    fake.store_inquiries(inquiry_document("inq_s", "approved", "user_s", decisioned_at="2024-01-09T00:00:00.000Z"))
    before = records(real_config.database_url, real_redis)["user_s"]
    result = replay("--reconcile")
    assert (result.exit_code, result.stderr) == (0, "")
    assert asked(fake) == ["inq_s"]
    assert (
        without_history(records(real_config.database_url, real_redis))["user_s"] == without_history({"u": before})["u"]
    )


def test_a_decision_made_in_the_same_second_as_the_completion_is_reconciled(fake, real_config, real_redis):
    """Persona's attribute times have whole seconds; its events' created-at have milliseconds."""
    jobs.process_event(inquiry_event("inq_d", "completed", "2024-08-01T00:10:00.400Z", "user_d"))
    lost = broken_event("evt_lost_decline", "inq_d")
    lost.update(name="inquiry.declined", status="declined", reference_id="user_d")
    fail_event_job(real_config, real_redis, lost)
    fake.store_inquiries(inquiry_document("inq_d", "declined", "user_d", completed_at="2024-08-01T00:10:00.000Z",
                                           decisioned_at="2024-08-01T00:10:00.000Z"))  # fmt: skip
    assert replay("--reconcile").exit_code == 0
    assert asked(fake) == ["inq_d"]
    user = records(real_config.database_url, real_redis)["user_d"]
    assert (user["status"], user["decision"], user["strikes"]) == (
        "declined",
        "verify",
        1,
    )  # its block of 2024 has ended (§5 as revised)


def test_reconcile_dry_run_shows_the_change_and_writes_nothing(fake, real_config, real_redis):
    url = real_config.database_url
    expired_at_persona(fake)
    before = tables(url)
    result = replay("--reconcile", "--dry-run", "--json")
    assert (result.exit_code, result.stderr) == (0, "")
    report = document(result)
    assert report["dry_run"] is True and report["checked"] == ["inq_r1"] and report["not_fetched"] == {}
    [user] = report["users"]
    assert user["reference_id"] == "user_r1"
    assert user["changes"] == {
        "status": ["pending", "expired"], "decision": ["resume", "verify"], "next_action": ["resume_inquiry", "create_inquiry"],
    }  # fmt: skip
    assert [e["outcome"] for e in report["events"]] == ["reconciled"]
    assert tables(url) == before
    assert checked_at(url, "inq_r1") is None


def test_persona_unavailable_for_an_inquiry_is_one_line_and_nothing_written(fake, real_config):
    url = real_config.database_url
    expired_at_persona(fake)
    fake.configure(fail_next=[503] * 5)
    before = tables(url)
    result = replay("--reconcile")
    assert result.exit_code == 1
    [line] = problems(result)
    assert line.startswith("replay-event: inq_r1: not fetched: PersonaUnavailable: ") and "HTTP 503" in line
    assert tables(url) == before


# --- the scheduled job ---


def test_the_scheduled_job_reconciles_and_asks_once_per_window(fake, real_config, real_redis):
    url = real_config.database_url
    expired_at_persona(fake)
    assert jobs.reconcile_inquiries() == 1
    user = records(url, real_redis)["user_r1"]
    assert (user["status"], user["decision"]) == ("expired", "verify")
    [row] = reconciled_rows(url)
    assert (row.outcome, row.replayed_by) == ("reconciled", "reconcile (scheduled)")
    assert checked_at(url, "inq_r1") == NOW
    # A second pass within the hour asks nothing; the job plans no successor (the scheduler process does).
    assert jobs.reconcile_inquiries() == 0
    assert asked(fake) == ["inq_r1"]
    assert ScheduledJobRegistry(queue=Queue(real_config.events_queue, connection=real_redis)).count == 0


def test_the_scheduled_job_does_nothing_without_a_persona_api_key(fake, monkeypatch, real_config, real_redis):
    expired_at_persona(fake)
    monkeypatch.delenv("PERSONA_API_KEY")
    before = tables(real_config.database_url)
    assert jobs.reconcile_inquiries() == 0
    assert ScheduledJobRegistry(queue=Queue(real_config.events_queue, connection=real_redis)).count == 0
    assert fake.calls() == []
    assert tables(real_config.database_url) == before


def test_reconcile_without_a_persona_api_key_exits_2(fake, monkeypatch):
    monkeypatch.delenv("PERSONA_API_KEY")
    result = replay("--reconcile")
    assert result.exit_code == 2
    assert problems(result) == ["replay-event: configuration error: PERSONA_API_KEY is required to ask Persona's API"]
