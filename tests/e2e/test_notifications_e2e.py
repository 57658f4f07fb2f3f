"""The host's `user.updated` notifications end to end (issue 14, docs/contracts.md §9): gunicorn, an RQ worker and
the scheduler as the Procfile runs them, signed Persona webhooks posted over real HTTP, and the fake host
(scripts/fake_host.py) as a process of its own, verifying every signature with the `standardwebhooks` package.

- A user's lifecycle (created, pending, completed, declined, an operator's lift of the block, a reviewer's
  approval) reaches a host that refuses ~30% of deliveries and is down for a while in the middle as exactly one
  notification per step, sequence 1..n, each step's summary as §5 says. Delivery is at least once: the same
  `webhook-id` may arrive again, so the host's view is deduplicated by it first, as a host would.
- No notification is lost between its commit and its delivery: not when the worker is SIGKILLed while the host is
  down, nor when the delivery job itself is lost after the commit (the scheduler's minute sweep queues it).

One database per run, PostgreSQL when TEST_DATABASE_URL is set and SQLite otherwise: the second test waits for a
sweep (up to a minute and a half), and twice over both databases would be too long for the suite.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import requests
from redis import Redis
from rq import Queue
from sqlalchemy import select

from domain.times import iso_millis
from scripts.fake_host import DEFAULT_SECRET
from store.db import Database, migrate
from store.models import Outbox
from store.notify_queue import DELIVER_NOTIFICATION, PENDING_PREFIX
from tests.e2e.stream import EVENT_NAME
from tests.helpers.databases import truncate
from tests.helpers.fake_vendor import FakeServer
from tests.helpers.stack import Stack
from tests.helpers.waiting import wait_until
from tests.payloads import WEBHOOK, encode, envelope, headers
from tests.servers import FakeHostControl

pytestmark = pytest.mark.e2e

TOKEN = "e2e-admin-token-notify"
# Short waits between retries, so that a refused delivery is tried again within seconds (moved by the scheduler).
RETRIES = "1,1,2,2,3,3,5,5,5,5,5,5"
NOTIFY_QUEUE = "persona-notify"
# With this seed the fake's first draw fails (0.11 < 0.3): at least one 500 whatever the timing.
SEED = 14
FAIL_RATE_500 = 0.3
# Refusals while down before the host comes back: the retries of one notification kept failing meanwhile.
REFUSALS_WHILE_DOWN = 3
STEP_TIMEOUT = 60  # seconds for one notification to be accepted, retries included
# A killed worker's running job is put back after its time limit (30 s) + margin; a scheduled retry sooner.
KILLED_TIMEOUT = 90
# The sweep runs every minute and takes notifications never tried 30 s after their commit.
SWEEP_TIMEOUT = 150
NO_VERISOUL = {"enrolled": False, "blocked": False}
LIFT_BLOCK = "lift_block"


# ---------------------------------------------------------------------------------------------
# The processes


@pytest.fixture
def stack_database_url(tmp_path, postgres_url) -> str:
    """PostgreSQL (emptied) when TEST_DATABASE_URL is set, else a migrated SQLite file."""
    if postgres_url is not None:
        truncate(postgres_url)
        return postgres_url
    url = f"sqlite:///{tmp_path / 'notifications.db'}"
    migrate(url)
    return url


def start_fake_host(tmp_path, *switches: str) -> FakeServer:
    return FakeServer("scripts.fake_host", "host", tmp_path / "fake-host.log", *switches)


@pytest.fixture
def flaky_host(tmp_path):
    fake = start_fake_host(tmp_path, "--fail-rate-500", str(FAIL_RATE_500), "--seed", str(SEED))
    yield fake
    fake.stop()


@pytest.fixture
def steady_host(tmp_path):
    fake = start_fake_host(tmp_path)
    yield fake
    fake.stop()


def notifying_stack(host: FakeServer, redis_url: str, database_url: str, log_dir) -> Stack:
    """A stack (not started) whose processes notify `host`, retrying within seconds."""
    stack = Stack(redis_url, database_url, log_dir)
    stack.env.update(
        ADMIN_API_TOKEN=TOKEN,
        HOST_WEBHOOK_URL=FakeHostControl(host.url).webhook_url,
        HOST_WEBHOOK_SECRET=DEFAULT_SECRET,
        HOST_WEBHOOK_RETRIES=RETRIES,
    )
    return stack


@pytest.fixture
def flaky_stack(flaky_host, redis_server_url, real_redis, stack_database_url, tmp_path):
    # Requested after the host, so stopped before it: no worker is left posting to a closed port.
    stack = notifying_stack(flaky_host, redis_server_url, stack_database_url, tmp_path)
    yield stack
    stack.stop()


@pytest.fixture
def steady_stack(steady_host, redis_server_url, real_redis, stack_database_url, tmp_path):
    stack = notifying_stack(steady_host, redis_server_url, stack_database_url, tmp_path)
    yield stack
    stack.stop()


# ---------------------------------------------------------------------------------------------
# What the service is told, and what the host saw


def post_inquiry(url: str, reference_id: str, inquiry_id: str, status: str, inquiry_created_at: str) -> str:
    """A signed Persona webhook moving the user's inquiry to `status`, created now; returns its created-at."""
    at = iso_millis(datetime.now(UTC))
    attributes = {"status": status, "reference-id": reference_id, "created-at": inquiry_created_at}
    document = envelope(
        name=EVENT_NAME[status],
        event_id=f"evt_{reference_id}_{status}",
        created_at=at,
        object_id=inquiry_id,
        attributes=attributes,
    )
    body = encode(document)
    answer = requests.post(url + WEBHOOK, data=body, headers=headers(body), timeout=10)
    assert answer.status_code == 200 and answer.json()["status"] == "queued", answer.text
    return at


