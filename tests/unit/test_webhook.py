"""`POST /webhooks/persona` and the health routes, through the Flask test client and fakeredis."""

from __future__ import annotations

import dataclasses
import json
import re

import fakeredis
import orjson
import pytest
from flask import request
from prometheus_client import REGISTRY
from redis import exceptions as redis_errors
from rq import Queue
from rq.job import Job

from app import create_app, webhooks
from domain.events import body_sha256, minimise, normalise_keys
from domain.schemas import load_envelope
from runtime import metrics
from store.queue import DEDUPE_PREFIX, dedupe_key, job_id_for
from tests.payloads import (
    CASINGS,
    FIXTURE_NAMES,
    SECRET,
    WEBHOOK,
    encode,
    envelope,
    headers,
    load_fixture,
    personal_values,
    recase,
)

ISO_MILLIS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def post(client, body: bytes, **extra):
    """`body`, correctly signed, as JSON unless `extra` says otherwise."""
    return client.post(WEBHOOK, data=body, headers=headers(body, **extra))


def post_unsigned(client, body: bytes, content_type: str = "application/json", **extra):
    return client.post(WEBHOOK, data=body, headers={"Content-Type": content_type, **extra})


def queue(redis, config) -> Queue:
    return Queue(config.events_queue, connection=redis)


def queued_event(redis, event_id: str) -> dict:
    job = Job.fetch(job_id_for(event_id), connection=redis)
    (event,) = job.args
    assert job.kwargs == {}
    return event


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json and set(response.json) == {"error", "detail"}
    assert response.json["error"] == code and response.json["detail"]
    return response.json


def assert_nothing_queued(redis, config) -> None:
    assert queue(redis, config).count == 0
    assert redis.keys(DEDUPE_PREFIX + "*") == []


@pytest.fixture
def make_client(config, redis):
    """A client on an app whose config differs from the default one by `overrides`."""

    def make(redis_connection=redis, **overrides):
        return create_app(dataclasses.replace(config, **overrides), redis=redis_connection).test_client()

    return make


# --- every fixture, every casing ------------------------------------------------------------------------


@pytest.mark.parametrize("casing", CASINGS)
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_is_queued_once_with_its_minimised_event(client, redis, config, name, casing):
    document = recase(load_fixture(name), casing)
    body = encode(document)
    event_id = load_fixture(name)["data"]["id"]

    first = post(client, body)
    second = post(client, body)

    assert (first.status_code, first.json) == (200, {"status": "queued", "event_id": event_id})
    assert (second.status_code, second.json) == (200, {"status": "duplicate", "event_id": event_id})
    assert queue(redis, config).job_ids == [job_id_for(event_id)]
    event = queued_event(redis, event_id)
    assert ISO_MILLIS.fullmatch(event.pop("received_at"))
    assert event == minimise(load_envelope(normalise_keys(load_fixture(name))), body_sha256(body))
    assert event["event_id"] == event_id and event["body_sha256"] == body_sha256(body)


@pytest.mark.parametrize("casing", CASINGS)
@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_queued_job_holds_nothing_personal(client, redis, name, casing):
    body = encode(recase(load_fixture(name), casing))
    assert post(client, body).json["status"] == "queued"
    job = Job.fetch(job_id_for(load_fixture(name)["data"]["id"]), connection=redis)
    stored = json.dumps([job.args, job.kwargs, job.meta, job.description], default=str)
    assert [value for value in personal_values(load_fixture(name)) if value in stored] == []


def test_dedupe_is_by_event_id_whatever_the_casing(client, redis, config):
    kebab = encode(load_fixture("docs_verification_passed.json"))
    camel = encode(recase(load_fixture("docs_verification_passed.json"), "camel"))
    assert post(client, kebab).json["status"] == "queued"
    assert post(client, camel).json["status"] == "duplicate"
    assert queue(redis, config).count == 1


