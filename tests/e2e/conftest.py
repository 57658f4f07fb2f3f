"""The service as operators run it: the Procfile's web and worker commands as real processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from scripts.devstack import procfile_command
from scripts.embedded_redis import free_port
from tests.payloads import SECRET

ROOT = Path(__file__).resolve().parents[2]


class Stack:
    """gunicorn and N rq workers on a test Redis and database, stopped at the end of the test."""

    def __init__(self, redis_url: str, database_url: str, log_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PERSONA_WEBHOOK_SECRETS": SECRET,
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "PROMETHEUS_MULTIPROC_DIR": str(log_dir / "metrics"),
        }
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Path] = []  # each process' stdout and stderr, in the order started

    def start(self, kind: str) -> subprocess.Popen:
        path = self.log_dir / f"{kind}-{len(self.processes)}.log"
        with open(path, "wb") as log:
            process = subprocess.Popen(procfile_command(kind), cwd=ROOT, env=self.env, stdout=log, stderr=log)
        self.processes.append(process)
        self.logs.append(path)
        return process

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/readyz", timeout=1).ok:
                    return
            except requests.RequestException:
                time.sleep(0.1)
        raise TimeoutError(f"web process not ready; logs in {self.log_dir}")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


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


@pytest.fixture
def stack(redis_server_url, real_redis, real_database_url, tmp_path):
    stack = Stack(redis_server_url, real_database_url, tmp_path)
    yield stack
    stack.stop()
