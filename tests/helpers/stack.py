"""The Procfile's processes (gunicorn, rq workers, the scheduler) on a test's Redis and database, and their exits."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import requests

from scripts.devstack import procfile_command
from scripts.embedded_redis import free_port
from tests.helpers.paths import ROOT
from tests.payloads import SECRET


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


def exited(stack: Stack) -> list[str]:
    """The processes that exited, as `program pid exit-status: last log line`, so a failure says why."""
    return [
        f"{program(p)} pid {p.pid} exit {p.returncode}: {last_line(log)}"
        for p, log in zip(stack.processes, stack.logs, strict=True)
        if p.poll() is not None
    ]


def program(process: subprocess.Popen) -> str:
    """The file name of the program `process` runs (a Stack starts each from a command list)."""
    assert isinstance(process.args, list), process.args
    return Path(process.args[0]).name


def last_line(path: Path) -> str:
    """The last line of a log file, its last 500 characters."""
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1][-500:] if lines else "(no output)"
