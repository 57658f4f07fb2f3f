"""`persona-events` (workers/admin.py): operators' commands on SQLite and PostgreSQL with a real Redis. Each
names the stores first, acts as the API does, and says why when it cannot."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from rq import Queue, SimpleWorker

from domain.times import iso_millis
from tests.helpers.events import inquiry_event
from tests.helpers.in_process import clear_job_caches, cli_environment
from workers import admin, jobs


@pytest.fixture
def env(monkeypatch, worker_env, real_redis):
    env = cli_environment(monkeypatch, worker_env)
    monkeypatch.setenv("PERSONA_EVENTS_OPERATOR", "ops@example.com")
    yield env
    clear_job_caches()


def run(*args: str):
    return CliRunner().invoke(admin.cli, list(args))


def hours_ago(hours: float) -> str:
    return iso_millis(datetime.now(UTC) - timedelta(hours=hours))


def blocked_user(reference_id: str) -> None:
    jobs.process_event(inquiry_event(f"inq_{reference_id}_1", "declined", hours_ago(2), reference_id))
    jobs.process_event(inquiry_event(f"inq_{reference_id}_2", "pending", hours_ago(1), reference_id))


def test_an_operator_lifts_a_wrong_block_from_the_command_line(env, real_config):
    blocked_user("user_c")
    listed = run("users", "--blocked")
    assert listed.exit_code == 0, listed.output
    assert listed.stderr.startswith(f"persona-events: {real_config.stores}")
    assert "user_c" in listed.stdout

    lifted = run("lift-block", "user_c", "--reason", "selfie misread")
    assert lifted.exit_code == 0, lifted.output
    assert "user_c: lift_block recorded; decision resume, strikes 1" in lifted.stdout

    shown = json.loads(run("show", "user_c", "--json").stdout)
    assert (shown["decision"], shown["overrides"][0]["operator"]) == ("resume", "ops@example.com")
    assert "user_c" not in run("users", "--blocked").stdout
    assert "overrides" in run("show", "user_c").stdout


def test_forgive_names_the_inquiry_and_an_unknown_one_is_refused(env):
    blocked_user("user_g")
    assert run("forgive", "user_g", "inq_user_g_1", "--reason", "bad photo").exit_code == 0
    assert json.loads(run("show", "user_g", "--json").stdout)["strikes"] == 0
    refused = run("forgive", "user_g", "inq_nope", "--reason", "x")
    assert (refused.exit_code, refused.stderr.splitlines()[-1]) == (
        1,
        "persona-events: user 'user_g' has no inquiry 'inq_nope'",
    )


def test_an_unknown_user_and_a_missing_reason_are_said_plainly(env):
    assert run("show", "nobody").stderr.splitlines()[-1] == "persona-events: no user with reference id 'nobody'"
    missing = run("lift-block", "nobody")
    assert missing.exit_code == 2 and "--reason" in missing.output


def test_failed_lists_failed_jobs_with_their_times_and_takes_since(env, real_config, real_redis):
    queue = Queue(real_config.sync_queue, connection=real_redis)
    broken = queue.enqueue("workers.jobs.no_such_function")
    SimpleWorker([queue], connection=real_redis).work(burst=True)

    listed = run("failed", "--json")

    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.stdout)["jobs"]
    assert (row["job_id"], row["failed_at"] is not None, "no_such_function" in row["error"]) == (broken.id, True, True)
    assert broken.id in run("failed").stdout
    later = iso_millis(datetime.now(UTC) + timedelta(minutes=1))
    assert broken.id not in run("failed", "--since", later).stdout
