"""No id can change the route or the query of a Verisoul or Persona call (issue 9).

The encoder (clients/urls.py) is checked on its own, then each client is driven over real HTTP against its fake,
whose call log records the raw path the request line carried and the id the fake decoded from one segment.
"""

from __future__ import annotations

import re
import socket
import threading
from urllib.parse import unquote

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings

from clients.persona import PersonaClient
from clients.urls import SendsUrlsAsBuilt, is_built, segment
from clients.verisoul import FLAVORS, Transport
from scripts import fake_persona, fake_verisoul
from tests.ids import DOTS_AND_SLASHES, EXAMPLES, reference_ids
from tests.servers import FakePersonaControl, serve

ENCODED_SEGMENT = re.compile(r"(?:[A-Za-z0-9_.~-]|%[0-9A-F]{2})+")
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# --- the encoder -----------------------------------------------------------------------------------------


@given(reference_ids())
@example("..")
@example(".")
@example("/")
def test_segment_is_one_segment_that_decodes_back(value):
    encoded = segment(value)
    assert ENCODED_SEGMENT.fullmatch(encoded), encoded
    assert unquote(encoded) == value
    assert encoded not in (".", "..")  # never a dot segment, whatever normalises it
    assert is_built(f"http://host/account/{encoded}/enroll")


@pytest.mark.parametrize(
    "value, encoded", [(".", "%2E"), ("..", "%2E%2E"), ("...", "%2E%2E%2E"), ("a.b", "a.b"), ("a/b", "a%2Fb")]
)
def test_dots_are_encoded_only_where_they_make_a_dot_segment(value, encoded):
    assert segment(value) == encoded


@pytest.mark.parametrize("value", ["", "\ud800", None, 7])
def test_what_no_segment_can_carry_is_refused(value):
    with pytest.raises(ValueError):
        segment(value)


# --- what requests puts on the wire ----------------------------------------------------------------------


class _Session(SendsUrlsAsBuilt, requests.Session):
    pass


@pytest.fixture
def request_lines():
    """A socket server that answers `{}` and records every request line; yields (base URL, lines)."""
    listener = socket.create_server(("127.0.0.1", 0))
    lines: list[str] = []

    def run():
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                lines.append(connection.recv(65536).split(b"\r\n", 1)[0].decode("latin-1"))
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", lines
    listener.close()


def test_requests_alone_would_collapse_an_encoded_dot_segment(request_lines):
    """Why SendsUrlsAsBuilt exists: requests decodes %2E after urllib3 removed dot segments."""
    base, lines = request_lines
    requests.get(f"{base}/account/%2E%2E/enroll", timeout=5)
    _Session().get(f"{base}/account/%2E%2E/enroll", timeout=5)
    assert lines == ["GET /account/../enroll HTTP/1.1", "GET /account/%2E%2E/enroll HTTP/1.1"]


def test_a_url_not_built_by_segment_is_left_to_requests(request_lines):
    base, lines = request_lines
    _Session().get(f"{base}/a b/é", timeout=5)
    _Session().get(f"{base}/x", params={"q": "1"}, timeout=5)
    assert lines == ["GET /a%20b/%C3%A9 HTTP/1.1", "GET /x?q=1 HTTP/1.1"]


# --- the clients against their fakes ---------------------------------------------------------------------

# operation → (method, route with {} for the id, the fake's action) per Verisoul flavor; the fake mounts lists under /lists
VERISOUL_ROUTES = {
    "account": {
        "get_account": ("GET", "/account/{}", "get"),
        "enroll": ("POST", "/account/{}/enroll", "enroll"),
        "block": ("POST", "/block/{}", "block"),
        "unblock": ("POST", "/unblock/{}", "unblock"),
    },
    "lists": {
        "get_account": ("GET", "/lists/account/{}", "get"),
        "enroll": ("PUT", "/lists/account/{}", "update"),
        "block": ("POST", "/lists/list/block/account/{}", "block"),
        "unblock": ("DELETE", "/lists/list/block/account/{}", "unblock"),
    },
}


@pytest.fixture(scope="module")
def verisoul_url():
    state = fake_verisoul.FakeState(fake_verisoul.FakeConfig(rate_limit_per_minute=None))
    with serve(fake_verisoul.create_fake_app(state)) as url:
        yield url


@pytest.fixture(scope="module")
def persona_url():
    with serve(fake_persona.create_fake_app()) as url:
        yield url


def _verisoul_calls(url: str) -> list[dict]:
    return requests.get(f"{url}/_control/calls", timeout=5).json()


def _run(client, operation: str, account_id: str):
    if operation == "enroll":
        return client.enroll(account_id, "inq_1")
    return getattr(client, operation)(account_id)