def lift_block(url: str, reference_id: str) -> None:
    """An operator's override through the users API (docs/contracts.md §7)."""
    answer = requests.post(
        f"{url}/users/{reference_id}/actions",
        json={"action": LIFT_BLOCK, "reason": "e2e: a support ticket", "operator": "ops@example.com"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text


def accepted(host: FakeHostControl, reference_id: str) -> list[dict]:
    """The user's notifications the host took (verified, 2xx), in order of first arrival, each once: a delivery
    whose answer was lost comes again under the same `webhook-id`, with the same body."""
    first: dict[str, dict] = {}
    for call in host.calls():
        body = call["body"]
        if call["verified"] and 200 <= call["status"] < 300 and body["data"]["reference_id"] == reference_id:
            seen = first.setdefault(call["webhook_id"], body)
            assert seen == body, f"webhook-id {call['webhook_id']} arrived with two bodies: {seen} and {body}"
    return list(first.values())


def has_accepted(host: FakeHostControl, reference_id: str, sequence: int) -> bool:
    return any(body["data"]["sequence"] >= sequence for body in accepted(host, reference_id))


def refused_while_down(host: FakeHostControl, reference_id: str, sequence: int) -> int:
    return sum(
        call["status"] == 503 and call["body"]["data"]["reference_id"] == reference_id
        for call in host.calls()
        if call["verified"] and call["body"]["data"]["sequence"] == sequence
    )


def outbox_rows(database_url: str, reference_id: str) -> list[Outbox]:
    database = Database(database_url)
    try:
        with database.sessions() as session:
            query = select(Outbox).where(Outbox.reference_id == reference_id).order_by(Outbox.sequence)
            return list(session.scalars(query))
    finally:
        database.dispose()


def summary(
    reference_id: str, sequence: int, inquiry_id: str, status: str, decision: str, next_action: str, strikes: int
) -> dict:
    """A notification's `data` as docs/contracts.md §9 spells it, without a block in force and without Verisoul."""
    return {
        "reference_id": reference_id,
        "sequence": sequence,
        "status": status,
        "inquiry_id": inquiry_id,
        "decision": decision,
        "next_action": next_action,
        "strikes": strikes,
        "blocked_until": None,
        "verisoul": NO_VERISOUL,
    }


def seven_days_after(at: str) -> str:
    """One strike's block ends 7 days after the created-at of the event that declined (§5)."""
    return iso_millis(datetime.fromisoformat(at.replace("Z", "+00:00")) + timedelta(days=7))


# ---------------------------------------------------------------------------------------------
# 1. A lifecycle at a flaky host, down for a while in the middle


@dataclass(frozen=True)
class Step:
    """A change to the user's record: an inquiry's new status, or an operator's lift of the block; and what §5 says
    the user is then (decision, next_action, strikes; `blocked` while the 7-day block is in force)."""

    change: str
    status: str
    decision: str
    next_action: str
    strikes: int
    blocked: bool = False


LIFECYCLE = [
    Step("created", "created", "resume", "resume_inquiry", 0),
    Step("pending", "pending", "resume", "resume_inquiry", 0),
    Step("completed", "completed", "allow", "none", 0),  # the host is down meanwhile
    Step("declined", "declined", "deny", "none", 1, blocked=True),
    # The lift ends the block, its strike stays; with RETRY_AFTER_BLOCK (on) the user may verify again.
    Step(LIFT_BLOCK, "declined", "verify", "create_inquiry", 1),
    # A reviewer reverses the decline: its strike is gone.
    Step("approved", "approved", "allow", "none", 0),
]
DOWN_AT = "completed"


def test_a_lifecycle_reaches_a_flaky_host_as_exactly_its_notifications_in_order(flaky_stack, flaky_host):
    user, inquiry = "u_lifecycle", "inq_lifecycle"
    host = FakeHostControl(flaky_host.url)
    for kind in ("web", "worker", "scheduler"):
        flaky_stack.start(kind)
    flaky_stack.wait_ready()

    inquiry_created_at = iso_millis(datetime.now(UTC))
    expected = []
    for sequence, step in enumerate(LIFECYCLE, start=1):
        if step.change == LIFT_BLOCK:
            lift_block(flaky_stack.url, user)
        else:
            if step.change == DOWN_AT:
                host.configure(down=True)
            at = post_inquiry(flaky_stack.url, user, inquiry, step.change, inquiry_created_at)
            if step.change == DOWN_AT:
                wait_until(
                    lambda s=sequence: refused_while_down(host, user, s) >= REFUSALS_WHILE_DOWN,
                    STEP_TIMEOUT,
                    f"{REFUSALS_WHILE_DOWN} deliveries of sequence {sequence} refused while the host is down",
                    flaky_stack,
                )
                host.configure(down=False)
        data = summary(user, sequence, inquiry, step.status, step.decision, step.next_action, step.strikes)
        expected.append(data | ({"blocked_until": seven_days_after(at)} if step.blocked else {}))
        wait_until(
            lambda s=sequence: has_accepted(host, user, s),
            STEP_TIMEOUT,
            f"the host accepted the notification of step {sequence} ({step.change})",
            flaky_stack,
        )

    calls = host.calls()
    assert all(call["verified"] for call in calls), [c for c in calls if not c["verified"]]
    assert any(call["status"] == 500 for call in calls), "the host never refused with 500: no retry was exercised"
    notifications = accepted(host, user)
    assert [n["data"]["sequence"] for n in notifications] == list(range(1, len(LIFECYCLE) + 1))
    assert {n["type"] for n in notifications} == {"user.updated"}
    assert [n["data"] for n in notifications] == expected
    rows = outbox_rows(flaky_stack.env["DATABASE_URL"], user)
    assert [(r.sequence, r.delivered_at is not None, r.dead_at) for r in rows] == [
        (sequence, True, None) for sequence in range(1, len(LIFECYCLE) + 1)
    ]


# ---------------------------------------------------------------------------------------------
# 2. A worker killed between commit and delivery, and a delivery job lost after the commit


def drop_delivery_job(redis: Redis, reference_id: str) -> None:
    """Delete the user's queued delivery job and pending mark, as if the process died between its commit and
    queueing the delivery; the job must have been there, or this proves nothing."""
    queue = Queue(NOTIFY_QUEUE, connection=redis)
    jobs = [job for job in queue.get_jobs() if job.func_name == DELIVER_NOTIFICATION and job.args == (reference_id,)]
    assert len(jobs) == 1, f"expected one queued delivery for {reference_id}: {[j.description for j in jobs]}"
    jobs[0].delete()
    redis.delete(PENDING_PREFIX + reference_id)
    assert jobs[0].id not in queue.get_job_ids()


def test_no_notification_is_lost_to_a_killed_worker_or_a_lost_delivery_job(steady_stack, steady_host, real_redis):
    killed_user, lost_user = "u_killed", "u_lost"
    host = FakeHostControl(steady_host.url)
    database_url = steady_stack.env["DATABASE_URL"]
    steady_stack.start("web")
    worker = steady_stack.start("worker")
    steady_stack.start("scheduler")
    steady_stack.wait_ready()

    # The user whose delivery job is lost later: blocked, announced and delivered while all is well.
    post_inquiry(steady_stack.url, lost_user, "inq_lost", "declined", iso_millis(datetime.now(UTC)))
    wait_until(lambda: has_accepted(host, lost_user, 1), STEP_TIMEOUT, f"{lost_user}'s first notification")

    # The host is down: the approval commits with its notification, which cannot be delivered; the worker dies.
    host.configure(down=True)
    post_inquiry(steady_stack.url, killed_user, "inq_killed", "approved", iso_millis(datetime.now(UTC)))
    wait_until(lambda: outbox_rows(database_url, killed_user), STEP_TIMEOUT, f"{killed_user}'s outbox row")
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=10)

    # With no worker alive, an override commits a notification whose delivery job is then lost.
    lift_block(steady_stack.url, lost_user)
    drop_delivery_job(real_redis, lost_user)
    [_, lost] = outbox_rows(database_url, lost_user)
    assert (lost.sequence, lost.attempts, lost.delivered_at) == (2, 0, None)

    steady_stack.start("worker")
    host.configure(down=False)
    wait_until(
        lambda: has_accepted(host, killed_user, 1),
        KILLED_TIMEOUT,
        f"{killed_user}'s notification after the worker was killed",
        steady_stack,
    )
    wait_until(
        lambda: has_accepted(host, lost_user, 2),
        SWEEP_TIMEOUT,
        f"{lost_user}'s notification, its delivery job lost, queued by the sweep",
        steady_stack,
    )

    assert all(call["verified"] for call in host.calls())
    [approved] = accepted(host, killed_user)
    assert approved["data"] == summary(killed_user, 1, "inq_killed", "approved", "allow", "none", 0)
    first, lifted = accepted(host, lost_user)
    assert lifted["data"] == summary(lost_user, 2, "inq_lost", "declined", "verify", "create_inquiry", 1)
    assert first["data"]["decision"] == "deny" and first["data"]["blocked_until"] is not None
    assert all(row.delivered_at is not None for row in outbox_rows(database_url, lost_user))
