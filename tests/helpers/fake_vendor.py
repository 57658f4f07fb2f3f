"""A fake vendor API (scripts/fake_persona.py, scripts/fake_verisoul.py) as a process of its own on a free port."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.helpers.paths import ROOT


class FakeServer:
    """A fake vendor API (`python -m scripts.fake_<name>`) on a free port, its output in a log file."""

    def __init__(self, module: str, title: str, log_path: Path, *args: str):
        self.ready = re.compile(rb"fake " + title.encode() + rb" listening on (http://\S+)")
        self.title, self.log_path = title, log_path
        self.log = open(log_path, "wb")
        command = [sys.executable, "-m", module, "--port", "0", *args]
        self.process = subprocess.Popen(command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = self._wait_ready()

    def _wait_ready(self, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.ready.search(self.log_path.read_bytes())
            if found:
                return found.group(1).decode()
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the fake {self.title} did not start: {self.log_path.read_text(errors='replace')[-2000:]}")

    def control(self, method: str, path: str, **kwargs):
        answer = requests.request(method, f"{self.url}/_control/{path}", timeout=30, **kwargs)
        answer.raise_for_status()
        return answer.json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
