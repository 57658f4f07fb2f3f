"""Events → desired Verisoul state → sync_verisoul → the fake Verisoul over real HTTP, both flavors."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import requests
from rq import Queue, SimpleWorker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry
from werkzeug.serving import make_server

from app import create_app
from scripts.fake_verisoul import create_fake_app
from store.sync_state import NOT_CONFIGURED
from tests.helpers.events import inquiry_event
from workers import jobs

pytestmark = pytest.mark.integration

TOKEN = "admin-token"
DAY = timedelta(days=1)


@pytest.fixture(scope="module")
def fake_verisoul():
    server = make_server("127.0.0.1", 0, create_fake_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(params=["account", "lists"])
def verisoul(request, fake_verisoul, worker_env, monkeypatch):
    """Workers pointed at the fake, in one flavor; returns a helper to read and steer the fake."""
    base = fake_verisoul + ("/lists" if request.param == "lists" else "")
    monkeypatch.setenv("VERISOUL_API_URL", base)
    monkeypatch.setenv("VERISOUL_API_KEY", "fake-verisoul-key")
    monkeypatch.setenv("VERISOUL_API_FLAVOR", request.param)
    requests.post(f"{fake_verisoul}/_control/reset", timeout=5)
    _clear_caches()
    yield Fake(fake_verisoul, request.param)
    _clear_caches()


def _clear_caches():
    for cached in (jobs.syncer, jobs.redis, jobs.database):
        cached.cache_clear()


class Fake:
    """The fake's control API; `writes` names calls the way this test reads them: enroll, block, unblock."""

    ENROLL = {"account": "enroll", "lists": "update"}

    def __init__(self, url, flavor):
        self.url, self.flavor = url, flavor

    def writes(self, account_id):
        calls = requests.get(f"{self.url}/_control/calls", timeout=5).json()
        names = {self.ENROLL[self.flavor]: "enroll", "block": "block", "unblock": "unblock"}
        return [
            names[c["action"]]
            for c in calls
            if c["status"] < 400 and c["account_id"] == account_id and c["action"] in names
        ]

    def configure(self, **switches):
        requests.post(f"{self.url}/_control/config", json=switches, timeout=5).raise_for_status()

    def link(self, account_id, count):
        body = {"numAccounts": count} if self.flavor == "account" else {"accounts_linked": count}
        requests.post(f"{self.url}/_control/accounts/{account_id}", json=body, timeout=5).raise_for_status()


@pytest.fixture
def clock(monkeypatch):
    """The workers' clock, settable: blocks expire without waiting."""
    current = {"now": datetime.now(UTC).replace(microsecond=0)}  # event times have ms precision
    monkeypatch.setattr(jobs, "now", lambda: current["now"])
    return current


@pytest.fixture
def record(real_config, real_redis):
    client = create_app(replace(real_config, admin_api_token=TOKEN), redis=real_redis).test_client()
    return lambda key: client.get(f"/users/{key}", headers={"Authorization": f"Bearer {TOKEN}"}).json


def drain(real_config, real_redis):
    """Run queued jobs (and scheduled ones already due) in this process."""
    queues = [Queue(name, connection=real_redis) for name in real_config.queues]
    SimpleWorker(queues, connection=real_redis).work(burst=True, with_scheduler=True)