def test_dedupe_mark_outlives_persona_retries(client, redis, config):
    event_id = load_fixture("docs_inquiry_completed.json")["data"]["id"]
    post(client, encode(load_fixture("docs_inquiry_completed.json")))
    assert 7 * 24 * 3600 - 60 <= redis.ttl(dedupe_key(event_id)) <= config.dedupe_ttl


@pytest.mark.parametrize("event_id", ["evt_with.dot", "evt with space", "evt/slash", "évt_ünïcode"])
def test_event_ids_rq_cannot_use_as_job_ids_are_still_queued(client, redis, event_id):
    body = encode(envelope(event_id=event_id))
    assert post(client, body).json == {"status": "queued", "event_id": event_id}
    assert queued_event(redis, event_id)["event_id"] == event_id
    assert post(client, body).json["status"] == "duplicate"


# --- which events are queued --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["report/watchlist.matched", "account.created", "case.created", "document.created", "transaction.created"]
)
def test_other_authentic_events_are_ignored(client, redis, config, name):
    response = post(client, encode(envelope(name=name, object_type=name.split(".")[0])))
    assert (response.status_code, response.json) == (200, {"status": "ignored", "event_id": "evt_test_1"})
    assert_nothing_queued(redis, config)


@pytest.mark.parametrize("name", ["inquiry.something-new", "verification.some-new-state", "inquiry.redacted"])
def test_names_persona_adds_later_are_queued(client, redis, name):
    assert post(client, encode(envelope(name=name))).json["status"] == "queued"
    assert queued_event(redis, "evt_test_1")["name"] == name


# --- signature ------------------------------------------------------------------------------------------

BODY = encode(envelope())


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        "t=abc,v1=deadbeef",
        headers(BODY, timestamp=1)["Persona-Signature"],  # stale
        headers(BODY, timestamp=99_999_999_999)["Persona-Signature"],  # future
        headers(BODY, secret="wbhsec_wrong")["Persona-Signature"],
        headers(BODY + b" ")["Persona-Signature"],  # another body
    ],
    ids=["missing", "empty", "malformed", "stale", "future", "wrong-secret", "other-body"],
)
def test_bad_signature_is_401(client, redis, config, signature):
    extra = {} if signature is None else {"Persona-Signature": signature}
    assert_error(post_unsigned(client, BODY, **extra), 401, "invalid_signature")
    assert_nothing_queued(redis, config)


def test_rotation_header_and_any_configured_secret(make_client):
    client = make_client(webhook_secrets=("wbhsec_new", SECRET))
    pair = f"{headers(BODY, secret='wbhsec_unknown')['Persona-Signature']} {headers(BODY)['Persona-Signature']}"
    assert post_unsigned(client, BODY, **{"Persona-Signature": pair}).json["status"] == "queued"


# --- the order of checks: size, signature, media type, JSON, envelope -------------------------------------


def test_oversized_unsigned_body_is_413_not_401(make_client):
    client = make_client(max_webhook_bytes=100)
    assert_error(post_unsigned(client, b"x" * 101, "text/plain"), 413, "payload_too_large")


def test_unsigned_non_json_is_401_not_415_or_400(client):
    assert_error(post_unsigned(client, b"<xml/>", "text/plain"), 401, "invalid_signature")
    assert_error(post_unsigned(client, b"{not json", "application/json"), 401, "invalid_signature")


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/x-www-form-urlencoded", ""])
def test_signed_body_that_is_not_declared_json_is_415(client, redis, config, content_type):
    assert_error(post(client, BODY, **{"Content-Type": content_type}), 415, "unsupported_media_type")
    assert_nothing_queued(redis, config)


@pytest.mark.parametrize("content_type", ["application/vnd.api+json", "application/json; charset=utf-8"])
def test_json_media_types_are_accepted(client, content_type):
    assert post(client, BODY, **{"Content-Type": content_type}).json["status"] == "queued"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b'{"data": ',
        b'{"data": "\xff\xfe"}',  # invalid UTF-8
        json.dumps(envelope()).encode("utf-16"),  # JSON, but not UTF-8
        b"[" * 100_000 + b"]" * 100_000,  # deeper than any parser recursion
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    ],
    ids=["text", "empty", "truncated", "bad-utf8", "utf16", "deep-list", "deep-object"],
)
def test_signed_body_that_is_not_utf8_json_is_400(client, redis, config, body):
    assert_error(post(client, body), 400, "invalid_json")
    assert_nothing_queued(redis, config)


