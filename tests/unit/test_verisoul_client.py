"""The Verisoul clients (clients/verisoul.py) against the fake Verisoul (scripts/fake_verisoul.py) over real HTTP."""

from __future__ import annotations

import contextlib
import socket

import pytest
import requests

from clients import verisoul
from clients.verisoul import (
    ATTEMPTS,
    BACKOFF_BASE,
    Account,
    AccountApi,
    ListsApi,
    Transport,
    VerisoulError,
    VerisoulUnavailable,
    make_client,
)
from scripts.fake_verisoul import DEFAULT_API_KEY, FakeConfig, FakeState, create_fake_app
from tests.servers import FLAVOR_PREFIX, serve

# (method, path) each operation must use on account "u1", per docs/verisoul.md (the fake mounts lists under /lists)
ROUTES = {
    "account": {
        "get_account": ("GET", "/account/u1"),
        "enroll": ("POST", "/account/u1/enroll"),
        "block": ("POST", "/block/u1"),
        "unblock": ("POST", "/unblock/u1"),
    },
    "lists": {
        "get_account": ("GET", "/lists/account/u1"),
        "enroll": ("PUT", "/lists/account/u1"),
        "block": ("POST", "/lists/list/block/account/u1"),
        "unblock": ("DELETE", "/lists/list/block/account/u1"),
    },
}
# the fake's per-account counter each state-changing operation bumps
COUNTERS = {
    "account": {"enroll": "enroll_calls", "block": "block_calls", "unblock": "unblock_calls"},
    "lists": {"enroll": "update_calls", "block": "block_calls", "unblock": "unblock_calls"},
}
flavors = pytest.mark.parametrize("flavor", ["account", "lists"])


def run(client, operation: str, account_id: str = "u1"):
    if operation == "enroll":
        return client.enroll(account_id, "inq_1")
    return getattr(client, operation)(account_id)


def summary(calls: list[dict]) -> list[tuple]:
    return [(call["method"], call["path"], call["status"]) for call in calls]


# --- routes, bodies and mapping ------------------------------------------------------------------------


@flavors
@pytest.mark.parametrize("operation", ["get_account", "enroll", "block", "unblock"])
def test_each_operation_hits_its_route_with_the_api_key(
    fake_verisoul, verisoul_client_for, recorder, flavor, operation
):
    run(verisoul_client_for(flavor), operation)
    method, path = ROUTES[flavor][operation]
    assert summary(fake_verisoul.calls()) == [(method, path, 200)]  # the fake answers 401 without the right x-api-key
    assert recorder.acquires == 1 and recorder.sleeps == []


@pytest.mark.parametrize(
    "flavor, body",
    [
        ("account", {"externalId": "u1"}),
        ("lists", {"id": "u1", "metadata": {"persona_verified": True, "persona_inquiry_id": "inq_1"}}),
    ],
)
def test_enroll_body(fake_verisoul, verisoul_client_for, flavor, body):
    verisoul_client_for(flavor).enroll("u1", "inq_1")
    assert [call["json"] for call in fake_verisoul.calls()] == [body]


def test_lists_enroll_records_the_verification_in_metadata(fake_verisoul, verisoul_client_for):
    answer = verisoul_client_for("lists").enroll("u1", "inq_1")
    assert answer["success"] is True
    assert fake_verisoul.account("u1")["metadata"] == {"persona_verified": True, "persona_inquiry_id": "inq_1"}


@flavors
def test_get_account_of_a_fresh_account(fake_verisoul, verisoul_client_for, flavor):
    assert verisoul_client_for(flavor).get_account("u1") == Account(enrolled=False, blocked=False, linked_accounts=0)


@flavors
def test_get_account_maps_enrolment_block_and_linked_accounts(fake_verisoul, verisoul_client_for, flavor):
    fake_verisoul.create_account("u1", linked=3)
    client = verisoul_client_for(flavor)
    client.enroll("u1", "inq_1")
    client.block("u1")
    assert client.get_account("u1") == Account(enrolled=True, blocked=True, linked_accounts=3)
    client.unblock("u1")
    assert client.get_account("u1") == Account(enrolled=True, blocked=False, linked_accounts=3)


def test_lists_flavor_reads_accounts_linked_and_the_block_list(fake_verisoul, verisoul_client_for):
    requests.post(f"{fake_verisoul.url}/_control/accounts/u1", json={"accounts_linked": 2}).raise_for_status()
    lists = verisoul_client_for("lists")
    lists.block("u1")  # the fake now answers lists: ["block"]
    assert lists.get_account("u1") == Account(enrolled=False, blocked=True, linked_accounts=2)


# --- errors that are final -----------------------------------------------------------------------------


