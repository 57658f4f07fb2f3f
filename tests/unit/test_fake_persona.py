"""The fake Persona API (scripts/fake_persona.py): paging, ordering, auth, injected failures, control API."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from scripts.fake_persona import DEFAULT_API_KEY, FakeConfig, FakeState, create_fake_app
from tests.payloads import envelope, recase
from tests.servers import serve

AUTH = {"Authorization": f"Bearer {DEFAULT_API_KEY}", "Persona-Version": "2023-01-05"}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def make_client():
    def make(**switches):
        return create_fake_app(FakeState(FakeConfig(**switches))).test_client()

    return make


@pytest.fixture
def client(make_client):
    return make_client()


def event(event_id: str, created_at: str, casing: str = "kebab") -> dict:
    return recase(envelope(event_id=event_id, created_at=created_at), casing)


def store(client, *documents) -> None:
    response = client.post("/_control/events", json=list(documents))
    assert response.status_code == 200, response.get_json()


def ids(response) -> list[str]:
    return [resource["id"] for resource in response.get_json()["data"]]


def test_events_are_listed_newest_first_then_by_id_desc_whatever_their_casing(client):
    store(
        client,
        event("evt_a", "2024-01-01T00:00:01.000Z", "camel"),
        event("evt_b", "2024-01-01T00:00:03.000Z", "snake"),
        event("evt_c", "2024-01-01T00:00:02.000Z"),
        event("evt_d", "2024-01-01T00:00:02.000Z", "camel"),
        event("evt_e", "2024-01-01T01:00:02.000+01:00"),  # the same instant as c and d
    )
    response = client.get("/api/v1/events", headers=AUTH)
    assert response.status_code == 200
    assert ids(response) == ["evt_b", "evt_e", "evt_d", "evt_c", "evt_a"]
    assert response.get_json()["links"] == {"prev": None, "next": None}


def test_paging_follows_next_links_to_the_end(client):
    store(client, *(event(f"evt_{n}", f"2024-01-01T00:00:0{n}.000Z") for n in range(5)))
    first = client.get("/api/v1/events?page[size]=2", headers=AUTH)
    assert ids(first) == ["evt_4", "evt_3"]
    assert first.get_json()["links"]["next"] == "/api/v1/events?page[after]=evt_3&page[size]=2"

    second = client.get(first.get_json()["links"]["next"], headers=AUTH)
    assert ids(second) == ["evt_2", "evt_1"]
    third = client.get(second.get_json()["links"]["next"], headers=AUTH)
    assert ids(third) == ["evt_0"] and third.get_json()["links"]["next"] is None


def test_default_page_size_is_ten(client):
    store(client, *(event(f"evt_{n:02}", f"2024-01-01T00:00:{n:02}.000Z") for n in range(12)))
    assert len(ids(client.get("/api/v1/events", headers=AUTH))) == 10


@pytest.mark.parametrize("query", ["page[size]=0", "page[size]=101", "page[size]=x", "page[after]=evt_unknown"])
def test_bad_paging_is_a_jsonapi_400(client, query):
    store(client, event("evt_1", "2024-01-01T00:00:00.000Z"))
    response = client.get(f"/api/v1/events?{query}", headers=AUTH)
    assert response.status_code == 400
    assert response.get_json()["errors"][0]["title"] == "Bad Request"


def test_get_event_and_inquiry_answer_the_stored_documents(client):
    document = event("evt_1", "2024-01-01T00:00:00.000Z", "snake")
    store(client, document)
    inquiry = {"data": {"type": "inquiry", "id": "inq_1", "attributes": {"status": "approved"}}, "included": []}
    assert client.post("/_control/inquiries", json=[inquiry]).status_code == 200

    assert client.get("/api/v1/events/evt_1", headers=AUTH).get_json() == document
    assert client.get("/api/v1/inquiries/inq_1", headers=AUTH).get_json() == inquiry
    for path in ("/api/v1/events/evt_2", "/api/v1/inquiries/inq_2"):
        missing = client.get(path, headers=AUTH)
        assert missing.status_code == 404 and missing.get_json() == {"errors": [{"title": "Record not found"}]}


def test_storing_an_id_again_replaces_it(client):
    store(client, event("evt_1", "2024-01-01T00:00:00.000Z"))
    store(client, event("evt_1", "2024-02-01T00:00:00.000Z"))
    listed = client.get("/api/v1/events", headers=AUTH).get_json()["data"]
    assert [(e["id"], e["attributes"]["created-at"]) for e in listed] == [("evt_1", "2024-02-01T00:00:00.000Z")]


@pytest.mark.parametrize(
    "body",
    [{"data": {}}, [{"data": {"id": "evt_1", "attributes": {}}}], [{"data": {"id": "evt_1",
     "attributes": {"created-at": "yesterday"}}}], [{"data": {"id": "evt_1", "attributes":
     {"created-at": "2024-01-01T00:00:00"}}}], [{"nodata": 1}]],
)  # fmt: skip
def test_bad_event_documents_are_400_and_store_nothing(client, body):
    good = event("evt_0", "2024-01-01T00:00:00.000Z")
    response = client.post("/_control/events", json=[good, *body] if isinstance(body, list) else body)
    assert response.status_code == 400 and "errors" in response.get_json()
    assert client.get("/api/v1/events", headers=AUTH).get_json()["data"] == []


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": DEFAULT_API_KEY}])
@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/events/evt_1", "/api/v1/inquiries/inq_1"])
def test_requests_without_the_bearer_key_are_401(client, headers, path):
    response = client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["errors"][0]["title"] == "Unauthorized"


def test_configured_api_key(make_client):
    client = make_client(api_key="k2")
    assert client.get("/api/v1/events", headers=AUTH).status_code == 401
    assert client.get("/api/v1/events", headers={"Authorization": "Bearer k2"}).status_code == 200


def test_calls_record_version_query_and_status(client):
    client.get("/api/v1/events?page[size]=3", headers=AUTH)
    client.get("/api/v1/events/evt_x", headers={"Authorization": AUTH["Authorization"]})
    assert client.get("/_control/calls").get_json() == [
        {"method": "GET", "path": "/api/v1/events", "query": {"page[size]": "3"}, "status": 200,
         "persona_version": "2023-01-05"},
        {"method": "GET", "path": "/api/v1/events/evt_x", "query": {}, "status": 404, "persona_version": None},
    ]  # fmt: skip


def test_fail_next_answers_in_order_and_429_carries_ratelimit_reset(client):
    client.post("/_control/config", json={"fail_next": [500, 429, 503], "reset_seconds": 7})
    answers = [client.get("/api/v1/events", headers=AUTH) for _ in range(4)]
    assert [answer.status_code for answer in answers] == [500, 429, 503, 200]
    assert answers[1].headers["ratelimit-reset"] == "7"
    assert "ratelimit-reset" not in answers[0].headers
    assert answers[0].get_json() == {"errors": [{"title": "Internal Server Error"}]}
    assert client.get("/_control/config").get_json()["fail_next"] == []


def test_429_without_reset_seconds_has_no_header(make_client):
    client = make_client(fail_rate_429=1.0, reset_seconds=None)
    response = client.get("/api/v1/events", headers=AUTH)
    assert response.status_code == 429 and "ratelimit-reset" not in response.headers


def test_fail_rates_are_reproducible_with_a_seed(make_client):
    def statuses(client):
        return [client.get("/api/v1/events", headers=AUTH).status_code for _ in range(40)]

    first = statuses(make_client(fail_rate_500=0.3, fail_rate_429=0.3, seed=7))
    assert statuses(make_client(fail_rate_500=0.3, fail_rate_429=0.3, seed=7)) == first
    assert set(first) == {200, 429, 500}


def test_unauthorized_requests_do_not_use_fail_next(client):
    client.post("/_control/config", json={"fail_next": [500]})
    assert client.get("/api/v1/events").status_code == 401
    assert client.get("/api/v1/events", headers=AUTH).status_code == 500


def test_reset_forgets_everything_and_restores_the_starting_switches(make_client):
    client = make_client(api_key="start")
    store(client, event("evt_1", "2024-01-01T00:00:00.000Z"))
    client.post("/_control/inquiries", json=[{"data": {"type": "inquiry", "id": "inq_1"}}])
    client.post("/_control/config", json={"api_key": "other", "fail_next": [500]})
    client.get("/api/v1/events", headers={"Authorization": "Bearer other"})

    assert client.post("/_control/reset").status_code == 200
    key = {"Authorization": "Bearer start"}
    assert client.get("/_control/calls").get_json() == []
    assert client.get("/_control/config").get_json()["fail_next"] == []
    assert client.get("/api/v1/events", headers=key).get_json()["data"] == []
    assert client.get("/api/v1/inquiries/inq_1", headers=key).status_code == 404


@pytest.mark.parametrize(
    "body",
    [{"fail_rate_500": 1.5}, {"fail_next": [42]}, {"fail_next": 500}, {"reset_seconds": -1},
     {"reset_seconds": "1"}, {"api_key": ""}, {"seed": "x"}, {"unknown": 1}, {}, [1]],
)  # fmt: skip
def test_bad_config_is_400_and_changes_nothing(client, body):
    before = client.get("/_control/config").get_json()
    response = client.post("/_control/config", json=body)
    assert response.status_code == 400 and "errors" in response.get_json()
    assert client.get("/_control/config").get_json() == before


def test_unknown_routes_answer_jsonapi_errors(client):
    response = client.get("/api/v1/nowhere", headers=AUTH)
    assert response.status_code == 404 and response.get_json() == {"errors": [{"title": "Not Found"}]}


def test_cli_serves_real_http():
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.fake_persona", "--port", "0", "--api-key", "cli-key"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        match = re.search(r"http://127\.0\.0\.1:\d+", process.stdout.readline())
        assert match, "no URL in the ready line"
        base = match.group(0)
        deadline = time.monotonic() + 10
        while True:
            try:
                response = requests.get(f"{base}/api/v1/events", headers={"Authorization": "Bearer cli-key"}, timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "fake Persona did not answer"
                time.sleep(0.05)
        assert response.status_code == 200 and response.json() == {"data": [], "links": {"prev": None, "next": None}}
        assert requests.get(f"{base}/api/v1/events", timeout=2).status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


# --- an id is one segment of the path as sent --------------------------------------------------------------

ODD_IDS = ["a/b", "/", "..", ".", "a?b#c", "50%", "%2F", "two words", "ünï"]


def _encoded(object_id: str) -> str:
    encoded = quote(object_id, safe="")
    return "%2E" * len(encoded) if encoded.strip(".") == "" else encoded


@pytest.mark.parametrize("object_id", ODD_IDS)
def test_an_encoded_id_is_one_decoded_segment(client, object_id):
    store(client, event(object_id, "2024-01-01T00:00:01.000Z"))
    client.post("/_control/inquiries", json=[{"data": {"type": "inquiry", "id": object_id}, "included": []}])
    for collection in ("events", "inquiries"):
        response = client.get(f"/api/v1/{collection}/{_encoded(object_id)}", headers=AUTH)
        assert response.status_code == 200 and response.get_json()["data"]["id"] == object_id
    assert [(c["path"], c["query"]) for c in client.get("/_control/calls").get_json()] == [
        (f"/api/v1/events/{_encoded(object_id)}", {}),
        (f"/api/v1/inquiries/{_encoded(object_id)}", {}),
    ]


def test_an_encoded_slash_is_not_a_separator(client):
    store(client, event("a/b", "2024-01-01T00:00:01.000Z"))
    assert client.get("/api/v1/events/a%2Fb", headers=AUTH).status_code == 200
    assert client.get("/api/v1/events/a/b", headers=AUTH).status_code == 404  # two segments: no such route


def test_over_real_http_a_dot_dot_id_stays_the_id():
    """The werkzeug server decodes PATH_INFO; the fake must still see the request line's segments."""
    with serve(create_fake_app()) as url:
        requests.post(
            f"{url}/_control/events", json=[event("..", "2024-01-01T00:00:01.000Z")], timeout=5
        ).raise_for_status()
        connection = HTTPConnection(url.removeprefix("http://"), timeout=5)
        connection.request("GET", "/api/v1/events/%2E%2E", headers=AUTH)
        response = connection.getresponse()
        assert response.status == 200 and json.loads(response.read())["data"]["id"] == ".."
        connection.close()


