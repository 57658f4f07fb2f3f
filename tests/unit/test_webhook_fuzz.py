"""Arbitrary bodies and headers at `POST /webhooks/persona`: never a 5xx, nothing queued unless signed."""

from __future__ import annotations

import json
import time

import fakeredis
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rq import Queue
from rq.job import Job

from app import create_app
from domain.events import normalise_keys, text_problem
from domain.signature import sign
from domain.times import iso_millis, parse_rfc3339
from runtime.config import Config
from store.queue import DEDUPE_PREFIX, job_id_for
from tests.payloads import CASINGS, SECRET, WEBHOOK, recase, recase_randomly

CAP = 4096
FUZZ = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # `endpoint` is shared on purpose
)


@pytest.fixture
def endpoint():
    """One app for all of a test's examples; each example compares the queue before and after."""
    redis = fakeredis.FakeRedis()
    config = Config(
        webhook_secrets=(SECRET,), redis_url="redis://unused", database_url="sqlite://", max_webhook_bytes=CAP
    )
    return create_app(config, redis=redis).test_client(), redis, Queue(config.events_queue, connection=redis)


# --- bodies -------------------------------------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


def mostly(usual, odd):
    """`odd` now and then, else `usual`: most generated envelopes get past the schema."""
    return st.integers(0, 9).flatmap(lambda n: odd if n == 9 else usual)


