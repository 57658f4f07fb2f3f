"""What the web accepts, the worker can apply (issue 9), on SQLite and PostgreSQL with a real Redis.

The property: any signed envelope the webhook answers `queued` is applied by an RQ worker (outcome
applied, unexpected, stale, ignored or duplicate; its `events` row exists) and never reaches RQ's
failed registry; any other answer is a 200 `duplicate`/`ignored` or a 4xx JSON {error, detail},
never a 5xx. Envelopes are mostly Persona-shaped, with hostile values where the worker reads them
(long, NUL, control and surrogate-bearing ids, odd timestamps, unknown statuses) and where it does
not (personal data, unknown attributes), in any key casing, with parts missing.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime

import pytest
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from sqlalchemy import select

from app import create_app
from store.db import Database
from store.models import Event, Verification
from store.queue import dedupe_key, job_id_for
from tests.payloads import CASINGS, WEBHOOK, encode, envelope, headers, recase, recase_randomly
from workers import jobs

pytestmark = pytest.mark.integration

OUTCOMES = {"applied", "unexpected", "stale", "ignored", "duplicate"}
PROPERTY = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Service:
    """The webhook on its own events queue (so other tests' workers never take its jobs), and a burst worker."""

    def __init__(self, config, redis):
        self.config = dataclasses.replace(config, events_queue=f"persona-events-{uuid.uuid4().hex[:12]}")
        self.redis = redis
        self.client = create_app(self.config, redis=redis).test_client()
        self.queue = Queue(self.config.events_queue, connection=redis)
        self.database = Database(self.config.database_url)  # one pool for the test: the server is shared

    def forget(self, document) -> None:
        """Drop the event id's dedupe mark and job, so an example hypothesis replays is queued again (the
        event log keeps its row: a second run of the job then reports `duplicate`, as it should)."""
        event_id = document.get("data", {}).get("id") if isinstance(document.get("data"), dict) else None
        if isinstance(event_id, str):  # `data` and `id` read the same in every key casing
            self.redis.delete(dedupe_key(event_id), f"rq:job:{job_id_for(event_id)}")

    def post(self, document) -> tuple[int, dict | None]:
        body = encode(document)
        response = self.client.post(WEBHOOK, data=body, headers=headers(body))
        return response.status_code, response.get_json(silent=True)

    def work(self) -> None:
        SimpleWorker([self.queue], connection=self.redis).work(burst=True)

    def failure(self, job: Job) -> str:
        result = job.latest_result()
        return result.exc_string if result is not None and result.exc_string else str(job.get_status())

    def event_row(self, event_id: str) -> Event | None:
        with self.database.sessions() as session:
            return session.scalar(select(Event).where(Event.event_id == event_id))


def _clear_worker_caches() -> None:
    """The worker's Redis and database handles, cached per process: another test may have left its own."""
    for cached in (jobs.redis, jobs.database, jobs.syncer):
        cached.cache_clear()


@pytest.fixture
def service(real_config, real_redis, worker_env):
    _clear_worker_caches()
    service = Service(real_config, real_redis)
    yield service
    service.database.dispose()
    _clear_worker_caches()


def check_answer(service: Service, document) -> None:
    """The property for one signed delivery, and for its redelivery."""
    service.forget(document)
    status, payload = service.post(document)
    note(f"answer: {status} {payload}")
    assert status < 500, payload
    assert isinstance(payload, dict)
    event(f"{status} {payload.get('status') or payload.get('error')}")  # --hypothesis-show-statistics
    if status != 200:
        assert 400 <= status < 500 and set(payload) == {"error", "detail"} and payload["detail"]
        return
    assert payload["status"] in ("queued", "duplicate", "ignored")
    if payload["status"] != "queued":
        return
    service.work()
    job = Job.fetch(job_id_for(payload["event_id"]), connection=service.redis)
    assert job.id not in FailedJobRegistry(queue=service.queue), service.failure(job)
    assert job.get_status() == JobStatus.FINISHED, service.failure(job)
    assert job.return_value() in OUTCOMES
    event(f"outcome {job.return_value()}")
    assert service.event_row(payload["event_id"]) is not None
    assert service.post(document) == (200, {"status": "duplicate", "event_id": payload["event_id"]})


# --- envelopes ----------------------------------------------------------------------------------------------

# Every character, surrogates (Cs) and controls (Cc) included.
any_char = st.characters(exclude_categories=())
hostile_text = st.one_of(
    st.text(any_char, max_size=20),
    st.text(any_char, min_size=250, max_size=300),
    st.sampled_from(["x" * 256, "id\x00", "\x00", "x" * 255 + "\x00"]),  # what PostgreSQL refuses, SQLite not
    st.sampled_from(
        [
            "x" * 255,
            "\U0001f600" * 255,
            "id\n",
            "\ud800",
            "\udfff\ud800",
            "",
            " ",
            "\u200d",
            "\ufeff",
            "\U000e0001",
            "..",
            "a/b",
        ]
    ),
)


def token(prefix: str, pool: int = 6):
    """A realistic id from a small pool, so events meet the same inquiries, accounts and users."""
    return st.integers(0, pool - 1).map(lambda n: f"{prefix}_{n}")


json_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(any_char, max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(any_char, max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
good_times = st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.timezones()).map(
    lambda moment: moment.isoformat()
)
odd_times = (
    st.sampled_from(
        [
            "2016-12-31T23:59:60Z",
            "NaN",
            "2024-13-01T00:00:00Z",
            "0001-01-01T00:30:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "2024-07-08T14:29:24",
            "2024-07-08",
            "1999-12-31T23:59:59Z",
            "2100-12-31T23:59:59.999Z",
            "2101-01-01T00:00:00Z",
            "2000-01-01T00:00:00+14:00",
            "2024-07-08T14:29:24.123456789+14:00",
            "20240708T142924Z",
        ]
    )
    | hostile_text
    | json_junk
)
INQUIRY_STATUSES = ["created", "pending", "completed", "failed", "expired", "needs_review", "approved", "declined"]
VERIFICATION_STATUSES = ["initiated", "submitted", "passed", "failed", "requires_retry", "canceled", "skipped"]
personal = st.dictionaries(
    st.sampled_from(
        ["name-first", "name-last", "birthdate", "address-street-1", "identification-number", "fields", "photo-url"]
    ),
    hostile_text | json_junk,
    max_size=4,
)
NAMES = {
    "inquiry": ["inquiry.approved", "inquiry.declined", "inquiry.completed", "inquiry.started", "inquiry.new-thing"],
    "verification": ["verification.passed", "verification.failed", "verification.created"],
    "other": ["account.created", "report/watchlist.matched"],
}
good_checks = st.lists(
    st.fixed_dictionaries({"name": st.sampled_from(["id_a", "id_b"]), "status": st.sampled_from(["passed", "failed"])}),
    max_size=3,
)
odd_checks = json_junk | st.lists(
    st.fixed_dictionaries({"name": hostile_text | json_junk, "status": hostile_text | json_junk, "reasons": json_junk}),
    max_size=2,
)


PARTS = (
    "name",
    "object_type",
    "status",
    "reference_id",
    "created_at",
    "checks",
    "relationship",
    "included",
    "included_list",
    "object_id",
    "event_id",
    "event_created_at",
)


def fresh(prefix: str):
    """A new id each draw: a new inquiry is where the worker first reads its `created_at`."""
    return st.builds(lambda: f"{prefix}_{uuid.uuid4().hex}")


def related(kind: str, ids):
    """A JSON:API relationship to one object."""
    return ids.map(lambda id_: {"data": {"type": kind, "id": id_}})


@st.composite
def envelopes(draw) -> dict:
    """A third Persona-shaped (but for their personal data), a third odd in exactly one part, a third
    odd in about one part in four."""
    mode = draw(st.sampled_from(["clean", "one-odd", "chaos"]))
    odd_part = draw(st.sampled_from(PARTS))

    def pick(part, usual, odd):
        is_odd = part == odd_part if mode == "one-odd" else mode == "chaos" and draw(st.integers(0, 3)) == 3
        return draw(odd if is_odd else usual)

    kind = draw(st.sampled_from(["inquiry", "verification", "other"]))
    name = pick("name", st.sampled_from(NAMES[kind]), hostile_text.map(lambda text: "inquiry." + text) | hostile_text)
    usual_type = {"inquiry": "inquiry", "other": "account"}.get(kind, "verification/government-id")
    object_type = pick(
        "object_type", st.just(usual_type), hostile_text.map(lambda text: "verification/" + text) | hostile_text
    )
    statuses = INQUIRY_STATUSES if kind == "inquiry" else VERIFICATION_STATUSES
    attributes = {
        "status": pick(
            "status", st.sampled_from(statuses), st.sampled_from(["redacted", "brand_new"]) | hostile_text | json_junk
        ),
        "reference-id": pick("reference_id", token("user") | st.none(), hostile_text | json_junk),
        "created-at": pick("created_at", good_times, odd_times),
        **{
            f"{which}-at": draw(good_times | odd_times)
            for which in draw(st.sets(st.sampled_from(["completed", "failed", "decisioned", "redacted"])))
        },
        **draw(personal),  # dropped, so as hostile as it gets in every envelope
    }
    if kind == "verification":
        attributes["checks"] = pick("checks", good_checks, odd_checks)
    relationships = {}
    for key, prefix in [("account", "act"), ("inquiry-template", "itmpl"), ("template", "tmpl"), ("inquiry", "inq")]:
        if draw(st.booleans()):
            relationships[key] = pick(
                "relationship",
                related(key, token(prefix) | fresh(prefix)),
                related(key, hostile_text | json_junk) | json_junk,
            )
    account = relationships.get("account")
    account_id = (
        account.get("data", {}).get("id")
        if isinstance(account, dict) and isinstance(account.get("data"), dict)
        else None
    )
    account_reference_id = pick("included", token("user"), hostile_text | json_junk)
    included = (
        [{"type": "account", "id": account_id, "attributes": {"reference-id": account_reference_id}}]
        if account_id
        else []
    )
    included = pick("included_list", st.just(included), st.lists(json_junk, max_size=2))
    object_id = pick("object_id", token("inq" if kind == "inquiry" else "ver") | fresh("inq"), hostile_text | json_junk)
    obj = {"type": object_type, "id": object_id, "attributes": attributes}
    if draw(st.booleans()):
        obj["relationships"] = relationships
    event_id = pick("event_id", fresh("evt") | token("evt_again", 3), hostile_text)
    created_at = pick("event_created_at", good_times, odd_times)
    document = envelope(name=name, event_id=event_id, created_at=created_at, object_type=object_type)
    junk = draw(st.dictionaries(st.sampled_from(["meta", "junk"]), json_junk, max_size=1))
    document["data"]["attributes"]["payload"] = {"data": obj, "included": included, **junk}
    casing = draw(st.sampled_from([*CASINGS, "mixed"]))
    return (
        recase_randomly(document, draw(st.randoms(use_true_random=False)))
        if casing == "mixed"
        else recase(document, casing)
    )


def issue_row(event_id: str, **attributes) -> dict:
    """An inquiry event of its own (fresh inquiry and user) with `attributes` over a valid snapshot."""
    object_id = f"inq_{event_id}"
    return envelope(
        event_id=event_id,
        object_id=object_id,
        attributes={
            "status": "approved",
            "reference-id": f"u_{event_id}",
            "created-at": "2024-07-08T14:28:41.000Z",
            **attributes,
        },
    )


# The issue's rows, always tried first: each was answered `queued` and then failed in the worker.
ISSUE_ROWS = [
    issue_row("evt_row_leap_second", **{"created-at": "2016-12-31T23:59:60Z"}),
    issue_row("evt_row_nan", **{"created-at": "NaN"}),
    issue_row("evt_row_month_13", **{"created-at": "2024-13-01T00:00:00Z"}),
    issue_row("evt_row_overflow", **{"created-at": "0001-01-01T00:30:00+01:00"}),
    issue_row("evt_row_long_reference", **{"reference-id": "u" * 256}),
    issue_row("evt_row_nul_reference", **{"reference-id": "u_\x00"}),
    envelope(event_id="evt_row_long_object", object_id="inq_" + "x" * 252),
    envelope(event_id="evt_row_nul_object", object_id="inq_\x00"),
    issue_row("evt_row_surrogate_name", **{"name-first": "\ud800"}),
    envelope(
        event_id="evt_row_long_verification_type",
        name="verification.passed",
        object_type="verification/" + "k" * 200,
        object_id="ver_row",
        attributes={"status": "passed", "checks": [{"name": "c" * 255, "status": "passed"}]},
    ),
]


def with_examples(test):
    for document in ISSUE_ROWS:
        test = example(document=document)(test)
    return test


@PROPERTY
@with_examples
@given(document=envelopes())
def test_every_signed_envelope_answered_queued_is_applied_and_never_fails(service, document):
    check_answer(service, document)


# --- the issue's rows, one by one -------------------------------------------------------------------------------


def test_a_lone_surrogate_in_dropped_personal_data_is_queued_and_applied(service):
    """It was a 400 invalid_json: Persona retried for two days and the event was lost."""
    document = issue_row("evt_surrogate_in_name", **{"name-first": "Jane\ud800", "birthdate": "\udfff"})
    assert service.post(document) == (200, {"status": "queued", "event_id": "evt_surrogate_in_name"})
    service.work()
    assert service.event_row("evt_surrogate_in_name").outcome == "applied"


def test_a_verification_type_as_long_as_any_id_is_stored(service):
    """`verifications.type` was VARCHAR(64): PostgreSQL refused a longer kind the webhook had queued."""
    kind = "k" * (255 - len("verification/"))
    document = envelope(
        event_id="evt_long_kind",
        name="verification.passed",
        object_type=f"verification/{kind}",
        object_id="ver_long_kind",
        attributes={"status": "passed"},
    )
    assert service.post(document)[1]["status"] == "queued"
    service.work()
    assert service.event_row("evt_long_kind").outcome == "applied"
    with service.database.sessions() as session:
        assert session.get(Verification, "ver_long_kind").type == kind


@pytest.mark.parametrize("document", ISSUE_ROWS[:8], ids=lambda document: document["data"]["id"])
def test_what_the_worker_could_not_apply_is_now_refused_at_the_edge(service, document):
    status, payload = service.post(document)
    assert (status, payload["error"]) == (400, "invalid_envelope")
    assert payload["detail"].startswith("data.attributes.payload.data.")
    assert service.queue.count == 0