def test_escaped_surrogate_pairs_are_fine(client, redis):
    body = json.dumps(envelope(attributes={"status": "approved", "reference-id": "u_\U0001f600"})).encode()
    assert b"\\ud83d\\ude00" in body
    assert post(client, body).json["status"] == "queued"
    assert queued_event(redis, "evt_test_1")["reference_id"] == "u_\U0001f600"


@pytest.mark.parametrize("depth", [10, 200, 800, 3000])
@pytest.mark.parametrize("container", ["list", "object"])
def test_deep_nesting_inside_an_envelope_never_errors(client, depth, container):
    nested = "[" * depth + "]" * depth if container == "list" else '{"a":' * depth + "1" + "}" * depth
    body = encode(envelope()).replace(b'"status": "approved"', f'"status": "approved", "deep": {nested}'.encode())
    response = post(client, body)
    assert response.status_code in (200, 400)
    assert response.json.get("status") == "queued" or response.json["error"] == "invalid_json"


def test_nesting_in_dropped_data_that_the_old_full_recasing_could_not_take_is_queued(client, redis):
    """Re-casing every key recursed two frames a level and hit Python's recursion limit near 500 levels (a 400
    invalid_json at a depth that depended on the stack); only the parts that are read are re-cased now, and
    parsing takes 1024 levels (orjson; json's own limit beyond)."""
    nested = '{"a":' * 600 + "1" + "}" * 600
    body = encode(inquiry()).replace(b'"status": "approved"', f'"status": "approved", "deep": {nested}'.encode())
    assert post(client, body).json["status"] == "queued"
    assert queued_event(redis, "evt_test_1")["reference_id"] == "u_1"


@pytest.mark.parametrize("document", [[], [envelope()], "event", 42, None])
def test_signed_json_that_is_not_an_object_is_400(client, document):
    detail = assert_error(post(client, encode(document)), 400, "invalid_envelope")["detail"]
    assert detail == "body: expected a JSON object with a `data` event"


@pytest.mark.parametrize("casing", CASINGS)
@pytest.mark.parametrize(
    "path, field",
    [
        (("data", "id"), "data.id"),
        (("data", "attributes", "name"), "data.attributes.name"),
        (("data", "attributes", "created-at"), "data.attributes.created_at"),
        (("data", "attributes", "payload", "data", "id"), "data.attributes.payload.data.id"),
    ],
)
def test_signed_envelope_missing_a_field_is_400_naming_it(client, redis, config, path, field, casing):
    document = envelope()
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    detail = assert_error(post(client, encode(recase(document, casing))), 400, "invalid_envelope")["detail"]
    assert detail.startswith(field + ":")
    assert_nothing_queued(redis, config)


@pytest.mark.parametrize(
    "created_at", ["2024-07-08T14:29:24", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "soon"]
)
def test_signed_envelope_with_unusable_created_at_is_400(client, created_at):
    response = post(client, encode(envelope(created_at=created_at)))
    assert assert_error(response, 400, "invalid_envelope")["detail"].startswith("data.attributes.created_at:")


def test_data_type_other_than_event_is_400(client):
    document = envelope()
    document["data"]["type"] = "inquiry"
    assert assert_error(post(client, encode(document)), 400, "invalid_envelope")["detail"].startswith("data.type:")


# --- the size cap ---------------------------------------------------------------------------------------


class Body:
    """A WSGI input stream that counts what is read from it; `endless` streams never run out."""

    def __init__(self, data: bytes = b"", endless: bool = False):
        self.data, self.endless, self.read_bytes = data, endless, 0

    def read(self, size: int = -1) -> bytes:
        if self.endless:
            chunk = b"x" * (size if size >= 0 else 1 << 20)
        else:
            end = len(self.data) if size < 0 else self.read_bytes + size
            chunk = self.data[self.read_bytes : end]
        self.read_bytes += len(chunk)
        return chunk


