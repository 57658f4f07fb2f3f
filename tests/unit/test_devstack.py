"""./scripts/run (scripts/devstack.py) as a newcomer meets it (issue 11)."""

from __future__ import annotations

import socket

from scripts import devstack


def test_a_port_in_use_is_named_with_the_way_to_choose_another_before_anything_starts(capsys, monkeypatch):
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
