"""Same answer for every body: the webhook re-cases only the keys it reads (domain/events.py
normalise_envelope), where it used to re-case every key of the document; for any body, in any key casing,
with any junk beside the parts it reads, the answer and the queued event are what they were.

The old pipeline is kept below as the reference: every key snake-cased, then the envelope schema, then
minimise. Documents are Persona-shaped with parts missing, mistyped, repeated under another spelling
(`reference-id` and `referenceId` in one object) or written twice, and personal data of any shape.
"""

from __future__ import annotations

import json

import fakeredis
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError
from rq.job import Job

from app import create_app
from domain.events import (
    InvalidEvent,
    QueuedEvent,
    body_sha256,
    is_queued_name,
    minimise,
    normalise_envelope,
    normalise_keys,
)
from domain.schemas import EnvelopeSchema, first_error, load_event
from runtime.config import Config
from store.queue import job_id_for
from tests.payloads import SECRET, WEBHOOK, headers, recase_key

PROPERTY = settings(max_examples=400, deadline=None)
THROUGH_THE_APP = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# --- the reference: the pipeline before normalise_envelope ----------------------------------------------------


def reference_event(document, body_hash: str) -> QueuedEvent:
    """app/webhooks.py and domain/schemas.py as they were: every key re-cased, the envelope schema, minimise."""
    document = normalise_keys(document)
    if not isinstance(document, dict):
        raise ValidationError("expected a JSON object with a `data` event")
    envelope = EnvelopeSchema().load(document)
    try:
        return minimise(envelope, body_hash)
    except InvalidEvent as error:
        raise ValidationError({error.field: [error.problem]}) from None


def number(digits: str) -> int | float:
    return int(digits) if len(digits) <= 4000 else float(digits)


def reference_answer(body: bytes) -> tuple[int, dict, QueuedEvent | None]:
    """The status, JSON answer and queued event (without received_at) the webhook gave a signed JSON body."""
    try:
        document = json.loads(body.decode("utf-8-sig"), parse_int=number)
        event = reference_event(document, body_sha256(body))
    except ValidationError as error:
        return 400, {"error": "invalid_envelope", "detail": first_error(error.messages)}, None
    except ValueError:
        return 400, {"error": "invalid_json", "detail": "body is not valid UTF-8 JSON"}, None
    if not is_queued_name(event["name"]):
        return 200, {"status": "ignored", "event_id": event["event_id"]}, None
    return 200, {"status": "queued", "event_id": event["event_id"]}, event


def outcome(load, document) -> tuple[str, QueuedEvent | str]:
    try:
        return "event", load(document)
    except ValidationError as error:
        return "refused", first_error(error.messages)


def label(result: tuple[str, QueuedEvent | str]) -> str:
    """For --hypothesis-show-statistics: how the examples divide between events and refusals, and which."""
    _, value = result
    return f"refused {value.partition(':')[0]}" if isinstance(value, str) else f"event {value['name']!r:.30}"


# --- documents ----------------------------------------------------------------------------------------------


class Obj(list):
    """A JSON object as its (key, value) pairs in body order, so a key can be written twice."""


class Huge(str):
    """An integer literal too long for Python's int(), written into the body as its digits."""


def spellings(name: str):
    """`reference_id` as a sender may spell it: kebab, snake, camel, and casings Persona does not use."""
    words = recase_key(name, "camel")
    return st.sampled_from(
        [recase_key(name, "kebab"), name, words, words[:1].upper() + words[1:], name.upper(), name.title()]
    )


any_text = st.text(st.characters(exclude_categories=()), max_size=12)  # lone surrogates and controls too
junk_keys = st.sampled_from(["name-first", "nameLast", "birthdate", "fields", "photo-urls"]) | any_text
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and Infinity as Python's json writes and reads them
    | st.integers(4001, 6000).map(lambda size: Huge("7" * size))
    | any_text
)
junk = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.lists(st.tuples(junk_keys, children), max_size=3).map(Obj),
    max_leaves=8,
)


def mostly(usual, odd=junk):
    """`odd` one time in twenty, so that most documents get past the parts before the one that is odd."""
    return st.integers(0, 19).flatmap(lambda n: odd if n == 0 else usual)


@st.composite
def obj(draw, fields: dict) -> Obj:
    """An object of `fields` (snake name → values), each spelt any way, now and then missing or written
    twice, with junk beside them, in any order."""
    pairs = []
    for name, values in fields.items():
        for _ in range(draw(st.sampled_from([1] * 18 + [0, 2]))):
            pairs.append((draw(spellings(name)), draw(values)))
    pairs += draw(st.lists(st.tuples(junk_keys, junk), max_size=3))
    return Obj(draw(st.permutations(pairs)))