def test_content_length_over_the_cap_is_413_without_reading_the_body(make_client):
    client = make_client(max_webhook_bytes=1000)
    stream = Body(b"x" * 5000)
    response = client.post(
        WEBHOOK,
        headers={"Content-Type": "application/json"},
        environ_overrides={"wsgi.input": stream, "CONTENT_LENGTH": "1001"},
    )
    assert_error(response, 413, "payload_too_large")
    assert stream.read_bytes == 0


@pytest.mark.parametrize("over", [0, 1], ids=["body-at-cap", "body-one-byte-over"])
def test_size_cap_boundary(make_client, over):
    body = encode(envelope())
    response = post(make_client(max_webhook_bytes=len(body) - over), body)
    if over:
        assert_error(response, 413, "payload_too_large")
    else:
        assert response.json["status"] == "queued"


def post_chunked(client, stream: Body, body_for_signature: bytes = b""):
    """A streamed request: `Transfer-Encoding: chunked`, no Content-Length, and a server that terminates
    the input (`wsgi.input_terminated`, as gunicorn sets it)."""
    seen = []
    client.application.before_request(lambda: seen.append(request.content_length))
    response = client.post(
        WEBHOOK,
        headers={**headers(body_for_signature), "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input": stream, "wsgi.input_terminated": True},
    )
    assert seen == [None], "the request was not treated as streamed"
    return response


def test_chunked_body_over_the_cap_stops_being_read_at_the_cap(make_client, redis, config):
    client = make_client(max_webhook_bytes=200_000)
    stream = Body(endless=True)
    assert_error(post_chunked(client, stream), 413, "payload_too_large")
    assert 200_000 < stream.read_bytes <= 200_001
    assert_nothing_queued(redis, config)


@pytest.mark.parametrize("slack", [0, 1000], ids=["at-cap", "under-cap"])
def test_chunked_body_within_the_cap_is_accepted(make_client, slack):
    body = encode(load_fixture("sandbox_inquiry_approved.json"))
    client = make_client(max_webhook_bytes=len(body) + slack)
    stream = Body(body)
    response = post_chunked(client, stream, body)
    assert response.json["status"] == "queued"
    assert stream.read_bytes == len(body)


# --- Redis failures: 503, nothing marked, the retry succeeds ---------------------------------------------


@pytest.fixture
def server():
    return fakeredis.FakeServer()


@pytest.fixture
def flaky(make_client, server):
    return make_client(redis_connection=fakeredis.FakeRedis(server=server))


def assert_unavailable(response) -> None:
    assert_error(response, 503, "queue_unavailable")
    assert int(response.headers["Retry-After"]) > 0


def test_redis_down_is_503_and_the_retry_is_queued(flaky, server, config):
    body = encode(load_fixture("docs_inquiry_completed.json"))
    server.connected = False
    assert_unavailable(post(flaky, body))
    server.connected = True
    assert_nothing_queued(fakeredis.FakeRedis(server=server), config)
    assert post(flaky, body).json["status"] == "queued"
    assert post(flaky, body).json["status"] == "duplicate"


@pytest.mark.parametrize(
    "error", [redis_errors.TimeoutError, redis_errors.ResponseError, redis_errors.BusyLoadingError]
)
def test_any_redis_error_is_503_and_the_retry_is_queued(flaky, monkeypatch, error):
    def failing(*args, **kwargs):
        raise error("boom")

    event_queue = flaky.application.extensions["event_queue"]
    monkeypatch.setattr(event_queue, "_script", failing)
    assert_unavailable(post(flaky, BODY))
    monkeypatch.undo()
    assert post(flaky, BODY).json["status"] == "queued"