@flavors
@pytest.mark.parametrize("operation", ["get_account", "enroll", "block", "unblock"])
def test_unknown_account_raises_with_verisouls_message(fake_verisoul, verisoul_client_for, recorder, flavor, operation):
    fake_verisoul.configure(auto_create=False)
    with pytest.raises(VerisoulError, match="Account not found") as raised:
        run(verisoul_client_for(flavor), operation)
    assert raised.value.status == 400
    assert [call["status"] for call in fake_verisoul.calls()] == [400]  # not retried
    assert recorder.sleeps == []


@flavors
def test_wrong_api_key_raises_401(fake_verisoul, verisoul_client_for, recorder, flavor):
    with pytest.raises(VerisoulError, match="Unauthorized") as raised:
        verisoul_client_for(flavor, api_key="not-the-key").block("u1")
    assert raised.value.status == 401
    assert len(fake_verisoul.calls()) == 1 and recorder.acquires == 1
    assert fake_verisoul.account("u1").get("blocked") is not True


@pytest.mark.parametrize("status, message", [(403, "Forbidden"), (404, "Not Found"), (409, "Conflict")])
def test_other_client_errors_are_not_retried(fake_verisoul, verisoul_client_for, recorder, status, message):
    fake_verisoul.configure(fail_next=[status])
    with pytest.raises(VerisoulError, match=message) as raised:
        verisoul_client_for("account").block("u1")
    assert raised.value.status == status
    assert len(fake_verisoul.calls()) == 1 and recorder.sleeps == []


# --- transient failures are retried --------------------------------------------------------------------


@flavors
@pytest.mark.parametrize("operation", ["enroll", "block", "unblock"])
@pytest.mark.parametrize("failures", [[500], [429], [408], [503]])
def test_transient_failures_are_retried_and_change_state_once(
    fake_verisoul, verisoul_client_for, recorder, flavor, operation, failures
):
    fake_verisoul.configure(fail_next=failures)
    run(verisoul_client_for(flavor), operation)
    assert [call["status"] for call in fake_verisoul.calls()] == [*failures, 200]
    assert fake_verisoul.account("u1")[COUNTERS[flavor][operation]] == 1
    assert recorder.acquires == len(failures) + 1
    assert len(recorder.sleeps) == len(failures)


@flavors
def test_persistent_500_gives_up_after_every_attempt(fake_verisoul, verisoul_client_for, recorder, flavor):
    fake_verisoul.configure(fail_rate_500=1.0)
    with pytest.raises(VerisoulUnavailable, match="HTTP 500"):
        verisoul_client_for(flavor).block("u1")
    assert [call["status"] for call in fake_verisoul.calls()] == [500] * ATTEMPTS
    assert recorder.acquires == ATTEMPTS and len(recorder.sleeps) == ATTEMPTS - 1
    assert fake_verisoul.account("u1").get("block_calls", 0) == 0


def test_acquire_comes_before_every_attempt_and_sleep_between_them(fake_verisoul, verisoul_client_for, recorder):
    fake_verisoul.configure(fail_next=[500])
    verisoul_client_for("account").block("u1")
    kinds = [event[0] for event in recorder.events]
    assert kinds == ["acquire", "sleep", "acquire"]


def test_acquire_is_called_before_each_request_reaches_verisoul(fake_verisoul, recorder):
    seen = []  # how many requests the fake had received whenever a slot was taken
    take_slot = lambda: seen.append(len(fake_verisoul.calls()))  # noqa: E731
    transport = Transport(fake_verisoul.url, DEFAULT_API_KEY, acquire=take_slot, sleep=recorder.sleep)
    fake_verisoul.configure(fail_next=[500])
    AccountApi(transport).block("u1")
    transport.session.close()
    assert seen == [0, 1]


@pytest.mark.parametrize("jitter, factor", [(0.0, 1.0), (0.999999, 1.5)])
def test_backoff_doubles_with_up_to_half_again_of_jitter(
    fake_verisoul, verisoul_client_for, recorder, monkeypatch, jitter, factor
):
    monkeypatch.setattr(verisoul.random, "random", lambda: jitter)
    fake_verisoul.configure(fail_rate_500=1.0)
    with pytest.raises(VerisoulUnavailable):
        verisoul_client_for("account").block("u1")
    expected = [BACKOFF_BASE * 2**n * factor for n in range(ATTEMPTS - 1)]
    assert recorder.sleeps == pytest.approx(expected, rel=1e-5)