def at(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def deliver(real_config, real_redis, *events):
    for event in events:
        jobs.process_event(event)
    drain(real_config, real_redis)


def test_the_record_says_why_verisoul_is_not_in_step(worker_env, clock, record, real_config, real_redis, monkeypatch):
    """Issue 11: why a sync failed was in SQL only (users.verisoul_error)."""
    monkeypatch.setenv("VERISOUL_API_URL", "")
    _clear_caches()
    deliver(real_config, real_redis, inquiry_event("inq_1", "approved", at(clock["now"] - DAY), "user_1"))
    state = record("user_1")["verisoul"]
    assert (state["synced"], state["error"], state["synced_at"]) == (False, NOT_CONFIGURED, None)


def test_verified_user_is_enrolled_once(verisoul, clock, record, real_config, real_redis):
    approved = inquiry_event("inq_1", "approved", at(clock["now"] - DAY), "user_1")
    deliver(real_config, real_redis, approved)
    assert verisoul.writes("user_1") == ["enroll"]
    assert record("user_1")["verisoul"] == {
        "account_id": "user_1", "enrolled": True, "blocked": False, "blocked_until": None,
        "permanent_block": False, "duplicate_account": False, "synced": True,
        "error": None, "synced_at": at(clock["now"]),
    }  # fmt: skip
    # Another sync, a redelivery and a newer snapshot of the same state call Verisoul no more.
    assert jobs.sync_verisoul("user_1") == "in_sync"
    deliver(real_config, real_redis, approved, inquiry_event("inq_1", "approved", at(clock["now"]), "user_1"))
    assert verisoul.writes("user_1") == ["enroll"]


def test_linked_account_is_not_enrolled_and_goes_to_review(verisoul, clock, record, real_config, real_redis):
    verisoul.link("user_2", 2)
    deliver(real_config, real_redis, inquiry_event("inq_2", "approved", at(clock["now"] - DAY), "user_2"))
    user = record("user_2")
    assert verisoul.writes("user_2") == []
    assert (user["verisoul"]["duplicate_account"], user["decision"], user["next_action"]) == (True, "review", "wait")


def test_decline_blocks_for_a_week_from_the_event_and_unblocks_at_expiry(
    verisoul, clock, record, real_config, real_redis
):
    declined_at = clock["now"] - DAY
    deliver(real_config, real_redis, inquiry_event("inq_3", "declined", at(declined_at), "user_3"))
    assert verisoul.writes("user_3") == ["block"]
    user = record("user_3")
    assert user["verisoul"]["blocked_until"] == at(declined_at + 7 * DAY)
    scheduled = ScheduledJobRegistry(real_config.sync_queue, connection=real_redis)
    assert any(job_id.startswith("unblock-") for job_id in scheduled.get_job_ids())
    clock["now"] = declined_at + 7 * DAY - timedelta(microseconds=1)
    assert jobs.sync_verisoul("user_3") == "in_sync"
    clock["now"] = declined_at + 7 * DAY
    assert jobs.sync_verisoul("user_3") == "unblock"
    assert verisoul.writes("user_3") == ["block", "unblock"]
    assert record("user_3")["verisoul"]["blocked"] is False


def test_replaying_an_expired_decline_never_blocks_again(verisoul, clock, real_config, real_redis):
    deliver(real_config, real_redis, inquiry_event("inq_4", "declined", at(clock["now"] - 8 * DAY), "user_4"))
    assert verisoul.writes("user_4") == []


def test_reviewer_reversals_converge(verisoul, clock, record, real_config, real_redis):
    start = clock["now"] - DAY
    deliver(real_config, real_redis, inquiry_event("inq_5", "declined", at(start), "user_5"))
    deliver(real_config, real_redis, inquiry_event("inq_5", "approved", at(start + timedelta(hours=1)), "user_5"))
    assert verisoul.writes("user_5") == ["block", "unblock", "enroll"]
    deliver(real_config, real_redis, inquiry_event("inq_5", "declined", at(start + timedelta(hours=2)), "user_5"))
    assert verisoul.writes("user_5") == ["block", "unblock", "enroll", "block"]
    assert record("user_5")["verisoul"]["blocked_until"] == at(start + timedelta(hours=2) + 7 * DAY)


def test_sweep_lifts_an_expired_block_whose_unblock_job_was_lost(verisoul, clock, real_config, real_redis):
    deliver(real_config, real_redis, inquiry_event("inq_6", "declined", at(clock["now"] - DAY), "user_6"))
    scheduled = ScheduledJobRegistry(real_config.sync_queue, connection=real_redis)
    for job_id in scheduled.get_job_ids():
        scheduled.remove(job_id, delete_job=True)
    clock["now"] += 7 * DAY
    assert jobs.sweep_verisoul() == 1
    drain(real_config, real_redis)
    assert verisoul.writes("user_6") == ["block", "unblock"]


def test_a_refusal_fails_the_job_with_verisouls_message(verisoul, clock, record, real_config, real_redis):
    verisoul.configure(auto_create=False)
    deliver(real_config, real_redis, inquiry_event("inq_7", "approved", at(clock["now"] - DAY), "user_7"))
    [job_id] = FailedJobRegistry(real_config.sync_queue, connection=real_redis).get_job_ids()
    job = Queue(real_config.sync_queue, connection=real_redis).fetch_job(job_id)
    assert "Account not found" in job.latest_result().exc_string
    user = record("user_7")
    assert user["verisoul"]["synced"] is False and user["verisoul"]["enrolled"] is False


def test_without_verisoul_the_sync_is_skipped_and_the_record_says_so(
    worker_env, monkeypatch, clock, record, real_config, real_redis
):
    monkeypatch.delenv("VERISOUL_API_URL", raising=False)
    _clear_caches()
    deliver(real_config, real_redis, inquiry_event("inq_8", "approved", at(clock["now"]), "user_8"))
    user = record("user_8")
    assert (user["decision"], user["verisoul"]["synced"], user["verisoul"]["enrolled"]) == ("allow", False, False)
    _clear_caches()


def test_a_record_without_reference_id_is_synced_only_once_linked(verisoul, clock, record, real_config, real_redis):
    deliver(real_config, real_redis, inquiry_event("inq_9", "approved", at(clock["now"] - DAY), account_id="act_9"))
    assert verisoul.writes("act_9") == []
    assert record("act_9")["verisoul"]["synced"] is False
    deliver(real_config, real_redis, inquiry_event("inq_9", "approved", at(clock["now"]), "user_9", "act_9"))
    assert (verisoul.writes("act_9"), verisoul.writes("user_9")) == ([], ["enroll"])
    assert record("user_9")["verisoul"]["synced"] is True


def test_without_verisoul_no_sync_job_is_queued_and_the_sweep_syncs_once_it_is_configured(
    verisoul, monkeypatch, clock, record, real_config, real_redis
):
    monkeypatch.delenv("VERISOUL_API_URL")
    _clear_caches()
    for n, status in enumerate(["created", "pending", "completed", "approved"]):
        jobs.process_event(
            inquiry_event("inq_10", status, at(clock["now"] - DAY + n * timedelta(seconds=1)), "user_10")
        )
    assert Queue(real_config.sync_queue, connection=real_redis).count == 0
    assert record("user_10")["verisoul"]["synced"] is False
    monkeypatch.setenv("VERISOUL_API_URL", verisoul.url + ("/lists" if verisoul.flavor == "lists" else ""))
    _clear_caches()
    assert jobs.sweep_verisoul() == 1
    drain(real_config, real_redis)
    assert verisoul.writes("user_10") == ["enroll"]
    assert record("user_10")["verisoul"]["synced"] is True


def test_a_burst_of_events_for_one_user_leaves_one_sync_queued(verisoul, clock, real_config, real_redis):
    for inquiry in ("inq_11a", "inq_11b"):
        for n, status in enumerate(["created", "pending", "completed", "approved"]):
            jobs.process_event(
                inquiry_event(inquiry, status, at(clock["now"] - DAY + n * timedelta(seconds=1)), "user_11")
            )
    assert [job.args for job in Queue(real_config.sync_queue, connection=real_redis).jobs] == [("user_11",)]
