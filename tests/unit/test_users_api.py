"""The users API's guard: a bearer token compared in constant time, and never open without one."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app import create_app

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