object_keys = st.sampled_from(["type", "id", "attributes", "reference-id"]) | st.text(max_size=8)
objects = st.dictionaries(object_keys, json_values)
names = mostly(
    st.sampled_from(
        ["inquiry.approved", "inquiry.something-new", "verification.passed", "account.created", "report/x.matched"]
    ),
    st.sampled_from(["inquiry", "verification", "", "inquiry." + "x" * 300]) | st.text(max_size=30) | json_values,
)
created_ats = mostly(
    st.sampled_from(["2024-07-08T14:29:24.297Z", "2024-07-08T16:29:24+02:00"]),
    st.sampled_from(["2024-07-08T14:29:24", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2024-07-08"])
    | st.text(max_size=30)
    | json_values,
)
ids = mostly(
    st.sampled_from(["evt_1", "evt_2"]) | st.from_regex(r"evt_[A-Za-z0-9]{1,24}", fullmatch=True),
    st.sampled_from(["evt_\ud800", "", "evt with space", "evt_\x00", "x" * 256, "\x1b[2J"])
    | st.text(max_size=40)
    | json_values,
)
attributes = mostly(
    st.dictionaries(
        st.sampled_from(["status", "reference-id", "name-first", "birthdate", "checks", "created-at", "fields"]),
        json_values,
        max_size=5,
    ),
    json_values,
)
PARTS = ["data", "type", "id", "attributes", "name", "created-at", "payload", "relationships", "included"]


def drop(value, doomed: set[str]):
    if isinstance(value, dict):
        return {k: drop(v, doomed) for k, v in value.items() if k not in doomed}
    return value


@st.composite
def envelopes(draw) -> dict:
    """Mostly well-formed Persona envelopes, with parts missing, mistyped or odd, in any key casing."""
    obj = {
        "type": draw(mostly(st.sampled_from(["inquiry", "verification/government-id", "account"]), json_values)),
        "id": draw(mostly(st.just("inq_1"), ids)),
        "attributes": draw(attributes),
        "relationships": draw(mostly(st.just({"account": {"data": {"type": "account", "id": "act_1"}}}), json_values)),
    }
    payload = {"data": obj, "included": draw(mostly(st.lists(objects, max_size=2), json_values))}
    event_attributes = {"name": draw(names), "created-at": draw(created_ats), "payload": payload}
    document = {
        "data": {"type": draw(mostly(st.just("event"), json_values)), "id": draw(ids), "attributes": event_attributes}
    }
    document = drop(document, set(draw(mostly(st.just([]), st.lists(st.sampled_from(PARTS), min_size=1, max_size=2)))))
    casing = draw(st.sampled_from([*CASINGS, "mixed"]))
    if casing == "mixed":
        return recase_randomly(document, draw(st.randoms(use_true_random=False)))
    return recase(document, casing)


def encode_json(document) -> bytes:
    return json.dumps(document).encode()  # lone surrogates come out as \ud800 escapes, as a sender could write them


bodies = st.one_of(
    envelopes().map(encode_json),  # twice: the likeliest to reach the envelope schema and the queue
    st.binary(max_size=CAP + 200),
    st.integers(CAP - 2, CAP + 2).map(lambda size: b'{"data": "' + b"x" * (size - 12) + b'"}'),
    st.text().map(lambda text: text.encode("utf-8", "surrogatepass")),
    json_values.map(encode_json),
    envelopes().map(encode_json),
)

# --- headers ------------------------------------------------------------------------------------------

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=40)
content_types = mostly(
    st.sampled_from(["application/json", "application/vnd.api+json", "application/json; charset=utf-8"]),
    st.sampled_from([None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
    | header_text,
)
SIGNINGS = ["correct", "rotation", "absent", "random", "wrong-secret", "stale", "future"]


def signature_header(mode: str, body: bytes, random_text: str) -> str | None:
    now = int(time.time())
    return {
        "correct": sign(SECRET, now, body),
        "rotation": f"{sign('wbhsec_other', now, body)} {sign(SECRET, now, body)}",
        "absent": None,
        "random": random_text,
        "wrong-secret": sign("wbhsec_wrong", now, body),
        "stale": sign(SECRET, now - 3600, body),
        "future": sign(SECRET, now + 3600, body),
    }[mode]


def event_name(body: bytes):
    """The event name the body carries, if it parses as a JSON object with one."""
    try:
        document = normalise_keys(json.loads(body.decode("utf-8-sig")))
        return document["data"]["attributes"]["name"]
    except (ValueError, RecursionError, TypeError, KeyError):
        return None


def post_and_check(endpoint, body: bytes, content_type: str | None, signing: str, random_text: str, extra: dict):
    client, redis, queue = endpoint
    before = (queue.count, len(redis.keys(DEDUPE_PREFIX + "*")))
    sent = {**extra}
    if content_type is not None:
        sent["Content-Type"] = content_type
    signature = signature_header(signing, body, random_text)
    if signature is not None:
        sent["Persona-Signature"] = signature

    response = client.post(WEBHOOK, data=body, headers=sent)

    assert response.status_code in (200, 400, 401, 413, 415), response.get_data(as_text=True)
    payload = response.get_json(silent=True)
    assert isinstance(payload, dict), response.get_data()
    assert ("status" in payload) != ("error" in payload)
    event(f"{response.status_code} {payload.get('status') or payload.get('error')}")  # --hypothesis-show-statistics
    after = (queue.count, len(redis.keys(DEDUPE_PREFIX + "*")))
    signed = signing in ("correct", "rotation")

    if response.status_code == 200:
        assert signed
        queued_name = (event_name(body) or "").startswith(("inquiry.", "verification."))
        assert payload["status"] in ("queued", "duplicate", "ignored")
        assert (payload["status"] != "ignored") == queued_name
    else:
        assert set(payload) == {"error", "detail"}
    if payload.get("status") == "queued":
        assert after == (before[0] + 1, before[1] + 1)
        assert_worker_can_take(queued_event(redis, payload["event_id"]))
    else:
        assert after == before, "something was queued or marked without a 200 queued"
    if not signed:
        assert response.status_code in (401, 413)


def queued_event(redis, event_id: str) -> dict:
    (event,) = Job.fetch(job_id_for(event_id), connection=redis).args
    return event


def assert_worker_can_take(event: dict) -> None:
    """What was queued meets the rules the worker and the database need (domain/events.py)."""
    texts = [
        event[key]
        for key in (
            "event_id",
            "name",
            "object_type",
            "object_id",
            "status",
            "reference_id",
            "account_id",
            "account_reference_id",
            "template_id",
            "inquiry_id",
            "verification_type",
        )
    ]
    texts += [value for check in event["checks"] for value in (check["name"], check["status"])]
    assert [text for text in texts if text is not None and text_problem(text)] == []
    for moment in [event["created_at"], event["received_at"], *event["timestamps"].values()]:
        assert iso_millis(parse_rfc3339(moment)) == moment


@FUZZ
@given(
    body=bodies,
    content_type=content_types,
    signing=st.sampled_from(SIGNINGS),
    random_text=header_text,
    attempts=st.none() | header_text,
)
def test_arbitrary_requests(endpoint, body, content_type, signing, random_text, attempts):
    extra = {} if attempts is None else {"Persona-Webhook-Attempts-Made": attempts}
    post_and_check(endpoint, body, content_type, signing, random_text, extra)


@FUZZ
@given(body=envelopes().map(encode_json) | json_values.map(encode_json))
def test_correctly_signed_json_documents(endpoint, body):
    """Past the signature, everything the parser and the envelope schema can be handed."""
    post_and_check(endpoint, body, "application/json", "correct", "", {})
