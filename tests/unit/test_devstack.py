"""./scripts/run (scripts/devstack.py) as a newcomer meets it (issue 11)."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import time

import pytest
import requests

from runtime.config import ENV_FILE, load_config
from scripts import devstack
from scripts.embedded_redis import free_port
from scripts.fake_persona import DEFAULT_API_KEY as FAKE_PERSONA_API_KEY
from tests.helpers.paths import ROOT


def test_a_port_in_use_is_named_with_the_way_to_choose_another_before_anything_starts(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(devstack, "LOCK_FILE", tmp_path / "devstack.lock")
    started = []
    monkeypatch.setattr(devstack, "_environment", lambda: started.append("environment") or {})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert devstack.main(["--port", str(port)]) == 2
    message = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is in use" in message
    assert "--port" in message and f"PORT={port + 1}" in message
    assert started == []  # no Redis, no migration, no process was started


def test_a_second_stack_on_the_same_var_is_refused_before_anything_starts(capsys, monkeypatch, tmp_path):
    """Issue 11: `./scripts/run --port 8001` beside a running stack started a second Redis on the same
    append-only file and emptied the first stack's metrics."""
    monkeypatch.setattr(devstack, "LOCK_FILE", tmp_path / "devstack.lock")
    started = []
    monkeypatch.setattr(devstack, "_environment", lambda: started.append("environment") or {})
    held = devstack._lock_var()
    assert held is not None
    try:
        assert devstack.main(["--port", "0"]) == 2
    finally:
        os.close(held)
    message = capsys.readouterr().err
    assert f"another ./scripts/run (pid {os.getpid()}) is using var/" in message
    assert started == []


def test_commands_in_another_shell_read_the_running_stacks_settings(monkeypatch, tmp_path):
    """Issue 11: the embedded Redis' port changes at each start, so replay-event needed REDIS_URL pasted."""
    monkeypatch.setattr(devstack, "STACK_ENV", tmp_path / "stack.env")
    stack = {"REDIS_URL": "redis://127.0.0.1:41234/0", "DATABASE_URL": "sqlite:////tmp/x y.db", "HOME": "/root"}
    devstack._write_stack_env(stack)
    for name in ("REDIS_URL", "DATABASE_URL", "PERSONA_WEBHOOK_SECRETS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(ENV_FILE, str(tmp_path / "stack.env"))
    config = load_config(verifies_webhooks=False)
    assert (config.redis_url, config.database_url) == (stack["REDIS_URL"], stack["DATABASE_URL"])
    assert "HOME" not in (tmp_path / "stack.env").read_text()  # only the service's settings


def _banner_command(banner: str, label: str) -> str:
    """The command the banner prints after `label:`."""
    return next(line.split(f"{label}:", 1)[1].strip() for line in banner.splitlines() if f"  {label}:" in line)


def _curl(command: str) -> tuple[int, dict]:
    """Run a banner's `curl -i` as pasted; its status code and JSON body."""
    done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=30, check=True)
    status_line, *_ = done.stdout.splitlines()
    return int(status_line.split()[1]), json.loads(done.stdout.rsplit("\n\n", 1)[-1].replace("\r", ""))


@pytest.fixture
def dev_stack(monkeypatch, tmp_path, capsys, redis_server_url, real_redis):
    """./scripts/run's stack (scripts/devstack.py start_stack) on the test's Redis, its var/ and database in
    tmp_path, with neither Persona's API nor Verisoul configured; yields its banner and environment."""
    var = tmp_path / "var"
    monkeypatch.setattr(devstack, "VAR", var)
    monkeypatch.setattr(devstack, "STACK_ENV", var / "stack.env")
    monkeypatch.setattr(devstack, "DOTENV", tmp_path / "no.env")  # not the developer's .env
    unset = ("PERSONA_API_URL", "PERSONA_API_KEY", "HOST_API_TOKEN", "ADMIN_API_TOKEN", "VERISOUL_API_URL")
    for name in (*unset, "HOST_WEBHOOK_URL", "HOST_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", redis_server_url)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'stack.db'}")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    env = devstack._environment()
    processes: list[subprocess.Popen] = []
    try:
        assert devstack.start_stack(free_port(), env, processes)
        yield capsys.readouterr().out, env
    finally:
        devstack.stop(processes)