# --- the inquiry writes the gate uses (issue 13) ---


def _create(client, template="itmpl_kyc", reference_id="u_1", key=None):
    headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"} | ({"Idempotency-Key": key} if key else {})
    body = {"data": {"attributes": {"inquiry-template-id": template, "reference-id": reference_id}}}
    return client.post("/api/v1/inquiries", json=body, headers=headers)


def test_a_create_makes_a_created_inquiry_and_a_retry_with_its_key_gets_it_again():
    client = create_fake_app().test_client()
    first = _create(client, key="k1")
    assert first.status_code == 201
    inquiry = first.get_json()["data"]
    assert (inquiry["attributes"]["status"], inquiry["attributes"]["reference-id"]) == ("created", "u_1")
    assert inquiry["relationships"]["inquiry-template"]["data"]["id"] == "itmpl_kyc"
    again = _create(client, key="k1")
    assert (again.status_code, again.get_json()["data"]["id"]) == (200, inquiry["id"])
    assert _create(client, key="k2").get_json()["data"]["id"] != inquiry["id"]


def test_a_create_for_a_template_persona_does_not_know_is_refused():
    state = FakeState()
    state.config.unknown_templates = ["itmpl_gone"]
    client = create_fake_app(state).test_client()
    assert _create(client, template="itmpl_gone").status_code == 404
    assert _create(client, template="not-a-template").status_code == 422


