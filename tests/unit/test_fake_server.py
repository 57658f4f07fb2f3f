"""What the fakes share (scripts/fake_server.py): raw-path routing and the failures the switches inject.

The control routes and the command line are exercised through both fakes (test_fake_persona.py,
test_fake_verisoul.py); here, the parts with logic of their own, on a bare app and a bare config.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from scripts.fake_server import FakeServerState, RawPathApp


@dataclass
class Config:
    api_key: str = "key"
    fail_next: list[int] = field(default_factory=list)
    fail_rate_500: float = 0.0
    fail_rate_429: float = 0.0
    seed: int | None = None


def echo_app() -> RawPathApp:
    app = RawPathApp(__name__)

    @app.get("/item/<segment:item_id>")
    def item(item_id: str):
        return {"id": item_id}

    return app


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("/item/a%2Fb?x=1#frag", "a/b"),  # origin form: query and fragment are not the path
        ("http://proxy.example/item/a%2Fb?x=1", "a/b"),  # absolute form: the path after the authority
        ("/item/%2E%2E", ".."),
    ],
)
def test_routes_on_the_raw_path(raw, expected):
    answer = echo_app().test_client().get("/", environ_overrides={"RAW_URI": raw, "REQUEST_URI": raw})
    assert answer.status_code == 200
    assert answer.json == {"id": expected}


def test_a_leading_double_slash_is_a_path_not_a_host():
    answer = echo_app().test_client().get("/", environ_overrides={"RAW_URI": "//item/x", "REQUEST_URI": "//item/x"})
    assert answer.json == {"id": "x"}  # read as a host, `item` would leave the path `/x`, which matches no rule


def test_without_a_raw_path_routes_on_path_info():
    answer = echo_app().test_client().get("/item/plain", environ_overrides={"RAW_URI": "", "REQUEST_URI": ""})
    assert answer.json == {"id": "plain"}


def test_fail_next_comes_before_the_rates_and_reset_restores_it():
    state = FakeServerState(Config(fail_next=[503, 418], fail_rate_500=1.0))
    assert [state.injected_failure() for _ in range(3)] == [503, 418, 500]
    state.reset()
    assert state.config.fail_next == [503, 418]


def test_rate_draws_repeat_with_the_seed():
    def draws() -> list[int | None]:
        state = FakeServerState(Config(fail_rate_500=0.3, fail_rate_429=0.3, seed=7))
        return [state.injected_failure() for _ in range(40)]

    first = draws()
    assert first == draws()
    assert {500, 429, None} == set(first)


def test_apply_config_rejects_unknown_keys_and_what_the_fake_finds_wrong():
    state = FakeServerState(Config())
    assert "body must be an object" in (state.apply_config({"nope": 1}, lambda config: None) or "")
    assert state.apply_config({"fail_rate_500": 2}, lambda config: "too high") == "too high"
    assert state.config == Config()
    assert state.apply_config({"seed": 3, "fail_next": [500]}, lambda config: None) is None
    assert (state.config.seed, state.config.fail_next) == (3, [500])