def test_backoff_sleeps_grow_exponentially_with_real_jitter(fake_verisoul, verisoul_client_for, recorder):
    fake_verisoul.configure(fail_rate_500=1.0)
    with pytest.raises(VerisoulUnavailable):
        verisoul_client_for("lists").get_account("u1")
    for n, seconds in enumerate(recorder.sleeps):
        assert BACKOFF_BASE * 2**n <= seconds <= BACKOFF_BASE * 2**n * 1.5
    assert recorder.sleeps == sorted(recorder.sleeps) and len(recorder.sleeps) == ATTEMPTS - 1


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@flavors
def test_connection_refused_is_retried_then_unavailable(verisoul_client_for, recorder, flavor):
    client = verisoul_client_for(flavor, base_url=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(VerisoulUnavailable, match="ConnectionError"):
        client.get_account("u1")
    assert recorder.acquires == ATTEMPTS and len(recorder.sleeps) == ATTEMPTS - 1


def test_read_timeout_is_retried_then_unavailable(recorder, monkeypatch):
    monkeypatch.setattr(verisoul, "TIMEOUTS", (1, 0.05))
    with serve(
        create_fake_app(FakeState(FakeConfig(delay_seconds=0.5)))
    ) as url:  # its own server: late answers land there
        transport = Transport(url, DEFAULT_API_KEY, acquire=recorder.acquire, sleep=recorder.sleep)
        with pytest.raises(VerisoulUnavailable, match="ReadTimeout"):
            AccountApi(transport).get_account("u1")
        transport.session.close()
    assert recorder.acquires == ATTEMPTS


# --- account ids are quoted into the path --------------------------------------------------------------


@flavors
@pytest.mark.parametrize("operation", ["get_account", "enroll", "block", "unblock"])
def test_account_id_with_reserved_characters_round_trips(fake_verisoul, verisoul_client_for, flavor, operation):
    account_id = "user 1?x#y&z%41"
    run(verisoul_client_for(flavor), operation, account_id)
    assert [(call["account_id"], call["status"]) for call in fake_verisoul.calls()] == [(account_id, 200)]


@pytest.mark.parametrize(
    "flavor, operation, path",
    [
        ("account", "get_account", "/account/user%2F1%20x"),
        ("account", "enroll", "/account/user%2F1%20x/enroll"),
        ("account", "block", "/block/user%2F1%20x"),
        ("account", "unblock", "/unblock/user%2F1%20x"),
        ("lists", "get_account", "/lists/account/user%2F1%20x"),
        ("lists", "enroll", "/lists/account/user%2F1%20x"),
        ("lists", "block", "/lists/list/block/account/user%2F1%20x"),
        ("lists", "unblock", "/lists/list/block/account/user%2F1%20x"),
    ],
)
def test_slash_and_space_in_account_id_are_quoted_on_the_wire(
    fake_verisoul, verisoul_client_for, flavor, operation, path
):
    client = verisoul_client_for(flavor)
    sent = []
    client.transport.session.hooks["response"].append(lambda response, **kwargs: sent.append(response.request.path_url))
    # The fake's WSGI router sees %2F decoded and cannot route it (404); only the wire path matters here.
    with contextlib.suppress(VerisoulError):
        run(client, operation, "user/1 x")
    assert sent == [path]


# --- make_client ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavor, kind", [("account", AccountApi), ("lists", ListsApi)])
def test_make_client_picks_the_flavor_and_takes_a_slot_per_request(fake_verisoul, flavor, kind):
    slots = []
    client = make_client(fake_verisoul.url + FLAVOR_PREFIX[flavor], DEFAULT_API_KEY, flavor, lambda: slots.append(1))
    assert isinstance(client, kind)
    client.block("u1")
    client.transport.session.close()
    assert summary(fake_verisoul.calls()) == [(*ROUTES[flavor]["block"], 200)]
    assert slots == [1]


# Issue 9: a reference id of `.` or `..` sent calls to `/account/enroll`, `/v1/` etc. (the HTTP client
# collapsed the dot segments) and the user was recorded as enrolled; one with `/` reached another route.
SEGMENT_IDS = [".", "..", "...", "/", "a/b", "../enroll", "a/../b", "x/enroll", "?q=1", "#f", "100%", "a b", "ünï"]


@flavors
@pytest.mark.parametrize("operation", ["get_account", "enroll", "block", "unblock"])
@pytest.mark.parametrize("account_id", SEGMENT_IDS)
def test_every_account_id_is_one_segment_of_its_own_route(
    fake_verisoul, verisoul_client_for, flavor, operation, account_id
):
    run(verisoul_client_for(flavor), operation, account_id)
    action = {"get_account": "get", "enroll": "enroll" if flavor == "account" else "update"}.get(operation, operation)
    assert [(c["flavor"], c["action"], c["account_id"], c["status"]) for c in fake_verisoul.calls()] == [
        (flavor, action, account_id, 200)
    ]
    assert list(requests.get(f"{fake_verisoul.url}/_control/accounts").json()) == [account_id]
