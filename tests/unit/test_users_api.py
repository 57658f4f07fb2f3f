"""The users API: its guard (a bearer token compared in constant time, never open without one), and its route,
which reads any reference id the host chose (docs/contracts.md §3)."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from sqlalchemy import select

from app import create_app
from app.users import unstorable
from store.models import User
from tests.ids import EXAMPLES, reference_ids

TOKEN = "s3cret-token"


@pytest.fixture
def guarded(config, redis):
    return create_app(replace(config, admin_api_token=TOKEN), redis=redis).test_client()


def test_no_token_configured_disables_the_route(client):
    answer = client.get("/users/u_1", headers={"Authorization": "Bearer anything"})
    assert answer.status_code == 503
    assert answer.json["error"] == "admin_api_disabled"


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN],
)
def test_missing_or_wrong_token_is_401(guarded, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    answer = guarded.get("/users/u_1", headers=headers)
    assert answer.status_code == 401
    assert answer.json["error"] == "unauthorized"
    assert answer.headers["WWW-Authenticate"] == "Bearer"


def test_unknown_user_is_404(guarded):
    answer = guarded.get("/users/nobody", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 404
    assert answer.json["error"] == "user_not_found"


# --- any reference id can be read (issue 9: `/` in an id answered Flask's 404, raw or as %2F) --------------

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _add_user(app, reference_id: str) -> None:
    """A bare user row: the record's shape is tested elsewhere, the route is what matters here."""
    with app.extensions["database"].sessions() as session, session.begin():
        if session.scalar(select(User).where(User.reference_id == reference_id)) is None:
            session.add(User(reference_id=reference_id, created_at=datetime.now(UTC)))


def _encoded(reference_id: str) -> str:
    """How a careful host puts the id in the path: one segment, dots of a dot segment as %2E."""
    encoded = quote(reference_id, safe="")
    return "%2E" * len(encoded) if encoded.strip(".") == "" else encoded


def _raw_form(reference_id: str) -> str | None:
    """The id with its `/` left as separators, or None where no client could send that (a dot segment)."""
    if any(part in (".", "..") for part in reference_id.split("/")):
        return None
    return quote(reference_id, safe="/")


@pytest.fixture
def guarded_app(config, redis):
    return create_app(replace(config, admin_api_token=TOKEN), redis=redis)


def _read(app, path: str):
    answer = app.test_client().get(path, headers=AUTH)
    assert answer.status_code == 200, (path, answer.status_code, answer.get_data(as_text=True)[:200])
    return answer.json


@pytest.mark.parametrize("reference_id", EXAMPLES)
def test_a_reference_id_is_read_in_its_encoded_and_raw_forms(guarded_app, reference_id):
    _add_user(guarded_app, reference_id)
    _add_user(guarded_app, reference_id.split("/")[0] or "decoy")  # a prefix of the id is another user
    assert _read(guarded_app, f"/users/{_encoded(reference_id)}")["reference_id"] == reference_id
    raw = _raw_form(reference_id)
    if raw is not None:
        assert _read(guarded_app, f"/users/{raw}")["reference_id"] == reference_id


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reference_id=reference_ids().filter(lambda reference_id: not unstorable(reference_id)))
def test_any_reference_id_is_read(guarded_app, reference_id):
    """Any id a record can have (PostgreSQL holds no NUL; the column 255 characters), in any URL form."""
    _add_user(guarded_app, reference_id)
    assert _read(guarded_app, f"/users/{_encoded(reference_id)}")["reference_id"] == reference_id
    raw = _raw_form(reference_id)
    if raw is not None:
        assert _read(guarded_app, f"/users/{raw}")["reference_id"] == reference_id


@pytest.mark.parametrize(
    "path", ["/users/nobody%2Fat-all", "/users/nobody/at/all", "/users/%2E%2E", "/users/x/inquiries"]
)
def test_an_unknown_reference_id_of_any_shape_is_the_json_404(guarded, path):
    answer = guarded.get(path, headers=AUTH)
    assert answer.status_code == 404
    assert answer.json["error"] == "user_not_found"


def test_an_unreachable_database_is_a_503_to_retry_not_a_500(config, redis):
    """Issue 9 (found by a tester): with the database away, the host got 500 `internal_error`."""
    app = create_app(
        replace(config, admin_api_token=TOKEN, database_url="postgresql://postgres@127.0.0.1:1/nowhere"), redis=redis
    )
    answer = app.test_client().get("/users/u_1", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 503
    assert answer.json["error"] == "database_unavailable" and answer.json["detail"]
    assert int(answer.headers["Retry-After"]) > 0


def test_the_hosts_token_reads_a_record_and_nothing_else(config, redis):
    """docs/contracts.md §3: HOST_API_TOKEN may read GET /users/<id> (and ask the gate), not list or override."""
    app = create_app(dataclasses.replace(config, admin_api_token="admin-t", host_api_token="host-t"), redis=redis)
    _add_user(app, "u_host")
    client, host = app.test_client(), {"Authorization": "Bearer host-t"}
    assert client.get("/users/u_host", headers=host).status_code == 200
    listed = client.get("/users", headers=host)
    assert (listed.status_code, listed.json["error"]) == (403, "forbidden")  # a valid token, not allowed here
    assert "nothing else" in listed.json["detail"] and "WWW-Authenticate" not in listed.headers
    body = {"action": "resync", "reason": "r", "operator": "o"}
    assert client.post("/users/u_host/actions", json=body, headers=host).status_code == 403
    assert client.get("/users", headers={"Authorization": "Bearer host-x"}).status_code == 401
    assert client.get("/users/u_host", headers={"Authorization": "Bearer admin-t"}).status_code == 200


def test_the_hosts_token_alone_does_not_open_the_api_to_anyone(config, redis):
    app = create_app(dataclasses.replace(config, host_api_token="host-t"), redis=redis)
    client = app.test_client()
    assert client.get("/users", headers={"Authorization": "Bearer host-t"}).status_code == 503
    assert client.get("/users/u", headers={"Authorization": "Bearer nope"}).status_code == 401