def test_the_stack_starts_the_fake_persona_and_writes_its_settings_for_other_shells(dev_stack, monkeypatch):
    banner, env = dev_stack
    persona_url = env["PERSONA_API_URL"]
    assert f"started the fake Persona at {persona_url}" in banner
    assert requests.get(f"{persona_url}/_control/config", timeout=5).json()["api_key"] == FAKE_PERSONA_API_KEY
    for name in ("PERSONA_API_URL", "PERSONA_API_KEY", "HOST_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(ENV_FILE, str(devstack.STACK_ENV))
    config = load_config(verifies_webhooks=False)
    assert (config.persona_api_url, config.persona_api_key) == (persona_url, FAKE_PERSONA_API_KEY)
    assert config.host_api_token == devstack.DEV_HOST_API_TOKEN


def test_the_banners_gate_command_creates_an_inquiry_at_the_fake_persona_then_resumes_it(dev_stack):
    banner, env = dev_stack
    gate = _banner_command(banner, "ask the gate")
    assert f"Bearer {devstack.DEV_HOST_API_TOKEN}" in gate
    status, created = _curl(gate)
    assert (status, created["action"]) == (201, "create"), created
    status, resumed = _curl(gate)
    assert (status, resumed["action"], resumed["inquiry_id"]) == (200, "resume", created["inquiry_id"])
    calls = requests.get(f"{env['PERSONA_API_URL']}/_control/calls", timeout=5).json()
    assert [c["status"] for c in calls if c["method"] == "POST" and c["path"] == "/api/v1/inquiries"] == [201]


def test_the_fake_host_receives_the_gates_new_user_signed(dev_stack):
    """The stack notifies its fake host (scripts/fake_host.py, which verifies every signature); the banner says where
    to read what it received."""
    banner, env = dev_stack
    status, created = _curl(_banner_command(banner, "ask the gate"))
    assert status == 201, created
    received = _banner_command(banner, "host notifications").split()[-1]
    deadline = time.monotonic() + 30
    accepted: list[dict] = []
    while not accepted and time.monotonic() < deadline:
        calls = requests.get(received, timeout=5).json()
        accepted = [c["body"]["data"] for c in calls if c["verified"] and c["status"] < 300]
        time.sleep(0.2)
    assert accepted, "no notification reached the fake host"
    assert accepted[0]["sequence"] == 1
    assert (accepted[0]["reference_id"], accepted[0]["inquiry_id"]) == (devstack.GATE_USER, created["inquiry_id"])


def test_the_banners_replays_from_persona_find_the_sample_event_at_the_fake(dev_stack):
    """The fake Persona holds the sample event and its inquiry, so the banner's replay from Persona has an event
    to fetch (before the sample was even posted), and reconciliation runs."""
    banner, _ = dev_stack
    replay = subprocess.run(
        _banner_command(banner, "from Persona"), shell=True, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert replay.returncode == 0, replay.stderr
    assert f"{devstack.SAMPLE_USER}: " in replay.stdout  # the user it would create
    assert "dry run, nothing written: 1 events of 1 users; 1 users would change" in replay.stdout
    reconcile = subprocess.run(
        _banner_command(banner, "reconcile (dry run)"), shell=True, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert reconcile.returncode == 0, reconcile.stderr
    assert "0 inquiries fetched from Persona" in reconcile.stdout


def test_a_configured_persona_api_is_used_and_no_fake_started():
    env = {"PERSONA_API_KEY": "persona_sandbox_key"}
    assert devstack._start_fake_persona(env) is None
    assert env == {"PERSONA_API_KEY": "persona_sandbox_key"}
