"""The fake Verisoul server (scripts/fake_verisoul.py): both flavors, auth, errors, rate limit, faults, control API."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from scripts import fake_verisoul
from scripts.fake_verisoul import DEFAULT_API_KEY, FakeConfig, FakeState, create_fake_app
from tests.servers import serve

KEY = {"x-api-key": DEFAULT_API_KEY}
ROOT = Path(__file__).resolve().parents[2]

# (method, path, json) for every API endpoint, on account "u1"
ENDPOINTS = [
    ("GET", "/account/u1", None),
    ("POST", "/account/u1/enroll", {"externalId": "user-1"}),
    ("POST", "/block/u1", None),
    ("POST", "/unblock/u1", None),
    ("GET", "/lists/account/u1", None),
    ("PUT", "/lists/account/u1", {"id": "u1", "metadata": {"persona_verified": True}}),
    ("POST", "/lists/list/block/account/u1", None),
    ("DELETE", "/lists/list/block/account/u1", None),
]


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make_client(clock):
    def make(**switches):
        state = FakeState(FakeConfig(**switches), clock=clock)
        return create_fake_app(state).test_client()

    return make


@pytest.fixture
def client(make_client):
    return make_client()


def call(client, method, path, json=None, headers=KEY):
    return client.open(path, method=method, json=json, headers=headers)


def accounts(client) -> dict:
    return client.get("/_control/accounts").get_json()


def test_account_flavor_enroll_block_unblock(client, clock):
    fresh = call(client, "GET", "/account/u1")
    assert fresh.status_code == 200
    assert fresh.get_json() == {
        "accountId": "u1",
        "numAccounts": 0,
        "isBlocked": False,
        "hasBlockedAccounts": False,
        "isEnrolled": False,
        "lastBlockedAt": None,
    }

    enroll = call(client, "POST", "/account/u1/enroll", {"externalId": "user-1"})
    assert enroll.status_code == 200 and enroll.get_json()["success"] is True
    assert call(client, "GET", "/account/u1").get_json()["isEnrolled"] is True

    assert call(client, "POST", "/block/u1").get_json() == {"success": True}
    blocked = call(client, "GET", "/account/u1").get_json()
    assert blocked["isBlocked"] is True
    assert blocked["lastBlockedAt"] == "2023-11-14T22:13:20.000Z"

    assert call(client, "POST", "/unblock/u1").get_json() == {"success": True}
    assert call(client, "GET", "/account/u1").get_json()["isBlocked"] is False

    state = accounts(client)["u1"]
    assert (state["enrolled"], state["externalId"], state["blocked"]) == (True, "user-1", False)
    assert (state["enroll_calls"], state["block_calls"], state["unblock_calls"]) == (1, 1, 1)


def test_lists_flavor_get_update_block_unblock(client):
    fresh = call(client, "GET", "/lists/account/u1")
    assert fresh.status_code == 200
    assert fresh.get_json() == {
        "account": {"id": "u1", "metadata": {}},
        "decision": "Real",
        "account_score": 0.1,
        "multiple_accounts": False,
        "accounts_linked": 0,
        "lists": [],
    }

    update = call(client, "PUT", "/lists/account/u1", {"id": "u1", "metadata": {"persona_verified": True}})
    assert update.status_code == 200 and update.get_json()["success"] is True

    block = call(client, "POST", "/lists/list/block/account/u1")
    assert block.status_code == 200
    assert set(block.get_json()) == {"request_id", "message", "success"} and block.get_json()["success"] is True
    assert call(client, "GET", "/lists/account/u1").get_json()["lists"] == ["block"]

    unblock = call(client, "DELETE", "/lists/list/block/account/u1")
    assert unblock.status_code == 200 and unblock.get_json()["success"] is True
    after = call(client, "GET", "/lists/account/u1").get_json()
    assert after["lists"] == [] and after["account"]["metadata"] == {"persona_verified": True}

    state = accounts(client)["u1"]
    assert (state["update_calls"], state["block_calls"], state["unblock_calls"]) == (1, 1, 1)


def test_put_merges_metadata(client):
    call(client, "PUT", "/lists/account/u1", {"id": "u1", "metadata": {"a": 1, "b": 1}})
    call(client, "PUT", "/lists/account/u1", {"id": "u1", "metadata": {"b": 2, "c": 3}})
    assert call(client, "GET", "/lists/account/u1").get_json()["account"]["metadata"] == {"a": 1, "b": 2, "c": 3}


@pytest.mark.parametrize(
    "path, body",
    [
        ("/account/u1/enroll", {}),
        ("/account/u1/enroll", {"externalId": ""}),
    ],
)
def test_enroll_without_external_id_is_a_400_that_creates_nothing(client, path, body):
    response = call(client, "POST", path, body)
    assert response.status_code == 400 and response.get_json()["statusCode"] == 400
    assert accounts(client) == {}


@pytest.mark.parametrize(
    "body", [{"id": "other", "metadata": {"a": 1}}, {"id": "u1"}, {"id": "u1", "metadata": [1]}, None]
)
def test_bad_put_is_a_400_that_changes_nothing(client, body):
    response = call(client, "PUT", "/lists/account/u1", body)
    assert response.status_code == 400 and response.get_json()["statusCode"] == 400
    assert accounts(client) == {}


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}])
@pytest.mark.parametrize("method, path, body", ENDPOINTS)
def test_requests_without_the_api_key_are_401(client, headers, method, path, body):
    response = call(client, method, path, body, headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {"statusCode": 401, "message": "Unauthorized"}
    assert accounts(client) == {}


def test_configured_api_key(make_client):
    client = make_client(api_key="k2")
    assert call(client, "GET", "/account/u1").status_code == 401
    assert call(client, "GET", "/account/u1", headers={"x-api-key": "k2"}).status_code == 200


@pytest.mark.parametrize("method, path, body", ENDPOINTS)
def test_unknown_account_is_400_when_auto_create_is_off(make_client, method, path, body):
    client = make_client(auto_create=False)
    response = call(client, method, path, body)
    assert response.status_code == 400
    assert response.get_json() == {"statusCode": 400, "message": "Account not found"}
    assert accounts(client) == {}

    assert client.post("/_control/accounts/u1", json={}).status_code == 200
    assert call(client, method, path, body).status_code == 200


def test_linked_account_counts_are_settable(client):
    set_num = client.post("/_control/accounts/u1", json={"numAccounts": 2})
    assert set_num.status_code == 200 and set_num.get_json()["numAccounts"] == 2
    assert call(client, "GET", "/account/u1").get_json()["numAccounts"] == 2
    lists_view = call(client, "GET", "/lists/account/u1").get_json()
    assert (lists_view["accounts_linked"], lists_view["multiple_accounts"]) == (2, True)

    client.post("/_control/accounts/u1", json={"accounts_linked": 0})
    assert call(client, "GET", "/account/u1").get_json()["numAccounts"] == 0


@pytest.mark.parametrize("body", [{"numAccounts": -1}, {"numAccounts": "2"}, {"other": 1},
                                  {"numAccounts": 1, "accounts_linked": 2}, [1]])  # fmt: skip
def test_bad_linkage_body_is_400(client, body):
    response = client.post("/_control/accounts/u1", json=body)
    assert response.status_code == 400 and response.get_json()["statusCode"] == 400
    assert accounts(client) == {}


def test_rate_limit_rejects_past_the_limit_until_the_window_passes(make_client, clock):
    client = make_client(rate_limit_per_minute=3)
    for _ in range(3):
        assert call(client, "GET", "/account/u1").status_code == 200
        clock.now += 1

    limited = call(client, "POST", "/block/u1")
    assert limited.status_code == 429
    assert limited.get_json() == {"statusCode": 429, "message": "Too Many Requests"}
    assert "Retry-After" not in limited.headers
    assert accounts(client)["u1"]["blocked"] is False

    clock.now += 56.5  # 59.5 s after the first request: still in its window
    assert call(client, "GET", "/account/u1").status_code == 429
    clock.now += 0.5  # the first request leaves the window, one slot frees
    assert call(client, "POST", "/block/u1").status_code == 200
    assert call(client, "GET", "/account/u1").status_code == 429
    clock.now += 60
    assert [call(client, "GET", "/account/u1").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_unauthorized_requests_do_not_use_the_rate_limit(make_client):
    client = make_client(rate_limit_per_minute=2)
    for _ in range(5):
        call(client, "GET", "/account/u1", headers={})
    assert [call(client, "GET", "/account/u1").status_code for _ in range(3)] == [200, 200, 429]


def test_fail_next_answers_in_order_without_changing_state(client):
    client.post("/_control/config", json={"fail_next": [500, 429, 503]})
    statuses = [call(client, "POST", "/block/u1").status_code for _ in range(4)]
    assert statuses == [500, 429, 503, 200]
    assert accounts(client)["u1"]["block_calls"] == 1
    assert client.get("/_control/config").get_json()["fail_next"] == []


def test_fail_next_body_has_the_error_shape(client):
    client.post("/_control/config", json={"fail_next": [500]})
    response = call(client, "POST", "/account/u1/enroll", {"externalId": "x"})
    assert response.get_json() == {"statusCode": 500, "message": "Internal Server Error"}
    assert accounts(client) == {}


@pytest.mark.parametrize("switch, status", [("fail_rate_500", 500), ("fail_rate_429", 429)])
@pytest.mark.parametrize("method, path, body", ENDPOINTS)
def test_fail_rates_fail_without_changing_state(make_client, switch, status, method, path, body):
    client = make_client(**{switch: 1.0})
    assert call(client, method, path, body).status_code == status
    assert accounts(client) == {}


def test_fail_rates_are_reproducible_with_a_seed(make_client):
    def statuses(client):
        return [call(client, "POST", f"/block/u{i}").status_code for i in range(40)]

    first = statuses(make_client(fail_rate_500=0.3, fail_rate_429=0.3, seed=7))
    again = make_client(fail_rate_500=0.3, fail_rate_429=0.3, seed=7)
    assert statuses(again) == first
    assert set(first) == {200, 429, 500}
    created = sorted(int(account_id[1:]) for account_id in accounts(again))
    assert created == [i for i, status in enumerate(first) if status == 200]


def test_setting_the_seed_reseeds(client):
    client.post("/_control/config", json={"fail_rate_500": 0.5, "seed": 3})
    first = [call(client, "GET", "/account/u1").status_code for _ in range(20)]
    client.post("/_control/config", json={"seed": 3})
    assert [call(client, "GET", "/account/u1").status_code for _ in range(20)] == first


def test_delay_sleeps_before_answering(client, monkeypatch):
    slept = []
    monkeypatch.setattr(fake_verisoul.time, "sleep", slept.append)
    client.post("/_control/config", json={"delay_seconds": 1.5})
    assert call(client, "GET", "/account/u1").status_code == 200
    assert slept == [1.5]


def test_calls_log_records_every_api_request_in_order(client, clock):
    call(client, "POST", "/account/u1/enroll", {"externalId": "user-1"})
    call(client, "GET", "/account/u2", headers={})
    clock.now += 5
    call(client, "DELETE", "/lists/list/block/account/u3")
    client.get("/_control/accounts")  # control requests are not logged

    assert client.get("/_control/calls").get_json() == [
        {"method": "POST", "path": "/account/u1/enroll", "query": "", "flavor": "account", "action": "enroll",
         "account_id": "u1", "status": 200, "json": {"externalId": "user-1"}, "at": 1_700_000_000.0},
        {"method": "GET", "path": "/account/u2", "query": "", "flavor": "account", "action": "get",
         "account_id": "u2", "status": 401, "json": None, "at": 1_700_000_000.0},
        {"method": "DELETE", "path": "/lists/list/block/account/u3", "query": "", "flavor": "lists", "action": "unblock",
         "account_id": "u3", "status": 200, "json": None, "at": 1_700_000_005.0},
    ]  # fmt: skip


def test_reset_forgets_everything_and_restores_the_starting_switches(make_client):
    client = make_client(rate_limit_per_minute=2, api_key="start")
    key = {"x-api-key": "start"}
    call(client, "POST", "/block/u1", headers=key)
    client.post("/_control/config", json={"fail_next": [500], "auto_create": False})
    call(client, "GET", "/account/u1", headers=key)

    assert client.post("/_control/reset").status_code == 200
    assert accounts(client) == {} and client.get("/_control/calls").get_json() == []
    config = client.get("/_control/config").get_json()
    assert (config["fail_next"], config["auto_create"], config["api_key"]) == ([], True, "start")
    assert [call(client, "GET", "/account/u1", headers=key).status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.parametrize(
    "body",
    [
        {"fail_rate_500": 1.5},
        {"fail_rate_429": -0.1},
        {"delay_seconds": -1},
        {"fail_next": [42]},
        {"fail_next": 500},
        {"rate_limit_per_minute": 0},
        {"auto_create": "yes"},
        {"unknown": 1},
        {},
        [1],
    ],
)
def test_bad_config_is_400_and_changes_nothing(client, body):
    before = client.get("/_control/config").get_json()
    response = client.post("/_control/config", json=body)
    assert response.status_code == 400 and response.get_json()["statusCode"] == 400
    assert client.get("/_control/config").get_json() == before


def test_config_changes_apply(client):
    response = client.post("/_control/config", json={"rate_limit_per_minute": None, "fail_rate_429": 0.25})
    assert response.status_code == 200
    assert (response.get_json()["rate_limit_per_minute"], response.get_json()["fail_rate_429"]) == (None, 0.25)


def test_unknown_routes_answer_json(client):
    response = client.get("/nowhere", headers=KEY)
    assert response.status_code == 404 and response.get_json() == {"statusCode": 404, "message": "Not Found"}


def test_cli_serves_real_http(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "scripts.fake_verisoul", "--port", "0", "--api-key", "cli-key", "--seed", "1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match, f"no URL in {line!r}"
        base = match.group(0)
        deadline = time.monotonic() + 10
        while True:
            try:
                response = requests.get(f"{base}/account/u1", headers={"x-api-key": "cli-key"}, timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "fake Verisoul did not answer"
                time.sleep(0.05)
        assert response.status_code == 200 and response.json()["accountId"] == "u1"
        assert requests.get(f"{base}/lists/account/u1", timeout=2).status_code == 401
        assert requests.get(f"{base}/_control/calls", timeout=2).json()[0]["path"] == "/account/u1"
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


# --- an account id is one segment of the path as sent ------------------------------------------------------

ODD_IDS = ["a/b", "/", "..", ".", "a?b#c", "50%", "%2F", "two words", "ünï", "x/enroll"]


def _encoded(account_id: str) -> str:
    encoded = quote(account_id, safe="")
    return "%2E" * len(encoded) if encoded.strip(".") == "" else encoded


@pytest.mark.parametrize("account_id", ODD_IDS)
@pytest.mark.parametrize("method, path, body", ENDPOINTS)
def test_an_encoded_account_id_is_one_decoded_segment(client, method, path, body, account_id):
    raw_path = path.replace("u1", _encoded(account_id))
    body = {**body, "id": account_id} if body and "id" in body else body
    assert call(client, method, raw_path, body).status_code == 200
    [logged] = client.get("/_control/calls").get_json()
    assert (logged["path"], logged["query"], logged["account_id"]) == (raw_path, "", account_id)
    assert list(accounts(client)) == [account_id]


def test_an_encoded_slash_is_not_a_separator(client):
    assert call(client, "GET", "/account/a%2Fenroll").status_code == 200  # account "a/enroll", not an enroll
    assert call(client, "POST", "/account/a/b/enroll", {"externalId": "e"}).status_code == 404  # no such route
    assert [(c["action"], c["account_id"]) for c in client.get("/_control/calls").get_json()] == [("get", "a/enroll")]
    assert accounts(client)["a/enroll"]["enroll_calls"] == 0


def test_control_accounts_take_encoded_ids(client):
    assert client.post("/_control/accounts/a%2F%2E%2E", json={"numAccounts": 2}).status_code == 200
    assert call(client, "GET", "/account/a%2F%2E%2E").get_json()["numAccounts"] == 2


@pytest.mark.parametrize(
    "target, account_id",
    [("/account/%2E%2E/enroll", ".."), ("/account/%2E/enroll", "."), ("/account/a%2F%2E%2E%2Fb/enroll", "a/../b")],
)
def test_over_real_http_dots_and_slashes_stay_in_the_id(target, account_id):
    """The werkzeug server decodes PATH_INFO; the fake must still see the request line's segments."""
    with serve(create_fake_app()) as url:
        connection = HTTPConnection(url.removeprefix("http://"), timeout=5)
        connection.request(
            "POST", target, body=b'{"externalId": "e"}', headers={**KEY, "Content-Type": "application/json"}
        )
        assert connection.getresponse().status == 200
        connection.close()
        [logged] = requests.get(f"{url}/_control/calls", timeout=5).json()
    assert (logged["action"], logged["account_id"], logged["path"]) == ("enroll", account_id, target)
