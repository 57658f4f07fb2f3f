"""./scripts/run (scripts/devstack.py) as a newcomer meets it (issue 11)."""

from __future__ import annotations

import os
import socket

from runtime.config import ENV_FILE, load_config
from scripts import devstack


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