def test_script_failing_part_way_leaves_no_dedupe_mark(flaky, server, config):
    """Redis does not roll a failed script back: whatever ran before the error stays, but the dedupe mark
    is set last, so Persona's retry is queued rather than taken for a duplicate."""
    connection = fakeredis.FakeRedis(server=server)
    events = queue(connection, config)
    connection.set(events.key, "not a list")  # the push onto the queue, after the job hash is written, fails
    assert_unavailable(post(flaky, BODY))
    assert connection.exists(Job.key_for(job_id_for("evt_test_1"))) == 1  # the script got that far...
    assert connection.exists(dedupe_key("evt_test_1")) == 0  # ...but set no mark
    connection.delete(events.key)
    assert post(flaky, BODY).json["status"] == "queued"
    assert queued_event(connection, "evt_test_1")["event_id"] == "evt_test_1"
    assert events.job_ids == [job_id_for("evt_test_1")]
    assert post(flaky, BODY).json["status"] == "duplicate"


# --- health, readiness, unknown routes ---------------------------------------------------------------------


def test_healthz(client):
    response = client.get("/healthz")
    assert (response.status_code, response.json) == (200, {"status": "ok"})


def test_readyz(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json["checks"] == {"redis": "ok", "database": "ok"}


def test_readyz_names_redis_when_it_is_down(flaky, server):
    server.connected = False
    response = flaky.get("/readyz")
    assert response.status_code == 503 and "redis" in response.json["detail"]
    assert response.json["checks"] == {"redis": "unavailable", "database": "ok"}


def test_readyz_names_the_database_when_it_is_down(make_client, tmp_path):
    client = make_client(database_url=f"sqlite:///{tmp_path}")  # a directory: SQLite cannot open it
    response = client.get("/readyz")
    assert response.status_code == 503 and "database" in response.json["detail"]
    assert response.json["checks"] == {"redis": "ok", "database": "unavailable"}


def test_unknown_route_is_json_404(client):
    assert_error(client.get("/nowhere"), 404, "not_found")


def test_wrong_method_is_json_405(client):
    assert_error(client.get(WEBHOOK), 405, "method_not_allowed")


# --- the request log line ------------------------------------------------------------------------------


@pytest.fixture
def logged(config, redis, capsys):
    """`start()` builds a client whose app logs to the captured stderr, `lines()` reads its `app.webhooks`
    JSON lines. The app is built inside the test: capsys replaces its stream between setup and call, and
    runtime.logs binds its handler to the stream of the moment."""

    def start(connection=redis):
        client = create_app(config, redis=connection).test_client()
        capsys.readouterr()
        return client

    def lines() -> list[dict]:
        entries = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        return [entry for entry in entries if entry["logger"] == "app.webhooks"]

    return start, lines


def test_log_line_for_a_queued_event(logged):
    start, lines = logged
    client = start()
    name = "sandbox_inquiry_approved.json"
    body = encode(load_fixture(name))
    sent = headers(body, **{"Persona-Webhook-Attempts-Made": "3"})
    client.post(WEBHOOK, data=body, headers=sent)
    (line,) = lines()
    assert line["event_id"] == "evt_pSXHZmSpjEBpstmv4xwKR9m1Q3yX"
    assert line["event_name"] == "inquiry.approved"
    assert (line["outcome"], line["status"], line["attempts_made"]) == ("queued", 200, 3)
    assert isinstance(line["duration_ms"], (int, float)) and line["duration_ms"] >= 0
    text = json.dumps(line)
    for secret in [*personal_values(load_fixture(name)), sent["Persona-Signature"][-64:], SECRET]:
        assert secret not in text


@pytest.mark.parametrize(
    "send, outcome, reason",
    [
        (lambda c: post(c, BODY, secret="wbhsec_wrong"), "invalid_signature", "mismatch"),
        (lambda c: post_unsigned(c, BODY), "invalid_signature", "missing"),
        (lambda c: post(c, b"[]"), "invalid_envelope", None),
        (lambda c: post(c, encode(envelope(name="account.created"))), "ignored", None),
    ],
    ids=["wrong-secret", "unsigned", "not-an-envelope", "ignored"],
)
def test_log_line_for_other_outcomes(logged, send, outcome, reason):
    start, lines = logged
    response = send(start())
    (line,) = lines()
    assert (line["outcome"], line["status"], line.get("reason")) == (outcome, response.status_code, reason)
    assert SECRET not in json.dumps(line)


def test_log_line_for_redis_down(logged, server):
    start, lines = logged
    client = start(fakeredis.FakeRedis(server=server))
    server.connected = False
    post(client, BODY)
    (line,) = lines()
    assert (line["outcome"], line["status"], line["reason"]) == ("queue_unavailable", 503, "ConnectionError")


@pytest.mark.parametrize("value", ["", "abc", "-1", "1234567", "\u00b2", "\u00b9\u00b3"])
def test_attempts_made_is_logged_only_when_a_plain_number(logged, value):
    start, lines = logged
    response = post(start(), BODY, **{"Persona-Webhook-Attempts-Made": value})
    assert response.status_code == 200
    (line,) = lines()
    assert "attempts_made" not in line


# --- what the web accepts, the worker can apply (issue 9) ------------------------------------------------

OBJECT_CREATED_AT = "data.attributes.payload.data.attributes.created_at"


def inquiry(**attributes) -> dict:
    return envelope(attributes={"status": "approved", "reference-id": "u_1", **attributes})


@pytest.mark.parametrize(
    "created_at",
    ["2016-12-31T23:59:60Z", "NaN", "2024-13-01T00:00:00Z", "0001-01-01T00:30:00+01:00", "2024-07-08 14:28:41Z"],
    ids=["leap-second", "nan", "month-13", "overflows-utc", "not-rfc3339"],
)
@pytest.mark.parametrize("casing", CASINGS)
def test_object_created_at_the_worker_cannot_parse_is_400_naming_it(client, redis, config, created_at, casing):
    body = encode(recase(inquiry(**{"created-at": created_at}), casing))
    assert assert_error(post(client, body), 400, "invalid_envelope")["detail"].startswith(OBJECT_CREATED_AT + ": ")
    assert_nothing_queued(redis, config)


def test_object_times_are_queued_in_canonical_form_and_unusable_ones_other_than_created_at_dropped(client, redis):
    times = {
        "created-at": "2024-07-08T16:28:41.5+02:00",
        "completed-at": "2024-07-08T14:29:21Z",
        "failed-at": "NaN",
        "expired-at": "2016-12-31T23:59:60Z",
        "decisioned-at": "0001-01-01T00:30:00+01:00",
    }
    assert post(client, encode(inquiry(**times))).json["status"] == "queued"
    assert queued_event(redis, "evt_test_1")["timestamps"] == {
        "created_at": "2024-07-08T14:28:41.500Z",
        "completed_at": "2024-07-08T14:29:21.000Z",
    }


KEPT = [
    ("data.id", lambda doc, v: doc["data"].update(id=v)),
    ("data.attributes.payload.data.id", lambda doc, v: doc["data"]["attributes"]["payload"]["data"].update(id=v)),
    (
        "data.attributes.payload.data.attributes.reference-id",
        lambda doc, v: obj_attributes(doc).update({"reference-id": v}),
    ),
    ("data.attributes.payload.data.attributes.status", lambda doc, v: obj_attributes(doc).update(status=v)),
    (
        "data.attributes.payload.data.relationships.account.data.id",
        lambda doc, v: doc["data"]["attributes"]["payload"]["data"].update(
            relationships={"account": {"data": {"id": v}}}
        ),
    ),
    (
        "data.attributes.payload.data.attributes.checks.0.name",
        lambda doc, v: obj_attributes(doc).update(checks=[{"name": v}]),
    ),
]


def obj_attributes(doc: dict) -> dict:
    return doc["data"]["attributes"]["payload"]["data"]["attributes"]


@pytest.mark.parametrize("field, put", KEPT, ids=[field for field, _ in KEPT])
@pytest.mark.parametrize(
    "value", ["x" * 256, "id_\x00", "id_\x1f", "id_\ud800"], ids=["256-long", "nul", "control", "surrogate"]
)
def test_a_kept_id_the_database_cannot_store_is_400_naming_it(client, redis, config, field, put, value):
    """PostgreSQL refuses VARCHAR(255) overflow and NUL (SQLite takes both): refused at the edge, not by the worker."""
    document = inquiry()
    put(document, value)
    detail = assert_error(post(client, encode(document)), 400, "invalid_envelope")["detail"]
    assert detail.startswith(field.replace("-", "_") + ": ")
    assert_nothing_queued(redis, config)


def test_a_255_character_unicode_id_is_queued(client, redis):
    reference_id = "\U0001f600" * 255  # 255 characters, 1020 bytes: the column counts characters
    assert post(client, encode(inquiry(**{"reference-id": reference_id}))).json["status"] == "queued"
    assert queued_event(redis, "evt_test_1")["reference_id"] == reference_id


@pytest.mark.parametrize("attribute", ["name-first", "birthdate", "address-street-1"])
def test_a_lone_surrogate_in_dropped_personal_data_does_not_cost_the_event(client, redis, attribute):
    body = encode(inquiry(**{attribute: "Jane\ud800", "name-last": "\udfff"}))
    assert b"\\ud800" in body
    assert post(client, body).json["status"] == "queued"
    event = queued_event(redis, "evt_test_1")
    assert "\ud800" not in json.dumps(event, ensure_ascii=False) and event["reference_id"] == "u_1"


def test_a_huge_integer_in_dropped_data_does_not_cost_the_event(client, redis):
    """Python converts at most 4300 digits to an int; the tester's 5000-digit `name-first` was a 400."""
    body = encode(inquiry(**{"name-first": 0})).replace(b'"name-first": 0', b'"name-first": ' + b"7" * 5000)
    assert b"7" * 5000 in body
    assert post(client, body).json["status"] == "queued"
    assert queued_event(redis, "evt_test_1")["reference_id"] == "u_1"
    assert_error(post(client, b"1" * 5000), 400, "invalid_envelope")  # JSON, but no envelope


JSON_ORJSON_REFUSES = {
    "bom": lambda body: b"\xef\xbb\xbf" + body,
    "nan": lambda body: body.replace(b'"name-first": 0', b'"name-first": NaN'),
    "infinity": lambda body: body.replace(b'"name-first": 0', b'"name-first": -Infinity'),
    "overflowing-float": lambda body: body.replace(b'"name-first": 0', b'"name-first": 1e400'),
    "lone-surrogate": lambda body: body.replace(b'"name-first": 0', b'"name-first": "\\udfff"'),
}


@pytest.mark.parametrize("edit", JSON_ORJSON_REFUSES.values(), ids=JSON_ORJSON_REFUSES.keys())
def test_json_that_orjson_refuses_is_read_as_json_reads_it(client, redis, edit):
    """orjson reads the body first; what it refuses and json takes is still an event (json decides)."""
    body = edit(encode(inquiry(**{"name-first": 0})))
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)
    assert post(client, body).json["status"] == "queued"
    assert queued_event(redis, "evt_test_1")["reference_id"] == "u_1"


