"""The Persona API client (clients/persona.py) against the fake Persona (scripts/fake_persona.py) over real HTTP."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from clients import persona
from clients.persona import (
    ATTEMPTS,
    BACKOFF_BASE,
    MAX_RATELIMIT_WAIT,
    PERSONA_VERSION,
    InvalidEvent,
    PersonaClient,
    PersonaError,
    PersonaNotFound,
    PersonaUnavailable,
    event_from_document,
    make_persona_client,
    reset_seconds,
)
from domain.events import body_sha256, minimise, normalise_keys
from domain.schemas import load_envelope
from runtime.config import Config
from scripts.fake_persona import DEFAULT_API_KEY, FakeState, create_fake_app
from tests.payloads import CASINGS, FIXTURE_NAMES, envelope, load_fixture, personal_values, recase
from tests.servers import FakePersonaControl, serve

T0 = datetime(2024, 7, 8, 12, 0, tzinfo=UTC)
RECEIVED = datetime(2024, 7, 9, 8, 30, 15, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def fake_url():
    with serve(create_fake_app(FakeState())) as url:
        yield url


@pytest.fixture
def fake(fake_url) -> FakePersonaControl:
    fake = FakePersonaControl(fake_url)
    fake.reset()
    return fake


class Sleeps(list):
    """A sleep() that records what it was asked for instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client_for(fake, sleeps):
    clients = []

    def make(base_url: str | None = None, api_key: str = DEFAULT_API_KEY, **options) -> PersonaClient:
        client = PersonaClient(base_url or fake.url, api_key, sleep=sleeps, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(client_for) -> PersonaClient:
    return client_for()


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_doc(n: int, casing: str = "kebab") -> dict:
    """Event `evt_<n>`, created n minutes after T0, its keys in `casing`."""
    return recase(envelope(event_id=f"evt_{n}", created_at=stamp(at(n)), object_id=f"inq_{n}"), casing)


def listed(documents) -> list[str]:
    return [document["data"]["id"] for document in documents]


def pages(fake: FakePersonaControl) -> list[str | None]:
    """The page[after] cursor of every list request the fake received."""
    return [call["query"].get("page[after]") for call in fake.calls() if call["path"] == "/api/v1/events"]


def stub(**views) -> Flask:
    """A stand-in for Persona giving answers the fake cannot: `events=view` serves /api/v1/events/<id>."""
    app = Flask(__name__)
    for kind, view in views.items():
        app.add_url_rule(f"/api/v1/{kind}/<object_id>", endpoint=kind, view_func=view)
    return app


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- requests and answers ------------------------------------------------------------------------------


def test_every_request_carries_the_bearer_key_and_the_pinned_version(fake, client):
    fake.store_events(event_doc(1))
    client.get_event("evt_1")
    list(client.list_events())
    calls = fake.calls()
    assert [(call["status"], call["persona_version"]) for call in calls] == [(200, PERSONA_VERSION)] * 2
    assert client.session.headers["Authorization"] == f"Bearer {DEFAULT_API_KEY}"  # the fake checks it: 200
    assert client.session.headers["Accept"] == "application/json"


def test_get_event_returns_the_document(fake, client, sleeps):
    document = event_doc(1, "camel")
    fake.store_events(document)
    assert client.get_event("evt_1") == document
    assert sleeps == []


def test_unknown_event_raises_not_found_without_retrying(fake, client, sleeps):
    with pytest.raises(PersonaNotFound, match="Persona answered 404: Record not found") as raised:
        client.get_event("evt_missing")
    assert raised.value.status == 404 and isinstance(raised.value, PersonaError)
    assert len(fake.calls()) == 1 and sleeps == []


def test_wrong_key_raises_401_without_the_key(fake, client_for, sleeps):
    key = "persona_sandbox_do_not_leak_0123456789"
    with pytest.raises(PersonaError) as raised:
        client_for(api_key=key).get_event("evt_1")
    assert raised.value.status == 401
    assert str(raised.value).startswith("Persona answered 401: Unauthorized")
    assert key not in str(raised.value) and key not in repr(raised.value)
    assert len(fake.calls()) == 1 and sleeps == []


def test_a_key_echoed_in_personas_error_text_is_redacted(sleeps):
    key = "persona_sandbox_echoed"
    app = stub(events=lambda object_id: ({"errors": [{"title": "Bad key", "detail": key}]}, 403))
    with serve(app) as url:
        client = PersonaClient(url, key, sleep=sleeps)
        with pytest.raises(PersonaError) as raised:
            client.get_event("evt_1")
        client.close()
    assert str(raised.value) == "Persona answered 403: Bad key: [redacted]"


@pytest.mark.parametrize("status", [400, 403, 408, 422])
def test_other_client_errors_are_final(fake, client, sleeps, status):
    fake.configure(fail_next=[status])
    with pytest.raises(PersonaError) as raised:
        client.get_event("evt_1")
    assert raised.value.status == status and not isinstance(raised.value, PersonaNotFound)
    assert len(fake.calls()) == 1 and sleeps == []


@pytest.mark.parametrize("body", [[1, 2], "text", None])
def test_a_2xx_that_is_not_a_json_object_is_an_error(sleeps, body):
    app = stub(
        events=lambda object_id: (json.dumps(body), 200, {"Content-Type": "application/json"}),
        inquiries=lambda object_id: ("<html>", 200),
    )
    with serve(app) as url:
        client = PersonaClient(url, "key", sleep=sleeps)
        with pytest.raises(PersonaError, match="not a JSON object"):
            client.get_event("evt_1")
        with pytest.raises(PersonaError, match="not a JSON object"):
            client.get_inquiry("inq_1")
        client.close()
    assert sleeps == []


def test_ids_are_quoted_into_the_path(fake, client):
    sent = []
    client.session.hooks["response"].append(lambda response, **kwargs: sent.append(response.request.path_url))
    with contextlib.suppress(PersonaNotFound):
        client.get_event("evt/1 x?y")
    with contextlib.suppress(PersonaNotFound):
        client.get_inquiry("inq/1#z")
    assert sent == ["/api/v1/events/evt%2F1%20x%3Fy", "/api/v1/inquiries/inq%2F1%23z"]


def test_get_inquiry_returns_the_document_with_included(fake, client):
    document = {
        "data": {"type": "inquiry", "id": "inq_1", "attributes": {"status": "approved", "reference-id": "u1"}},
        "included": [{"type": "account", "id": "act_1", "attributes": {"reference-id": "u1"}}],
    }
    fake.store_inquiries(document)
    assert client.get_inquiry("inq_1") == document
    with pytest.raises(PersonaNotFound):
        client.get_inquiry("inq_2")
    assert [call["path"] for call in fake.calls()] == ["/api/v1/inquiries/inq_1", "/api/v1/inquiries/inq_2"]


# --- listing -------------------------------------------------------------------------------------------


def test_list_events_pages_through_everything_newest_first(fake, client):
    documents = [event_doc(n) for n in range(5)]
    fake.store_events(*documents)
    assert list(client.list_events(page_size=2)) == [documents[n] for n in (4, 3, 2, 1, 0)]
    assert pages(fake) == [None, "evt_3", "evt_1"]  # the last page's links.next is null: no fourth request
    assert {call["query"]["page[size]"] for call in fake.calls()} == {"2"}


def test_list_events_with_no_events_asks_once(fake, client):
    assert list(client.list_events()) == []
    assert [call["query"] for call in fake.calls()] == [{"page[size]": "100"}]


def test_since_and_until_are_inclusive_and_paging_stops_once_since_is_crossed(fake, client):
    fake.store_events(*(event_doc(n) for n in range(10)))
    found = client.list_events(since=at(3), until=at(6), page_size=2)
    assert listed(found) == ["evt_6", "evt_5", "evt_4", "evt_3"]
    # pages: 9 8 | 7 6 | 5 4 | 3 2 ← evt_2 is before `since`: no page after this one
    assert pages(fake) == [None, "evt_8", "evt_6", "evt_4"]


def test_since_crossed_inside_the_first_page_asks_once(fake, client):
    fake.store_events(*(event_doc(n) for n in range(10)))
    assert listed(client.list_events(since=at(8), page_size=5)) == ["evt_9", "evt_8"]
    assert pages(fake) == [None]


def test_until_alone_skips_the_newest(fake, client):
    fake.store_events(*(event_doc(n) for n in range(4)))
    assert listed(client.list_events(until=at(1) + timedelta(seconds=30), page_size=3)) == ["evt_1", "evt_0"]


@pytest.mark.parametrize("casing", CASINGS)
def test_bounds_read_created_at_in_every_casing(fake, client, casing):
    fake.store_events(*(event_doc(n, casing) for n in range(6)))
    assert listed(client.list_events(since=at(2), until=at(4), page_size=2)) == ["evt_4", "evt_3", "evt_2"]


def test_bounds_compare_instants_not_text(fake, client):
    fake.store_events(event_doc(1), event_doc(2))
    plus_two = timezone(timedelta(hours=2))
    assert listed(client.list_events(since=at(2).astimezone(plus_two))) == ["evt_2"]


def test_list_events_yields_documents_event_from_document_accepts(fake, client):
    fake.store_events(event_doc(1, "snake"), event_doc(2, "camel"))
    events = [event_from_document(document, RECEIVED) for document in client.list_events()]
    assert [(event["event_id"], event["object_id"]) for event in events] == [("evt_2", "inq_2"), ("evt_1", "inq_1")]


@pytest.mark.parametrize("page_size", [0, -1, 101, 1000, 2.5, "10"])
def test_page_size_must_be_1_to_100_and_is_checked_at_the_call(fake, client, page_size):
    with pytest.raises(ValueError, match="page_size"):
        client.list_events(page_size=page_size)
    assert fake.calls() == []


@pytest.mark.parametrize("page_size", [1, 100])
def test_page_size_bounds_are_allowed(fake, client, page_size):
    fake.store_events(event_doc(1))
    assert listed(client.list_events(page_size=page_size)) == ["evt_1"]


def test_naive_bounds_are_refused(fake, client):
    with pytest.raises(ValueError, match="timezone-aware"):
        client.list_events(since=datetime(2024, 1, 1))
    assert fake.calls() == []


def test_a_page_failing_midway_raises_after_the_events_already_yielded(fake, client):
    fake.store_events(*(event_doc(n) for n in range(4)))
    events = client.list_events(page_size=2)
    assert listed([next(events), next(events)]) == ["evt_3", "evt_2"]
    fake.configure(fail_next=[404])
    with pytest.raises(PersonaNotFound):
        next(events)


# --- retries -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reset, slept", [(7, 7.0), (2.5, 2.5), (0, 0.0), (120, MAX_RATELIMIT_WAIT)])
def test_429_waits_for_ratelimit_reset_capped(fake, client, sleeps, reset, slept):
    fake.store_events(event_doc(1))
    fake.configure(fail_next=[429], reset_seconds=reset)
    assert client.get_event("evt_1")["data"]["id"] == "evt_1"
    assert sleeps == [slept]
    assert [call["status"] for call in fake.calls()] == [429, 200]


def test_429_without_ratelimit_reset_backs_off(fake, client, sleeps):
    fake.configure(fail_next=[429, 429], reset_seconds=None)
    list(client.list_events())
    assert len(sleeps) == 2
    for n, seconds in enumerate(sleeps):
        assert BACKOFF_BASE * 2**n <= seconds <= BACKOFF_BASE * 2**n * 1.5


@pytest.mark.parametrize(
    "value, seconds",
    [("5", 5.0), ("2.5", 2.5), ("0", 0.0), (" 3 ", 3.0), ("1e1", 10.0), (None, None), ("", None), ("soon", None),
     ("-1", None), ("nan", None), ("inf", None), ("Wed, 21 Oct 2015 07:28:00 GMT", None)],
)  # fmt: skip
def test_reset_seconds_parses_numbers_and_refuses_the_rest(value, seconds):
    assert reset_seconds(value) == seconds


@pytest.mark.parametrize("header", ["ratelimit-reset", "RateLimit-Reset", "RATELIMIT-RESET"])
def test_the_ratelimit_reset_header_name_is_case_insensitive(sleeps, header):
    answers = iter([("", 429, {header: "9"}), ({"data": {}}, 200)])
    with serve(stub(events=lambda object_id: next(answers))) as url:
        client = PersonaClient(url, "key", sleep=sleeps)
        client.get_event("evt_1")
        client.close()
    assert sleeps == [9.0]


@pytest.mark.parametrize("failures", [[500], [503, 502], [500, 429, 504]])
def test_server_errors_then_success(fake, client, sleeps, failures):
    fake.store_events(event_doc(1))
    fake.configure(fail_next=failures, reset_seconds=3)
    assert client.get_event("evt_1") == event_doc(1)
    assert [call["status"] for call in fake.calls()] == [*failures, 200]
    assert len(sleeps) == len(failures)
    for n, (status, seconds) in enumerate(zip(failures, sleeps, strict=True)):
        if status == 429:
            assert seconds == 3
        else:
            assert BACKOFF_BASE * 2**n <= seconds <= BACKOFF_BASE * 2**n * 1.5


@pytest.mark.parametrize("jitter, factor", [(0.0, 1.0), (0.999999, 1.5)])
def test_backoff_doubles_with_up_to_half_again_of_jitter(fake, client, sleeps, monkeypatch, jitter, factor):
    monkeypatch.setattr(persona.random, "random", lambda: jitter)
    fake.configure(fail_rate_500=1.0)
    with pytest.raises(PersonaUnavailable):
        client.get_event("evt_1")
    assert sleeps == pytest.approx([BACKOFF_BASE * 2**n * factor for n in range(ATTEMPTS - 1)], rel=1e-5)


@pytest.mark.parametrize("switch, status", [("fail_rate_500", 500), ("fail_rate_429", 429)])
def test_every_attempt_failing_raises_unavailable(fake, client, sleeps, switch, status):
    fake.configure(**{switch: 1.0})
    with pytest.raises(PersonaUnavailable) as raised:
        client.get_event("evt_x")
    assert str(raised.value) == f"GET /api/v1/events/evt_x: HTTP {status} after {ATTEMPTS} attempts"
    assert [call["status"] for call in fake.calls()] == [status] * ATTEMPTS
    assert len(sleeps) == ATTEMPTS - 1  # no pointless sleep after the last attempt


def test_attempts_is_configurable(fake, client_for, sleeps):
    fake.configure(fail_rate_500=1.0)
    with pytest.raises(PersonaUnavailable, match="after 2 attempts"):
        list(client_for(attempts=2).list_events(page_size=5))
    assert len(fake.calls()) == 2 and len(sleeps) == 1


def test_connection_refused_is_retried_then_unavailable(client_for, sleeps):
    client = client_for(base_url=f"http://127.0.0.1:{closed_port()}", api_key="secret_key_value")
    with pytest.raises(PersonaUnavailable, match="ConnectionError after 5 attempts") as raised:
        client.get_event("evt_1")
    assert "secret_key_value" not in str(raised.value)
    assert len(sleeps) == ATTEMPTS - 1


# --- event_from_document: the webhook's path for a fetched event -----------------------------------------


def webhook_minimised(document: dict) -> dict[str, object]:
    """What the webhook queues for this document, apart from body_sha256 and received_at."""
    event: dict[str, object] = dict(minimise(load_envelope(normalise_keys(document)), ""))
    del event["body_sha256"]
    return event


@pytest.mark.parametrize("casing", CASINGS)
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixtures_minimise_as_the_webhook_does(name, casing):
    document = recase(load_fixture(name), casing)
    event = event_from_document(document, RECEIVED)
    assert {k: v for k, v in event.items() if k not in ("body_sha256", "received_at")} == webhook_minimised(document)
    assert event["received_at"] == "2024-07-09T08:30:15.123Z"
    text = json.dumps(event)
    assert [value for value in personal_values(load_fixture(name)) if value in text] == []


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_every_casing_gives_the_same_event_apart_from_the_hash(name):
    events = [event_from_document(recase(load_fixture(name), casing), RECEIVED) for casing in CASINGS]
    assert len({json.dumps({**event, "body_sha256": None}, sort_keys=True) for event in events}) == 1


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixtures_fetched_from_the_fake_minimise_the_same(fake, client, name):
    document = load_fixture(name)
    fake.store_events(document)
    fetched = client.get_event(document["data"]["id"])
    assert event_from_document(fetched, RECEIVED) == event_from_document(document, RECEIVED)


def test_body_hash_is_of_the_canonical_json_whatever_the_key_order():
    document = event_doc(1)
    reordered = json.loads(json.dumps(document, sort_keys=True))
    reordered["data"] = dict(reversed(list(reordered["data"].items())))
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert event_from_document(document, RECEIVED)["body_sha256"] == body_sha256(canonical)
    assert event_from_document(reordered, RECEIVED)["body_sha256"] == body_sha256(canonical)


@pytest.mark.parametrize(
    "document, field",
    [
        ([], "body"),
        ("evt_1", "body"),
        ({}, "data"),
        ({"data": {"type": "inquiry", "id": "inq_1", "attributes": {}}}, "data.type"),
        (envelope(created_at="yesterday"), "data.attributes.created_at"),
        (envelope(created_at="2024-07-08T14:29:24"), "data.attributes.created_at"),
        ({"data": {**envelope()["data"], "id": ""}}, "data.id"),
        ({"data": {"type": "event", "id": "evt_1", "attributes": {"name": "inquiry.approved",
          "created-at": "2024-07-08T14:29:24.297Z"}}}, "data.attributes.payload"),
        ({"data": {**envelope()["data"], "id": "evt_\ud800"}}, "data.id"),
    ],
)  # fmt: skip
def test_invalid_documents_raise_invalid_event_naming_the_field(document, field):
    with pytest.raises(InvalidEvent) as raised:
        event_from_document(document, RECEIVED)
    assert str(raised.value).startswith(f"{field}:")
    assert isinstance(raised.value, ValueError)


def test_a_lone_surrogate_in_data_the_service_drops_does_not_cost_a_fetched_event():
    """As on the webhook: minimise first, then check what is kept (issue 9)."""
    document = envelope(attributes={"status": "approved", "reference-id": "user_1", "name-first": "Al\ud800ice"})
    document["data"]["note"] = "\ud800"
    event = event_from_document(document, RECEIVED)
    assert (event["status"], event["reference_id"]) == ("approved", "user_1")


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


def mostly(usual, odd=json_values):
    """`odd` now and then, else `usual`: most generated envelopes get past the schema and reach minimise."""
    return st.integers(0, 9).flatmap(lambda n: odd if n == 9 else usual)


def near_envelopes():
    """Envelope-shaped documents, in any key casing, with arbitrary values wherever the webhook takes any."""
    ids = mostly(st.text(min_size=1, max_size=8))
    related = st.fixed_dictionaries({"data": mostly(st.fixed_dictionaries({"type": st.text(max_size=8), "id": ids}))})
    relationships = st.dictionaries(st.sampled_from(["account", "inquiry", "inquiry-template", "template"]), related)
    checks = st.lists(mostly(st.fixed_dictionaries({"name": json_values, "status": json_values})), max_size=3)
    attributes = st.dictionaries(
        st.sampled_from(["status", "reference-id", "created-at", "completed-at", "checks"]) | st.text(max_size=6),
        json_values | checks,
    )
    obj = st.fixed_dictionaries(
        {
            "type": mostly(st.sampled_from(["inquiry", "verification/government-id", "verification", "account"])),
            "id": ids,
        },
        optional={"attributes": mostly(attributes), "relationships": mostly(relationships)},
    )
    included = st.lists(
        mostly(obj | st.fixed_dictionaries({"type": st.just("account"), "id": ids, "attributes": attributes})),
        max_size=3,
    )
    payload = st.fixed_dictionaries({"data": mostly(obj)}, optional={"included": mostly(included)})
    created_at = st.sampled_from(
        [
            "2024-07-08T14:29:24.297Z",
            "2024-07-08T14:29:24+02:00",
            "2024-07-08T14:29:24",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
        ]
    )
    event_attributes = st.fixed_dictionaries(
        {
            "name": mostly(st.sampled_from(["inquiry.approved", "verification.passed", "account.created", ""])),
            "created-at": mostly(created_at),
            "payload": mostly(payload),
        }
    )
    event = st.fixed_dictionaries({"type": mostly(st.just("event")), "id": ids, "attributes": mostly(event_attributes)})
    document = st.fixed_dictionaries({"data": event}, optional={"links": json_values})
    return st.tuples(document, st.sampled_from(CASINGS)).map(lambda pair: recase(*pair))  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(document=json_values | near_envelopes())
def test_arbitrary_documents_give_an_event_or_invalid_event(document):
    try:
        event = event_from_document(document, RECEIVED)
    except InvalidEvent:
        return
    assert isinstance(event, dict)
    json.dumps(event)  # queueable as it is


# --- make_persona_client -------------------------------------------------------------------------------


def test_make_persona_client_needs_a_key():
    base = Config(webhook_secrets=("s",), redis_url="redis://unused")
    assert make_persona_client(base) is None

    config = Config(webhook_secrets=("s",), redis_url="redis://unused", persona_api_key="k",
                    persona_api_url="http://persona.test/")  # fmt: skip
    client = make_persona_client(config)
    assert isinstance(client, PersonaClient)
    assert client.base_url == "http://persona.test"
    assert client.session.headers["Authorization"] == "Bearer k"
    assert client.session.headers["Persona-Version"] == PERSONA_VERSION
    client.close()


# Issue 9: ids are other people's strings; `..` or `/` in one must not reach another route or drop a segment.
SEGMENT_IDS = [".", "..", "/", "a/b", "../events", "evt/../x", "?page[size]=1", "#f", "100%", "a b", "ünï"]


@pytest.mark.parametrize("object_id", SEGMENT_IDS)
def test_every_id_is_one_segment_of_its_own_route(fake, client, object_id):
    fake.store_events(
        {"data": {"type": "event", "id": object_id, "attributes": {"created-at": "2024-07-08T14:29:24.297Z"}}}
    )
    fake.store_inquiries({"data": {"type": "inquiry", "id": object_id, "attributes": {}}, "included": []})
    assert client.get_event(object_id)["data"]["id"] == object_id
    assert client.get_inquiry(object_id)["data"]["id"] == object_id
    assert [(call["query"], call["status"]) for call in fake.calls()] == [({}, 200), ({}, 200)]


# --- the inquiry writes the gate uses (issue 13) ---


def later(seconds: float) -> float:
    return time.monotonic() + seconds


def test_create_makes_one_inquiry_however_often_its_key_is_retried(fake, client):
    first = client.create_inquiry("itmpl_kyc", "u_1", "key-1", later(5))
    again = client.create_inquiry("itmpl_kyc", "u_1", "key-1", later(5))
    assert first["data"]["id"] == again["data"]["id"] and first["data"]["attributes"]["status"] == "created"
    posts = [call for call in fake.calls() if call["method"] == "POST"]
    assert [call["status"] for call in posts] == [201, 200]


def test_a_create_refused_by_a_5xx_is_retried_with_the_same_key_and_makes_one_inquiry(fake, client, sleeps):
    fake.configure(fail_next=[503, 502])
    created = client.create_inquiry("itmpl_kyc", "u_2", "key-2", later(30))
    assert created["data"]["attributes"]["reference-id"] == "u_2" and len(sleeps) == 2
    assert client.create_inquiry("itmpl_kyc", "u_2", "key-2", later(5))["data"]["id"] == created["data"]["id"]


def test_no_wait_runs_past_the_deadline(fake, client_for, sleeps):
    fake.configure(fail_next=[429], reset_seconds=30)
    with pytest.raises(PersonaUnavailable, match="no time left") as refused:
        client_for().create_inquiry("itmpl_kyc", "u_3", "key-3", later(2))
    assert sleeps == []  # a 30 s ratelimit-reset does not fit in 2 s: answered now, not late
    assert refused.value.retry_after == 30  # for the caller's Retry-After


def test_a_wait_that_leaves_no_time_for_the_attempt_after_it_is_not_taken(fake, client_for, sleeps):
    fake.configure(fail_next=[429], reset_seconds=1.8)
    with pytest.raises(PersonaUnavailable, match="no time left"):
        client_for().create_inquiry("itmpl_kyc", "u_3", "key-3", later(2))
    assert sleeps == []


def test_a_5xx_out_of_time_names_no_rate_limit_wait(fake, client_for, sleeps):
    fake.configure(fail_next=[503])
    with pytest.raises(PersonaUnavailable) as refused:
        client_for().create_inquiry("itmpl_kyc", "u_3", "key-3", later(0.1))
    assert refused.value.retry_after is None


def test_resume_and_one_time_link_answer_their_meta(fake, client):
    inquiry_id = client.create_inquiry("itmpl_kyc", "u_4", "key-4", later(5))["data"]["id"]
    assert client.resume_inquiry(inquiry_id, later(5)).startswith("sess_")
    assert client.one_time_link(inquiry_id, later(5)).startswith("https://")


def test_a_template_persona_does_not_know_is_a_not_found(fake, client):
    fake.configure(unknown_templates=["itmpl_gone"])
    with pytest.raises(PersonaNotFound):
        client.create_inquiry("itmpl_gone", "u_5", "key-5", later(5))