def test_resume_gives_a_session_token_and_a_link_only_while_the_inquiry_is_open():
    state = FakeState()
    client = create_fake_app(state).test_client()
    inquiry_id = _create(client).get_json()["data"]["id"]
    auth = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
    resumed = client.post(f"/api/v1/inquiries/{inquiry_id}/resume", headers=auth)
    assert resumed.status_code == 200 and resumed.get_json()["meta"]["session-token"].startswith("sess_")
    link = client.post(f"/api/v1/inquiries/{inquiry_id}/generate-one-time-link", headers=auth)
    assert link.get_json()["meta"]["one-time-link"].startswith("https://withpersona.com/verify?code=")
    state.inquiries[inquiry_id]["data"]["attributes"]["status"] = "expired"
    assert client.post(f"/api/v1/inquiries/{inquiry_id}/generate-one-time-link", headers=auth).status_code == 422
    assert client.post(f"/api/v1/inquiries/{inquiry_id}/resume", headers=auth).status_code == 200
    assert state.inquiries[inquiry_id]["data"]["attributes"]["status"] == "pending"  # resumed: open again
    state.inquiries[inquiry_id]["data"]["attributes"]["status"] = "approved"
    assert client.post(f"/api/v1/inquiries/{inquiry_id}/resume", headers=auth).status_code == 422