@pytest.mark.parametrize(
    "text",
    ['{"a": 1}', '[1, 2.5, "x", null, true]', '{"a": {"b": [{"c": "\\u00e9\\ud83d\\ude00"}]}}', '"s"', "-0", "1E2"],
)
def test_parse_json_reads_with_orjson_what_json_reads_alike(text, monkeypatch):
    expected = json.loads(text)
    monkeypatch.setattr(json, "loads", None)  # orjson alone
    assert webhooks.parse_json(text.encode()) == expected


def test_parse_json_reads_an_integer_beyond_64_bits_as_a_number_either_way():
    """orjson reads it as a float, json as an int: both are numbers, and no kept field is one."""
    assert webhooks.parse_json(b'{"n": 123456789012345678901234567890}')["n"] == pytest.approx(1.2345678901e29)


@pytest.mark.parametrize("body", [b"not json", b'{"a": 1} x', b'{"a": "\x01"}', b'{"a": "\xff"}', b"", b"[" * 5000])
def test_parse_json_refuses_what_json_refuses(body):
    with pytest.raises((ValueError, RecursionError)):
        webhooks.parse_json(body)


def test_a_lone_surrogate_in_a_kept_field_is_400_naming_it(client, redis, config):
    detail = assert_error(post(client, encode(inquiry(**{"reference-id": "u_\ud800"}))), 400, "invalid_envelope")[
        "detail"
    ]
    assert detail.startswith("data.attributes.payload.data.attributes.reference_id: ")
    assert_nothing_queued(redis, config)