def _check_verisoul(url: str, account_id: str) -> None:
    """Every operation of both flavors reaches its own route, for this account and no other, with no query."""
    requests.post(f"{url}/_control/reset", timeout=5).raise_for_status()
    expected = []
    for flavor, routes in VERISOUL_ROUTES.items():
        base = url + ("/lists" if flavor == "lists" else "")
        client = FLAVORS[flavor](Transport(base, fake_verisoul.DEFAULT_API_KEY, sleep=lambda _: None))
        for operation, (method, route, action) in routes.items():
            _run(client, operation, account_id)
            expected.append((method, route.format(segment(account_id)), "", flavor, action, account_id, 200))
    seen = [
        (c["method"], c["path"], c["query"], c["flavor"], c["action"], c["account_id"], c["status"])
        for c in _verisoul_calls(url)
    ]
    assert seen == expected


@PROPERTY
@given(account_id=reference_ids())
def test_any_account_id_reaches_exactly_its_verisoul_route(verisoul_url, account_id):
    _check_verisoul(verisoul_url, account_id)


@pytest.mark.parametrize("account_id", DOTS_AND_SLASHES + EXAMPLES)
def test_dot_and_slash_account_ids_reach_their_verisoul_route(verisoul_url, account_id):
    """Issue 9: `..` enrolled nobody at `/account/enroll` and was recorded as enrolled."""
    _check_verisoul(verisoul_url, account_id)
    state = requests.get(f"{verisoul_url}/_control/accounts", timeout=5).json()
    assert list(state) == [account_id] and state[account_id]["enrolled"] and state[account_id]["blocked"] is False


def _check_persona(url: str, object_id: str) -> None:
    """get_event and get_inquiry ask for this id at their own route, and get that object back."""
    fake = FakePersonaControl(url)
    fake.reset()
    fake.store_events(
        {"data": {"type": "event", "id": object_id, "attributes": {"created-at": "2024-07-08T14:29:24.297Z"}}}
    )
    fake.store_inquiries({"data": {"type": "inquiry", "id": object_id, "attributes": {}}, "included": []})
    client = PersonaClient(url, fake_persona.DEFAULT_API_KEY, sleep=lambda _: None)
    assert client.get_event(object_id)["data"]["id"] == object_id
    assert client.get_inquiry(object_id)["data"]["id"] == object_id
    encoded = segment(object_id)
    assert [(c["path"], c["query"], c["status"]) for c in fake.calls()] == [
        (f"/api/v1/events/{encoded}", {}, 200),
        (f"/api/v1/inquiries/{encoded}", {}, 200),
    ]


@PROPERTY
@given(object_id=reference_ids())
def test_any_id_reaches_exactly_its_persona_route(persona_url, object_id):
    _check_persona(persona_url, object_id)


@pytest.mark.parametrize("object_id", DOTS_AND_SLASHES + EXAMPLES)
def test_dot_and_slash_ids_reach_their_persona_route(persona_url, object_id):
    _check_persona(persona_url, object_id)


def _check_persona_cursor(url: str, cursor_id: str) -> None:
    """Paging on from an event whose id is `cursor_id`: the id is one whole page[after] value."""
    fake = FakePersonaControl(url)
    fake.reset()
    stamp = "2024-07-08T14:29:2{}.000Z"
    fake.store_events(*({"data": {"type": "event", "id": event_id, "attributes": {"created-at": stamp.format(second)}}}
                        for event_id, second in ((cursor_id, 2), ("evt_older", 1))))  # fmt: skip
    client = PersonaClient(url, fake_persona.DEFAULT_API_KEY, sleep=lambda _: None)
    assert [document["data"]["id"] for document in client.list_events(page_size=1)] == [cursor_id, "evt_older"]
    assert [(c["path"], c["query"], c["status"]) for c in fake.calls()] == [
        ("/api/v1/events", {"page[size]": "1"}, 200),
        ("/api/v1/events", {"page[size]": "1", "page[after]": cursor_id}, 200),
    ]


@PROPERTY
@given(cursor_id=reference_ids().filter(lambda value: value != "evt_older"))
@example(cursor_id="a]&page[size]=100&x=[")
def test_any_event_id_is_one_whole_cursor_value(persona_url, cursor_id):
    _check_persona_cursor(persona_url, cursor_id)


@pytest.mark.parametrize("account_id", ["", "\ud800"])
def test_an_id_no_url_can_carry_makes_no_call(verisoul_url, account_id):
    """Refused before any request: an empty id would be `/account//enroll`, another route to many servers."""
    requests.post(f"{verisoul_url}/_control/reset", timeout=5).raise_for_status()
    client = FLAVORS["account"](Transport(verisoul_url, fake_verisoul.DEFAULT_API_KEY, sleep=lambda _: None))
    with pytest.raises(ValueError):
        client.enroll(account_id, "inq_1")
    assert _verisoul_calls(verisoul_url) == []


def test_reference_ids_strategy_reaches_the_tricky_cases():
    """The property tests are only as good as their ids: each kind must come up."""
    seen = {"dot segment": False, "slash": False, "query": False, "percent": False, "non-ascii": False}

    @settings(max_examples=300, deadline=None)
    @given(reference_ids())
    def collect(value):
        seen["dot segment"] |= value in (".", "..")
        seen["slash"] |= "/" in value
        seen["query"] |= "?" in value or "#" in value
        seen["percent"] |= "%" in value
        seen["non-ascii"] |= not value.isascii()

    collect()
    assert all(seen.values()), seen
