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