def test_an_unknown_status_is_queued_for_the_log(client, redis):
    assert post(client, encode(inquiry(status="some_status_persona_adds_later"))).json["status"] == "queued"
    assert queued_event(redis, "evt_test_1")["status"] == "some_status_persona_adds_later"


@pytest.mark.parametrize("year", [1999, 2101])
def test_event_created_at_outside_the_year_range_is_400(client, year):
    response = post(client, encode(envelope(created_at=f"{year}-07-08T14:29:24.297Z")))
    assert assert_error(response, 400, "invalid_envelope")["detail"].startswith("data.attributes.created_at: ")


# --- bad framing: whatever the server's input stream raises is a 400 ------------------------------------------


class ParseException(Exception):
    """Like gunicorn.http.errors.ParseException (InvalidChunkSize, ChunkMissingTerminator): not an OSError."""


class FailingBody:
    """A WSGI input stream that delivers `data`, then raises `error`, as gunicorn's does on a broken chunk."""

    def __init__(self, data: bytes, error: Exception):
        self.data, self.error = data, error

    def read(self, size: int = -1) -> bytes:
        if self.data:
            chunk, self.data = self.data[:size], self.data[size:]
            return chunk
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        ParseException("Invalid chunk size: b'zz'"),
        OSError("No more data"),
        TimeoutError("request body not received in time"),
        ValueError("bad chunk"),
    ],
    ids=["parse-exception", "no-more-data", "timeout", "value-error"],
)
def test_a_body_the_server_cannot_read_is_400_logged_and_counted(logged, redis, config, error):
    start, lines = logged
    client = start()
    before = REGISTRY.get_sample_value("persona_webhooks_total", {"outcome": "invalid_body"}) or 0.0
    response = post_chunked(client, FailingBody(b'{"data": ', error))
    assert_error(response, 400, "invalid_body")
    (line,) = lines()
    assert (line["outcome"], line["status"], line["reason"]) == ("invalid_body", 400, type(error).__name__)
    if metrics.MULTIPROC_DIR is None:
        assert REGISTRY.get_sample_value("persona_webhooks_total", {"outcome": "invalid_body"}) == before + 1
    assert_nothing_queued(redis, config)


def test_a_body_shorter_than_its_content_length_is_400(make_client):
    """werkzeug's stream raises ClientDisconnected (an HTTPException) when the client goes away early."""
    response = make_client().post(
        WEBHOOK,
        headers={"Content-Type": "application/json"},
        environ_overrides={"wsgi.input": Body(b'{"data": '), "CONTENT_LENGTH": "500"},
    )
    assert_error(response, 400, "invalid_body")


def test_a_body_cut_short_of_its_content_length_is_400_when_the_server_hands_it_over_quietly(make_client):
    """gunicorn terminates the input (`wsgi.input_terminated`) and returns what came before the client stopped."""
    response = make_client().post(
        WEBHOOK,
        headers={"Content-Type": "application/json"},
        environ_overrides={"wsgi.input": Body(b'{"data": '), "CONTENT_LENGTH": "500", "wsgi.input_terminated": True},
    )
    assert assert_error(response, 400, "invalid_body")["detail"] == "the request body ended after 9 of its 500 bytes"