texts = mostly(st.sampled_from(["inq_1", "act_1", "act_2", "u_1", "passed"]), junk | st.sampled_from(["", "u_\ud800"]))
times = mostly(st.sampled_from(["2024-07-08T14:29:24.297Z", "2024-07-08T16:29:24+02:00"]), junk | st.just("2016-13-01"))
names = mostly(st.sampled_from(["inquiry.approved", "verification.passed", "account.created", "inquiry."]))
related = mostly(obj({"data": mostly(obj({"type": texts, "id": st.sampled_from(["act_1", "act_2"]) | texts}))}))
checks = mostly(st.lists(mostly(obj({"name": texts, "status": texts})), max_size=3))
object_attributes = mostly(
    obj({"status": texts, "reference_id": texts, "checks": checks, "created_at": times, "completed_at": times})
)
relationships = mostly(obj({"account": related, "inquiry_template": related, "template": related, "inquiry": related}))
included_item = mostly(
    obj(
        {
            "type": mostly(st.sampled_from(["account", "selfie"])),
            "id": mostly(st.sampled_from(["act_1", "act_2"])),
            "attributes": mostly(obj({"reference_id": texts})),
        }
    )
)
the_object = obj(
    {"type": mostly(st.sampled_from(["inquiry", "verification/selfie"])), "id": texts, "attributes": object_attributes}
    | {"relationships": relationships}
)
payload = mostly(obj({"data": mostly(the_object), "included": mostly(st.lists(included_item, max_size=3))}))
the_event = mostly(
    obj(
        {
            "type": mostly(st.just("event")),
            "id": mostly(st.sampled_from(["evt_1", "evt_2"])),
            "attributes": mostly(obj({"name": names, "created_at": times, "payload": payload})),
        }
    )
)
documents = mostly(obj({"data": the_event}))


def render(value, ascii_only: bool = True) -> str:
    """JSON text of a generated value: objects with their pairs as drawn, repeated keys included."""
    if isinstance(value, Obj):
        members = (f"{render(key, ascii_only)}:{render(item, ascii_only)}" for key, item in value)
        return "{" + ",".join(members) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(item, ascii_only) for item in value) + "]"
    if isinstance(value, Huge):
        return str.__str__(value)
    return json.dumps(value, ensure_ascii=ascii_only)


@st.composite
def bodies(draw) -> bytes:
    """A rendered document: \\u escapes or raw UTF-8 (a lone surrogate then makes it invalid UTF-8), now
    and then with a byte-order mark in front."""
    ascii_only = draw(st.booleans())
    text = render(draw(documents), ascii_only)
    body = text.encode("utf-8", "surrogatepass")
    return (b"\xef\xbb\xbf" if draw(st.integers(0, 9)) == 0 else b"") + body


def parsed(body: bytes):
    try:
        return json.loads(body.decode("utf-8-sig"), parse_int=number)
    except ValueError:
        return None


# --- the properties -----------------------------------------------------------------------------------------


@PROPERTY
@given(body=bodies())
def test_validation_and_minimisation_give_what_they_gave_for_the_whole_document_recased(body):
    document = parsed(body)
    expected = outcome(lambda doc: reference_event(doc, "hash"), document)
    event(label(expected))
    assert outcome(lambda doc: load_event(normalise_envelope(doc), "hash"), document) == expected


@pytest.fixture(scope="module")
def endpoint():
    redis = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    config = Config(webhook_secrets=(SECRET,), redis_url="redis://unused", database_url="sqlite://")
    return create_app(config, redis=redis).test_client(), redis


@THROUGH_THE_APP
@given(body=bodies())
def test_every_signed_body_is_answered_and_queued_as_before(endpoint, body):
    client, redis = endpoint
    redis.flushall()  # a fake of this test's own: each body is a first delivery
    response = client.post(WEBHOOK, data=body, headers=headers(body))
    status, answer, expected = reference_answer(body)
    event(f"{status} {answer.get('status') or answer['error']}")
    assert (response.status_code, response.json) == (status, answer)
    if expected is None:
        assert redis.keys("rq:job:*") == []
        return
    [queued] = Job.fetch(job_id_for(expected["event_id"]), connection=redis).args
    queued.pop("received_at")
    assert queued == expected
