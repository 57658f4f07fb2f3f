"""The README's commands work as written, pasted into a shell at the repository's root (issue 11: a newcomer
got `command not found` for `replay-event`, which lives in .venv/bin)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CONSOLE_SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def shell_lines() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_the_readme_has_shell_blocks_to_check():
    assert any(line.startswith("./scripts/") for line in shell_lines())


def test_no_shell_line_calls_a_console_script_that_is_not_on_path():
    bare = [line for line in shell_lines() if line.split()[0] in CONSOLE_SCRIPTS]
    assert bare == [], "write .venv/bin/<script>: the virtualenv is not activated in a fresh shell"


def test_every_script_a_shell_line_runs_exists():
    for line in shell_lines():
        command = line.split()[0]
        if command.startswith(("./", ".venv/bin/")) and not command.startswith(".venv/bin/python"):
            path = ROOT / command
            assert path.exists() or command.removeprefix(".venv/bin/") in CONSOLE_SCRIPTS, line


def test_the_readmes_receiving_host_takes_a_signed_notification_once_and_refuses_a_forged_one():
    """The Flask receiver of "Telling the host application", run as written with a real secret."""
    from datetime import UTC, datetime

    from clients.host_webhook import HostWebhook
    from domain.notifications import message

    [source] = [
        block for block in re.findall(r"```python\n(.*?)```", README, flags=re.S) if "standardwebhooks" in block
    ]
    assert len([line for line in source.splitlines() if line.strip()]) <= 16
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    scope: dict = {"__name__": "readme_host"}
    exec(source.replace('"whsec_..."', repr(secret)), scope)  # noqa: S102 - the README's own code
    client = scope["app"].test_client()

    class Session:
        def post(self, url, data, headers, timeout):
            return client.post("/persona-events", data=data, headers=headers)

    sender = HostWebhook("http://host/persona-events", secret, Session())
    body = message({"reference_id": "u_1"}, 2, datetime.now(UTC))
    assert sender.send("msg_1", body, datetime.now(UTC)) is None
    assert scope["latest"] == {"u_1": 2}
    older = message({"reference_id": "u_1"}, 1, datetime.now(UTC))
    assert sender.send("msg_0", older, datetime.now(UTC)) is None and scope["latest"] == {"u_1": 2}
    forged = HostWebhook("http://host/persona-events", "whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB", Session())
    refused = forged.send("msg_9", message({"reference_id": "u_1"}, 9, datetime.now(UTC)), datetime.now(UTC))
    assert refused is not None and refused.startswith("HTTP 401")
    assert scope["latest"] == {"u_1": 2}
