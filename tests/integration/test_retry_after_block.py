"""docs/contracts.md §5 as revised (`RETRY_AFTER_BLOCK`, on by default): once a temporary block has ended, a user whose
latest inquiry failed or was declined may verify again, and the gate creates the new inquiry; a further failure is the
next strike. With the setting false, such a user stays denied. Every edge says the same: the record, the users list,
the gate, the operators' CLI, an override and a replay, on SQLite and PostgreSQL, with the real Redis and the fake
Persona."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from app import create_app
from domain.times import iso_millis
from scripts.fake_persona import DEFAULT_API_KEY
from tests.helpers.events import inquiry_event
from tests.helpers.in_process import clear_job_caches, cli_environment
from tests.helpers.replay_event import replay, track_cli_databases
from tests.servers import FakePersonaControl
from workers import admin, jobs

ADMIN = {"Authorization": "Bearer admin-token"}
TEMPLATE = "itmpl_1"  # the template tests/helpers/events.py gives its inquiries


def days_ago(days: float) -> str:
    return iso_millis(datetime.now(UTC) - timedelta(days=days))


@pytest.fixture(params=[True, False], ids=["retry", "no-retry"])
def retry_after_block(request, monkeypatch) -> bool:
    monkeypatch.setenv("RETRY_AFTER_BLOCK", str(request.param).lower())  # what the worker and the CLIs read
    return request.param


@pytest.fixture
def app(monkeypatch, worker_env, real_config, real_redis, fake_persona_url, retry_after_block) -> Iterator:
    cli_environment(monkeypatch, worker_env)
    monkeypatch.setenv("PERSONA_EVENTS_OPERATOR", "ops@example.com")
    track_cli_databases(monkeypatch)
    FakePersonaControl(fake_persona_url).reset()
    config = dataclasses.replace(
        real_config,
        admin_api_token="admin-token",
        persona_api_url=fake_persona_url,
        persona_api_key=DEFAULT_API_KEY,
        retry_after_block=retry_after_block,
    )
    app = create_app(config, redis=real_redis)
    yield app
    app.extensions["database"].dispose()
    clear_job_caches()


def declined_ten_days_ago(reference_id: str) -> None:
    """One strike, whose 7-day block has ended."""
    jobs.process_event(inquiry_event(f"inq_{reference_id}_1", "declined", days_ago(10), reference_id))


def listed(app, decision: str) -> set[str]:
    page = app.test_client().get(f"/users?decision={decision}&limit=100", headers=ADMIN).get_json()
    return {user["reference_id"] for user in page["users"]}


def expected(retry: bool) -> tuple[str, str]:
    return ("verify", "create_inquiry") if retry else ("deny", "none")


def test_the_record_the_list_and_the_cli_agree_once_the_block_has_ended(app, retry_after_block):
    declined_ten_days_ago("u_after")
    record = app.test_client().get("/users/u_after", headers=ADMIN).get_json()
    assert (record["decision"], record["next_action"], record["strikes"]) == (*expected(retry_after_block), 1)
    assert record["templates"][TEMPLATE]["decision"] == record["decision"]
    assert "u_after" in listed(app, record["decision"])
    shown = CliRunner().invoke(admin.cli, ["show", "u_after", "--json"])
    assert shown.exit_code == 0, shown.output
    assert '"decision": "' + record["decision"] + '"' in shown.stdout


def test_a_replay_and_an_override_keep_to_the_setting(app, retry_after_block):
    declined_ten_days_ago("u_replayed")
    result = replay("--user", "u_replayed", "--json")
    assert result.exit_code == 0, result.output
    lifted = app.test_client().post(
        "/users/u_replayed/actions", json={"action": "lift_block", "reason": "test", "operator": "ops"}, headers=ADMIN
    )
    assert lifted.status_code == 200
    assert (lifted.get_json()["decision"], lifted.get_json()["next_action"]) == expected(retry_after_block)
    assert "u_replayed" in listed(app, expected(retry_after_block)[0])


def test_the_gate_creates_the_next_inquiry_and_a_further_failure_is_the_next_strike(app, retry_after_block):
    declined_ten_days_ago("u_gate")
    client = app.test_client()
    answer = client.post("/users/u_gate/inquiries", json={"template_id": TEMPLATE}, headers=ADMIN)
    if not retry_after_block:
        assert answer.status_code == 403
        assert answer.get_json() == {
            "action": "deny",
            "reason": "the latest inquiry was declined",
            "blocked_until": None,
        }
        return
    assert answer.status_code == 201, answer.get_json()
    inquiry_id = answer.get_json()["inquiry_id"]
    assert inquiry_id != "inq_u_gate_1"
    jobs.process_event(inquiry_event(inquiry_id, "failed", iso_millis(datetime.now(UTC)), "u_gate"))
    denied = client.post("/users/u_gate/inquiries", json={"template_id": TEMPLATE}, headers=ADMIN)
    assert denied.status_code == 403
    record = client.get("/users/u_gate", headers=ADMIN).get_json()
    assert (record["strikes"], record["decision"]) == (2, "deny")
    assert denied.get_json()["blocked_until"] > days_ago(-29)  # two strikes: 30 days from the failure


def test_refresh_standing_brings_the_list_in_step_after_the_setting_changed(app, monkeypatch, retry_after_block):
    declined_ten_days_ago("u_changed")
    monkeypatch.setenv("RETRY_AFTER_BLOCK", str(not retry_after_block).lower())
    flipped = dataclasses.replace(app.config["PERSONA"], retry_after_block=not retry_after_block)
    app.config["PERSONA"] = flipped
    now_says = expected(not retry_after_block)[0]
    assert app.test_client().get("/users/u_changed", headers=ADMIN).get_json()["decision"] == now_says
    assert "u_changed" not in listed(app, now_says)  # the stored standing is the old setting's
    result = CliRunner().invoke(admin.cli, ["refresh-standing"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(" changed") and not result.stdout.strip().endswith(" 0 changed")
    assert "u_changed" in listed(app, now_says)
    again = CliRunner().invoke(admin.cli, ["refresh-standing"])
    assert again.stdout.strip().endswith(", 0 changed")
