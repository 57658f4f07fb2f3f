"""Polling until a condition holds, the test failed with what was awaited (and a stack's logs) if it never does."""

from __future__ import annotations

import time

import pytest

from tests.helpers.stack import Stack


def wait_until(condition, timeout: float, what: str, stack: Stack | None = None):
    """Poll `condition` until it is truthy; fail naming `what` (and the logs) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception:  # Redis restarting: keep polling
            value = None
        if value:
            return value
        time.sleep(0.2)
    logs = f"; logs in {stack.log_dir}" if stack else ""
    pytest.fail(f"not within {timeout:.0f} s: {what}{logs}")
