"""`replay-event` (workers/cli.py) run in the test process, its databases disposed after each run."""

from __future__ import annotations

import json

from click.testing import CliRunner

from store.db import Database
from workers import cli

_opened: list[Database] = []


def track_cli_databases(monkeypatch) -> None:
    """The CLI's engine is disposed after each run, as the process's exit would (tests run many in one process)."""

    def database(url: str) -> Database:
        _opened.append(Database(url))
        return _opened[-1]

    monkeypatch.setattr(cli, "Database", database)


def replay(*args: str):
    """`replay-event ARGS...` in this process; stdout and stderr apart."""
    result = CliRunner().invoke(cli.main, list(args))
    while _opened:
        _opened.pop().dispose()
    return result


def problems(result) -> list[str]:
    return result.stderr.splitlines()


def document(result) -> dict:
    return json.loads(result.stdout)
