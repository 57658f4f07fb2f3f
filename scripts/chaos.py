"""Fault suite: the Procfile's processes under one fault at a time, while a stream of webhooks is posted.

    .venv/bin/python -m scripts.chaos                        # every fault, 100 users, PostgreSQL
    .venv/bin/python -m scripts.chaos --fault worker-sigkill --fault redis-sigkill --users 50 --database sqlite

For each fault, on fresh state (its own redis-server with the append-only file on, on a free port; its own
database, `chaos_<pid>_<n>` on the PostgreSQL at 127.0.0.1:5432 reached through scripts/tcp_proxy.py, or a
SQLite file; its own fake Verisoul): the Procfile's `release` runs the migrations, then every other Procfile entry
is started once (`worker` twice) with nothing to restart them. A generated stream of ≥ 100 users' events
(tests/e2e/stream.py: shuffled, 10% delivered twice, mixed key casing) is posted over HTTP at `--rate` posts/s
by a sender that retries any non-2xx or connection error like Persona does, on a compressed schedule (1, 2, 4,
8, 8, ... s; it gives up on a delivery after `--give-up` s). Mid-stream the fault is injected; once it has ended
the suite polls every record (`GET /users/<id>`) and the fake Verisoul until each matches the model computed
independently from the acknowledged events (tests/e2e/stream.py, and the Verisoul expectations of
tests/helpers/verisoul_expectations.py), or `--cap` seconds pass.

One row per fault: acknowledged events (answered 2xx), not acknowledged (the sender gave up), lost (acknowledged,
never in the events table), applied twice (an event id stored twice or with two history rows), wrong records
(users whose record or Verisoul state differs from the model: status, inquiries, verifications, history, decision,
strikes, Verisoul enrolled/blocked/synced), double enrolls (accounts the fake saw enrolled more than once), and the
seconds from the fault's end until everything matched (`>cap` if never; it includes the rest of the stream when the
fault ends before it does). Then each process's exits, those it made on its own (an outage should never make a process
exit), the error lines of its log, and the machine's load: convergence times depend on it, and `--fault baseline`
(the stream with no fault, not run by default) shows what the same load gives without a fault.

Exit status 0 when every row meets the target (0 not acknowledged, 0 lost, 0 applied twice, 0 wrong records,
0 double enrolls, converged within 90 s of the fault's end; with --database sqlite, db-down is skipped), 1 otherwise,
2 for a usage error, 130 when interrupted.
Everything is local (127.0.0.1); every process started is stopped at the end, Ctrl-C included; the shared Redis
and PostgreSQL servers are never stopped (only the database this suite created is dropped).
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from domain.signature import sign
from runtime.config import DEFAULT_SIGNATURE_TOLERANCE
from scripts.devstack import procfile_command
from scripts.embedded_redis import free_port
from scripts.embedded_redis import server_binary as embedded_redis_binary
from scripts.fake_verisoul import DEFAULT_API_KEY as FAKE_VERISOUL_KEY
from scripts.tcp_proxy import TcpProxy
from store.db import engine_url
from tests.e2e.stream import Stream, deliveries, expected_records, generate
from tests.helpers.record_diff import record_diff
from tests.helpers.verisoul_expectations import (
    call_problems,
    expectations,
    record_problems,
    successful_reads,
    successful_writes,
)
from tests.payloads import SECRET

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "chaos-admin-token"
FLAVOR = "account"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
TARGET_SECONDS = 90.0
SKEW_MARGIN = 5  # seconds inside the signature tolerance
WORKER_KILLS = (0.2, 0.4, 0.6)  # stream progress at each SIGKILL
RESTART_AFTER_KILL = 3.0
REDIS_KILLED_FOR = 5.0
FAULT_AT = 0.3  # stream progress at which the other faults start
POLL_SECONDS = 2.0
CHECK_THREADS = 4  # GET /users in parallel, so a poll of every record takes a moment, not seconds
STOP_TIMEOUT = 30.0  # SIGTERM, then SIGKILL

FAULTS = {
    "worker-sigkill": "worker SIGKILL mid-job, 3 times, each restarted 3 s later",
    "redis-sigkill": f"Redis SIGKILL, restarted {REDIS_KILLED_FOR:.0f} s later (AOF on)",
    "redis-down": "Redis stopped 30 s, restarted on the same port and data",
    "db-down": "database unreachable 60 s (TCP proxy resets every connection)",
    "verisoul-down": "Verisoul answers 500/429 to every request for 2 min",
    "deploy": "SIGTERM to web and workers (a deploy), restarted 3 s after they exit",
    "clock-skew": "signatures at now ± (tolerance − 5 s), both ways",
    "baseline": "no fault: the stream alone, for comparison on a busy machine (only when asked for)",
}
DEFAULT_FAULTS = [name for name in FAULTS if name != "baseline"]
DURATIONS = {"redis-down": 30.0, "db-down": 60.0, "verisoul-down": 120.0}


def log(message: str) -> None:
    print(f"chaos {datetime.now(UTC):%H:%M:%S} {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass
class Settings:
    faults: list[str]
    users: int = 100
    database: str = "postgresql"
    postgres_url: str = DEFAULT_POSTGRES
    seed: int = 20261201
    rate: float = 30.0
    cap: float = 300.0
    give_up: float = 180.0
    keep_logs: Path | None = None
    durations: dict[str, float] = field(default_factory=lambda: dict(DURATIONS))


# ---------------------------------------------------------------------------------------------
# Processes


def _pgid_members(pgid: int) -> list[str]:
    """Live processes of a process group, as "pid command"."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            content = stat.read_text()
            fields_ = content[content.rindex(")") + 2 :].split()
            if int(fields_[2]) == pgid and fields_[0] != "Z":
                cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{stat.parent.name} {cmdline.strip()[:120]}")
        except (OSError, ValueError, IndexError):
            continue
    return found


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class RedisServer:
    """Our own redis-server on a free loopback port (never the shared 6379), AOF on; restartable on the same
    port and data directory."""

    def __init__(self, data_dir: Path):
        self.binary = shutil.which("redis-server") or embedded_redis_binary()
        self.data_dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.pgids: set[int] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.data_dir),
            "--appendonly", "yes", "--save", "", "--logfile", "redis.log", "--protected-mode", "yes",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self.pgids.add(self.process.pid)
        deadline = time.monotonic() + timeout
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            while True:
                try:
                    client.ping()  # answers once the AOF is loaded
                    return self
                except redis.RedisError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"redis-server did not start on {self.port}; see {self.data_dir}/redis.log"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()  # SHUTDOWN: flushes the AOF
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def cleanup(self) -> None:
        self.stop()
        for pgid in self.pgids:
            _kill_group(pgid, signal.SIGKILL)


class FakeVerisoul:
    """scripts/fake_verisoul.py as a process, in its own session."""

    READY = re.compile(rb"fake Verisoul listening on (http://\S+)")

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        command = [sys.executable, "-m", "scripts.fake_verisoul", "--port", "0"]
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = self.READY.search(log_path.read_bytes())
            if found:
                self.url = found.group(1).decode()
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the fake Verisoul did not start; see {log_path}")

    def control(self, method: str, path: str, **kwargs):
        answer = requests.request(method, f"{self.url}/_control/{path}", timeout=30, **kwargs)
        answer.raise_for_status()
        return answer.json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(self.process.pid, signal.SIGKILL)
        self.log.close()


@dataclass
class Proc:
    """One run of one Procfile process."""

    name: str  # web, worker-1, worker-2, <kind>
    kind: str
    popen: subprocess.Popen
    log_path: Path
    started: float
    signaled: str | None = None  # the signal we sent, if any
    exit_code: int | None = None
    exited: float | None = None
    orphans: list[str] = field(default_factory=list)  # processes of its group alive after it was killed

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def on_its_own(self) -> bool:
        return self.exit_code is not None and self.signaled is None


def procfile_kinds() -> list[str]:
    """The Procfile's process types, in order, `release` excluded."""
    kinds = []
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, _ = line.partition(":")
        name = name.strip()
        if sep and name and not name.startswith("#") and name != "release" and name not in kinds:
            kinds.append(name)
    return kinds


class Stack:
    """The Procfile's processes (every entry but `release`; `worker` twice), each in its own session, watched by
    a thread that records every exit; nothing restarts them but the fault scripts."""

    def __init__(self, env: dict[str, str], log_dir: Path, origin: float):
        self.env, self.log_dir, self.origin = env, log_dir, origin
        self.url = f"http://127.0.0.1:{env['PORT']}"
        self.runs: list[Proc] = []
        self.current: dict[str, Proc] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="chaos-watch", daemon=True)

    def names(self) -> list[tuple[str, str]]:
        out = []
        for kind in procfile_kinds():
            if kind == "worker":
                out += [("worker-1", "worker"), ("worker-2", "worker")]
            else:
                out.append((kind, kind))
        return out

    def start_all(self) -> None:
        for name, kind in self.names():
            self.start(name, kind)
        self._watcher.start()

    def start(self, name: str, kind: str | None = None) -> Proc:
        kind = kind or self.current[name].kind
        runs = sum(1 for run in self.runs if run.name == name)
        log_path = self.log_dir / (f"{name}.log" if not runs else f"{name}.restart{runs}.log")
        with open(log_path, "wb") as out:
            popen = subprocess.Popen(
                procfile_command(kind), cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        proc = Proc(name, kind, popen, log_path, time.monotonic())
        with self.lock:
            self.runs.append(proc)
            self.current[name] = proc
        return proc

    def workers(self) -> list[str]:
        return [name for name, kind in self.names() if kind == "worker"]

    def signal(self, name: str, sig: signal.Signals, group: bool = False) -> Proc:
        proc = self.current[name]
        with self.lock:
            proc.signaled = sig.name
        if group:
            _kill_group(proc.pid, sig)
        else:
            with contextlib.suppress(ProcessLookupError):
                proc.popen.send_signal(sig)
        return proc

    def wait_exit(self, proc: Proc, timeout: float) -> bool:
        try:
            proc.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        self._poll()
        return True

    def wait_ready(self, timeout: float = 60.0) -> float | None:
        """Seconds until GET /readyz answered 200, or None."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/readyz", timeout=2).ok:
                    return time.monotonic() - started
            time.sleep(0.2)
        return None

    def _poll(self) -> None:
        with self.lock:
            for proc in self.runs:
                if proc.exit_code is None and proc.popen.poll() is not None:
                    proc.exit_code, proc.exited = proc.popen.returncode, time.monotonic()
                    how = f"after our {proc.signaled}" if proc.signaled else "ON ITS OWN"
                    at = proc.exited - self.origin
                    log(f"{proc.name} pid {proc.pid} exited {proc.exit_code} {how} (+{at:.0f} s)")

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            self._poll()

    def stop_all(self) -> None:
        self._stop.set()
        live = [proc for proc in self.runs if proc.popen.poll() is None]
        for proc in live:
            if proc.signaled is None:
                proc.signaled = "SIGTERM (end of scenario)"
            _kill_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in live:
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.signaled = "SIGKILL (did not stop on SIGTERM)"
                _kill_group(proc.pid, signal.SIGKILL)
                proc.popen.wait(timeout=10)
        self._poll()
        for proc in self.runs:  # orphans of killed processes included
            _kill_group(proc.pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# The sender: Persona's retries, compressed


@dataclass
class Delivery:
    event_id: str
    body: bytes
    skew: int = 0
    attempts: int = 0
    first: float | None = None
    acked: bool = False
    answer: str | None = None  # queued | duplicate | ignored
    gave_up: bool = False


class Sender:
    """Posts every delivery once, paced at `rate` per second, from a few threads; a delivery that gets a non-2xx or
    a connection error is retried after 1, 2, 4, 8, 8, ... s until `give_up` seconds after its first attempt.
    `skew` (set by the clock-skew fault) gives each delivery started while it is set a signature time offset, kept
    for its retries (a sender's clock does not heal between retries)."""

    def __init__(self, url: str, posts: list[tuple[str, bytes]], rate: float, give_up: float, threads: int = 4):
        self.url = f"{url}/webhooks/persona"
        self.deliveries = [Delivery(event_id, body) for event_id, body in posts]
        self.rate, self.give_up, self.threads = rate, give_up, threads
        self.skew: Callable[[], int] | None = None
        self.answers: Counter = Counter()  # every answer that was not 2xx, by status or error
        self.queued: Counter = Counter()  # event id → "queued" answers
        self.first_attempts = 0
        self.finished = 0
        self._heap: list[tuple[float, int]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Sender:
        now = time.monotonic()
        self._heap = [(now + i / self.rate, i) for i in range(len(self.deliveries))]
        heapq.heapify(self._heap)
        for n in range(self.threads):
            thread = threading.Thread(target=self._run, name=f"chaos-sender-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    @property
    def progress(self) -> float:
        return self.first_attempts / len(self.deliveries)

    @property
    def done(self) -> bool:
        return self.finished == len(self.deliveries)

    def acked_ids(self) -> set[str]:
        return {d.event_id for d in self.deliveries if d.acked}

    def not_acked_ids(self) -> set[str]:
        return {d.event_id for d in self.deliveries} - self.acked_ids()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=15)

    def _next(self) -> int | None:
        with self._cond:
            while not self._stop.is_set():
                if not self._heap:
                    if self.done:
                        return None
                    self._cond.wait(0.5)
                    continue
                due, index = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(min(wait, 0.5))
                    continue
                heapq.heappop(self._heap)
                return index
        return None

    def _run(self) -> None:
        with requests.Session() as http:
            while (index := self._next()) is not None:
                self._attempt(http, self.deliveries[index], index)

    def _attempt(self, http: requests.Session, delivery: Delivery, index: int) -> None:
        now = time.monotonic()
        if delivery.first is None:
            delivery.first = now
            skew = self.skew
            delivery.skew = skew() if skew else 0
            with self._cond:
                self.first_attempts += 1
        delivery.attempts += 1
        signature = sign(SECRET, int(time.time()) + delivery.skew, delivery.body)
        headers = {"Content-Type": "application/json", "Persona-Signature": signature}
        outcome = None
        try:
            answer = http.post(self.url, data=delivery.body, headers=headers, timeout=(2, 5))
            if 200 <= answer.status_code < 300:
                try:
                    delivery.answer = answer.json().get("status")
                except ValueError:
                    delivery.answer = "?"
                delivery.acked = True
            else:
                outcome = str(answer.status_code)
        except requests.Timeout:
            outcome = "timeout"
        except requests.RequestException:
            outcome = "connection error"
        with self._cond:
            if delivery.acked:
                if delivery.answer == "queued":
                    self.queued[delivery.event_id] += 1
                self.finished += 1
            else:
                self.answers[outcome] += 1
                delay = min(2 ** (delivery.attempts - 1), 8)
                if time.monotonic() + delay - delivery.first > self.give_up:
                    delivery.gave_up = True
                    self.finished += 1
                else:
                    heapq.heappush(self._heap, (time.monotonic() + delay, index))
            self._cond.notify_all()


# ---------------------------------------------------------------------------------------------
# What the records should be, and what they are


class Checker:
    """Compares every user's record (over HTTP) and Verisoul's state (the fake's control API) with the model
    computed from the acknowledged events; counts events stored and history rows in the database."""

    def __init__(self, stream: Stream, started: datetime, web_url: str, fake: FakeVerisoul, direct_db: str):
        self.stream, self.started, self.web_url, self.fake = stream, started, web_url, fake
        self.engine = create_engine(engine_url(direct_db), pool_pre_ping=True)
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="chaos-check")

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.engine.dispose()

    def _get(self, key: str) -> requests.Response | Exception:
        http = getattr(self.local, "http", None)
        if http is None:
            http = self.local.http = requests.Session()
            http.headers["Authorization"] = f"Bearer {TOKEN}"
        try:
            return http.get(f"{self.web_url}/users/{quote(key, safe='')}", timeout=10)
        except requests.RequestException as error:
            return error

    def problems(self, acked: set[str]) -> dict[str, list[str]]:
        facts = [fact for fact in self.stream.facts if fact.event_id in acked]
        now = datetime.now(UTC)
        expected = expected_records(facts, now)
        sub = Stream(now=self.stream.now, facts=facts, bodies={e: b"" for e in acked}, users=sorted(expected))
        verisoul = expectations(sub, now, self.started, set())
        calls = self.fake.control("GET", "calls")
        accounts = self.fake.control("GET", "accounts")
        writes, reads = successful_writes(calls, FLAVOR), successful_reads(calls)
        out: dict[str, list[str]] = {}
        keys = sorted(expected)
        for key, answer in zip(keys, self.pool.map(self._get, keys), strict=True):
            if isinstance(answer, Exception):
                out[key] = [f"GET /users failed: {type(answer).__name__}"]
                continue
            found = record_diff(key, expected[key], answer)
            found += call_problems(verisoul[key], writes.get(key, []), reads[key], accounts.get(key), FLAVOR)
            if answer.status_code == 200:
                found += record_problems(verisoul[key], answer.json(), writes.get(key, []), reads[key])
            if found:
                out[key] = found
        strays = sorted(set(writes) - set(expected))
        if strays:
            out["(accounts of no user)"] = [f"Verisoul writes for {strays[:5]}"]
        return out

    def stored(self) -> tuple[set[str], list[str], list[str]]:
        """Stored event ids; event ids stored twice; event ids with more than one history row."""
        with self.engine.connect() as db:
            ids = [row[0] for row in db.execute(text("SELECT event_id FROM events"))]
            history = (
                db.execute(text("SELECT event_id FROM history GROUP BY event_id HAVING COUNT(*) > 1")).scalars().all()
            )
        twice = [e for e, n in Counter(ids).items() if n > 1]
        return set(ids), twice, list(history)

    def double_enrolls(self) -> list[str]:
        accounts = self.fake.control("GET", "accounts")
        return sorted(key for key, account in accounts.items() if account.get("enroll_calls", 0) > 1)


# ---------------------------------------------------------------------------------------------
# The faults. Each waits for its moment in the stream, injects, and returns when the fault has ended.


@dataclass
class Context:
    settings: Settings
    stack: Stack
    redis: RedisServer
    proxy: TcpProxy | None
    fake: FakeVerisoul
    sender: Sender
    notes: list[str]
    origin: float

    def note(self, message: str) -> None:
        line = f"+{time.monotonic() - self.origin:.0f} s {message}"
        self.notes.append(line)
        log(line)

    def wait_progress(self, fraction: float, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while self.sender.progress < fraction and not self.sender.done and time.monotonic() < deadline:
            time.sleep(0.1)

    def busy_job(self, pid: int, timeout: float = 5.0) -> str | None:
        """Wait (bounded) until the worker with this pid runs a job; its id, or None."""
        import redis
        from rq import Worker

        client = redis.Redis.from_url(self.redis.url, socket_timeout=2)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                with contextlib.suppress(redis.RedisError):
                    for worker in Worker.all(connection=client):
                        if worker.pid == pid and worker.get_state() == "busy":
                            return worker.get_current_job_id()
                time.sleep(0.01)
        finally:
            client.close()
        return None


def fault_worker_sigkill(ctx: Context) -> float:
    workers = ctx.stack.workers()
    for n, at in enumerate(WORKER_KILLS):
        ctx.wait_progress(at)
        name = workers[n % len(workers)]
        proc = ctx.stack.current[name]
        job = ctx.busy_job(proc.pid)
        ctx.stack.signal(name, signal.SIGKILL)
        ctx.note(f"SIGKILL {name} pid {proc.pid} (job in hand: {job or 'none seen within 5 s'})")
        time.sleep(RESTART_AFTER_KILL)
        proc.orphans = _pgid_members(proc.pid)
        if proc.orphans:
            ctx.note(f"{name} pid {proc.pid}: its process group still runs {proc.orphans}")
        ctx.stack.start(name)
        ctx.note(f"restarted {name}")
    return time.monotonic()


def fault_redis_sigkill(ctx: Context) -> float:
    ctx.wait_progress(FAULT_AT)
    ctx.redis.kill()
    ctx.note(f"SIGKILL redis-server; restart in {REDIS_KILLED_FOR:.0f} s")
    time.sleep(REDIS_KILLED_FOR)
    ctx.redis.start()
    ctx.note("redis-server restarted (AOF reloaded)")
    return time.monotonic()


def fault_redis_down(ctx: Context) -> float:
    ctx.wait_progress(FAULT_AT)
    began = time.monotonic()
    ctx.redis.stop()
    ctx.note("redis-server stopped (SIGTERM)")
    time.sleep(max(0.0, ctx.settings.durations["redis-down"] - (time.monotonic() - began)))
    ctx.redis.start()
    ctx.note("redis-server restarted on the same port and data")
    return time.monotonic()


def fault_db_down(ctx: Context) -> float:
    assert ctx.proxy is not None
    ctx.wait_progress(FAULT_AT)
    ctx.proxy.set_mode("reset")
    ctx.note(f"database unreachable: new connections reset, {ctx.proxy.cut()} open ones cut")
    time.sleep(ctx.settings.durations["db-down"])
    ctx.proxy.set_mode("forward")
    ctx.note("database reachable again")
    return time.monotonic()


def fault_verisoul_down(ctx: Context) -> float:
    ctx.wait_progress(FAULT_AT)
    ctx.fake.control("POST", "config", json={"fail_rate_500": 0.5, "fail_rate_429": 1.0})
    ctx.note("Verisoul failing every request (half 500, half 429)")
    time.sleep(ctx.settings.durations["verisoul-down"])
    ctx.fake.control("POST", "config", json={"fail_rate_500": 0.0, "fail_rate_429": 0.0})
    ctx.note("Verisoul answering again")
    return time.monotonic()


def fault_deploy(ctx: Context) -> float:
    ctx.wait_progress(FAULT_AT)
    names = [name for name, _ in ctx.stack.names()]
    procs = [ctx.stack.signal(name, signal.SIGTERM, group=True) for name in names]
    ctx.note(f"SIGTERM to {', '.join(f'{p.name} pid {p.pid}' for p in procs)}")
    began = time.monotonic()
    for proc in procs:
        if not ctx.stack.wait_exit(proc, max(0.1, STOP_TIMEOUT - (time.monotonic() - began))):
            proc.signaled = "SIGKILL (still running 30 s after SIGTERM)"
            _kill_group(proc.pid, signal.SIGKILL)
            ctx.stack.wait_exit(proc, 10)
            ctx.note(f"{proc.name} pid {proc.pid} still ran {STOP_TIMEOUT:.0f} s after SIGTERM: SIGKILLed")
    ctx.note(f"all stopped after {time.monotonic() - began:.1f} s; restart in 3 s")
    time.sleep(3)
    for name in names:
        ctx.stack.start(name)
    ctx.note("all restarted")
    return time.monotonic()


def fault_clock_skew(ctx: Context) -> float:
    tolerance = int(ctx.stack.env["PERSONA_SIGNATURE_TOLERANCE"])
    edge = tolerance - SKEW_MARGIN
    signed: Counter[int] = Counter()

    def skew() -> int:  # alternately ahead of and behind our clock
        offset = edge if sum(signed.values()) % 2 == 0 else -edge
        signed[offset] += 1
        return offset

    ctx.wait_progress(0.2)
    ctx.sender.skew = skew
    ctx.note(f"sender clock skewed ±{edge} s (tolerance {tolerance} s)")
    ctx.wait_progress(0.8, timeout=120)
    ctx.sender.skew = None
    ctx.note(f"sender clock back: {signed[edge]} deliveries signed {edge} s ahead, {signed[-edge]} behind")
    return time.monotonic()


def fault_baseline(ctx: Context) -> float:
    ctx.wait_progress(FAULT_AT)
    ctx.note("no fault; the clock starts here")
    return time.monotonic()


FAULT_SCRIPTS: dict[str, Callable[[Context], float]] = {
    "baseline": fault_baseline,
    "worker-sigkill": fault_worker_sigkill,
    "redis-sigkill": fault_redis_sigkill,
    "redis-down": fault_redis_down,
    "db-down": fault_db_down,
    "verisoul-down": fault_verisoul_down,
    "deploy": fault_deploy,
    "clock-skew": fault_clock_skew,
}


# ---------------------------------------------------------------------------------------------
# One scenario


@dataclass
class Row:
    fault: str
    database: str
    users: int = 0
    events: int = 0
    posts: int = 0
    acknowledged: int = 0
    not_acknowledged: int = 0
    lost: int = 0
    applied_twice: int = 0
    wrong_records: int = 0
    double_enrolls: int = 0
    converge_seconds: float | None = None
    cap: float = 0.0
    refusals: dict[str, int] = field(default_factory=dict)
    queued_twice: int = 0
    processes: list[dict] = field(default_factory=list)
    exited_on_their_own: list[str] = field(default_factory=list)
    log_findings: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    skipped: str | None = None
    log_dir: str | None = None

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.acknowledged > 0
            and self.not_acknowledged == self.lost == self.applied_twice == self.wrong_records == 0
            and self.double_enrolls == 0
            and self.converge_seconds is not None
            and self.converge_seconds <= TARGET_SECONDS
        )

    def as_json(self) -> dict:
        data = {k: v for k, v in self.__dict__.items()}
        data["ok"] = self.ok
        data["verdict"] = _verdict(self)
        return data


def _admin_engine(settings: Settings):
    return create_engine(engine_url(settings.postgres_url), isolation_level="AUTOCOMMIT")


@contextlib.contextmanager
def _database(settings: Settings, work: Path, index: int):
    """(DATABASE_URL for the stack, URL for the checker, the proxy or None); the database dropped at the end."""
    if settings.database == "sqlite":
        url = f"sqlite:///{work / 'chaos.db'}"
        yield url, url, None
        return
    admin = make_url(engine_url(settings.postgres_url))
    name = f"chaos_{os.getpid()}_{index}"
    engine = _admin_engine(settings)
    with engine.connect() as db:
        db.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        db.execute(text(f'CREATE DATABASE "{name}"'))
    proxy = TcpProxy(admin.host or "127.0.0.1", admin.port or 5432).start()
    try:
        through = admin.set(host="127.0.0.1", port=proxy.port, database=name, drivername="postgresql")
        direct = admin.set(database=name)
        yield through.render_as_string(hide_password=False), direct.render_as_string(hide_password=False), proxy
    finally:
        proxy.stop()
        with engine.connect() as db:
            db.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


def _environment(redis_url: str, database_url: str, verisoul_url: str, port: int, work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PERSONA_", "VERISOUL_", "HOST_", "SENTRY_"))}
    env.update(
        PERSONA_WEBHOOK_SECRETS=SECRET,
        PERSONA_SIGNATURE_TOLERANCE=os.environ.get("PERSONA_SIGNATURE_TOLERANCE", str(DEFAULT_SIGNATURE_TOLERANCE)),
        PERSONA_API_URL="http://127.0.0.1:9",  # nothing there: never the real Persona, whatever .env says
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        ADMIN_API_TOKEN=TOKEN,
        HOST="127.0.0.1",
        PORT=str(port),
        PROMETHEUS_MULTIPROC_DIR=str(work / "metrics"),
        VERISOUL_API_URL=verisoul_url,
        VERISOUL_API_KEY=FAKE_VERISOUL_KEY,
        VERISOUL_API_FLAVOR=FLAVOR,
        VERISOUL_RATE_LIMIT="100000",
        PYTHONUNBUFFERED="1",
        # This checkout's code, even where the virtualenv's editable install points at another one.
        PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    return env


LOG_LINE_KEYS = ("message", "exception", "reason", "outcome")


EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception|Interrupt|Exit|Timeout|Warning)\b")
IDS = re.compile(r"\b(e_)?(evt|inq|ver|act|user)_\w+|\b[0-9a-f]{16,}\b|[0-9]+")


def _generic(message: str) -> str:
    """A log message with its ids and numbers masked, so that lines differing only in them group together; of a
    traceback, its first line and the exception it ends with."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    text_ = lines[0]
    if len(lines) > 1:
        raised = [line for line in lines[1:] if EXCEPTION_LINE.match(line)]
        text_ += " … " + (raised[-1] if raised else lines[-1])
    return IDS.sub("#", text_)[:220]


def _log_findings(log_dir: Path) -> dict[str, list[str]]:
    """Per log file: its error-level lines and tracebacks, grouped, most frequent first."""
    findings = {}
    for path in sorted(log_dir.glob("*.log")):
        counts: Counter = Counter()
        for raw in path.read_text(errors="replace").splitlines():
            line = raw.strip()
            if not line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if isinstance(entry, dict):
                if entry.get("level") not in ("error", "critical", "warning"):
                    continue
                said = " | ".join(str(entry[k]) for k in LOG_LINE_KEYS if entry.get(k))
                counts[f"{entry.get('level')}: {_generic(said)}"] += 1
            elif re.search(r"Traceback|Error|Exception|quitting|Killed|WORKER TIMEOUT", line):
                counts[f"raw: {_generic(line)}"] += 1
        if counts:
            findings[path.name] = [f"{n}× {what}" for what, n in counts.most_common(6)]
    return findings


def _process_rows(stack: Stack, began: float) -> list[dict]:
    return [
        {
            "name": p.name,
            "pid": p.pid,
            "exit": p.exit_code,
            "signaled": p.signaled,
            "on_its_own": p.on_its_own,
            "started_s": round(p.started - began, 1),
            "exited_s": None if p.exited is None else round(p.exited - began, 1),
            "orphans": p.orphans,
            "log": p.log_path.name,
            "last_line": _last_line(p.log_path) if p.on_its_own else None,
        }
        for p in stack.runs
    ]


def _last_line(path: Path) -> str | None:
    with contextlib.suppress(OSError):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1][:300] if lines else None
    return None


def _converge(row: Row, ctx: Context, checker: Checker, ended: float) -> dict[str, list[str]]:
    """Poll until the sender is done and every record matches, or the cap; the last problems found."""
    problems: dict[str, list[str]] = {"(sender)": ["still posting"]}
    last = None
    while True:
        if ctx.sender.done:
            if last is None:
                given_up = len(ctx.sender.not_acked_ids())
                ctx.note(f"stream posted: {len(ctx.sender.acked_ids())} events acknowledged, {given_up} given up")
            try:
                problems = checker.problems(ctx.sender.acked_ids())
            except (requests.RequestException, OSError) as error:
                problems = {"(harness)": [f"could not check: {error!r}"]}
            if len(problems) != last and problems:  # progress, in the notes only when it changes
                key, found = next(iter(sorted(problems.items())))
                ctx.note(f"{len(problems)} users differ, e.g. {key}: {'; '.join(found)[:160]}")
            last = len(problems)
            if not problems:
                row.converge_seconds = round(time.monotonic() - ended, 1)
                ctx.note(f"converged {row.converge_seconds} s after the fault ended")
                return problems
        if time.monotonic() - ended > ctx.settings.cap:
            ctx.note(f"not converged {ctx.settings.cap:.0f} s after the fault ended")
            return problems
        time.sleep(POLL_SECONDS)


def _measure(row: Row, sender: Sender, checker: Checker, problems: dict[str, list[str]]) -> None:
    acked = sender.acked_ids()
    row.acknowledged, row.not_acknowledged = len(acked), len(sender.not_acked_ids())
    if problems and "(sender)" in problems:  # stopped at the cap: compare what was acknowledged so far
        problems = checker.problems(acked)
    stored, twice, history_twice = checker.stored()
    lost = sorted(acked - stored)
    doubles = checker.double_enrolls()
    row.lost = len(lost)
    row.applied_twice = len(set(twice) | set(history_twice))
    row.wrong_records = sum(1 for key in problems if not key.startswith("(")) + ("(accounts of no user)" in problems)
    row.double_enrolls = len(doubles)
    row.refusals = dict(sender.answers.most_common())
    row.queued_twice = sum(1 for n in sender.queued.values() if n > 1)
    row.examples = {
        "lost": lost[:10],
        "not acknowledged": sorted(sender.not_acked_ids())[:10],
        "applied twice": sorted(set(twice) | set(history_twice))[:10],
        "double enrolls": doubles[:10],
        "wrong records": [f"{k}: {'; '.join(v)[:300]}" for k, v in sorted(problems.items())[:8]],
    }
    if "(harness)" in problems:
        row.error = problems["(harness)"][0]


def run_scenario(fault: str, settings: Settings, index: int, work: Path) -> Row:
    """One fault on fresh Redis, database and fake Verisoul; everything started here is stopped here, in the
    reverse order (the processes before the servers they use)."""
    row = Row(fault=fault, database=settings.database, cap=settings.cap, log_dir=str(work))
    began = time.monotonic()
    if fault == "db-down" and settings.database != "postgresql":
        row.skipped = "needs --database postgresql (the proxy sits in front of PostgreSQL)"
        log(f"{fault}: skipped: {row.skipped}")
        return row
    work.mkdir(parents=True, exist_ok=True)
    stack: Stack | None = None
    load_before = os.getloadavg()[0]
    try:
        with contextlib.ExitStack() as cleanup:
            database_url, direct_url, proxy = cleanup.enter_context(_database(settings, work, index))
            redis_server = RedisServer(work / "redis")
            cleanup.callback(redis_server.cleanup)
            redis_server.start()
            fake = FakeVerisoul(work / "fake-verisoul.log")
            cleanup.callback(fake.stop)
            fake.control("POST", "config", json={"rate_limit_per_minute": None})
            env = _environment(redis_server.url, database_url, fake.url, free_port(), work)
            release = subprocess.run(
                procfile_command("release"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
            )
            (work / "release.log").write_text(release.stdout + release.stderr)
            if release.returncode != 0:
                raise RuntimeError(f"release ({shlex.join(procfile_command('release'))}) exited {release.returncode}")
            stack = Stack(env, work, began)
            cleanup.callback(stack.stop_all)
            stack.start_all()
            if stack.wait_ready() is None:
                raise RuntimeError(f"the web process did not become ready; logs in {work}")
            started = datetime.now(UTC)
            stream = generate(settings.seed + index, settings.users, started)
            posts = deliveries(stream, settings.seed + index)
            row.users, row.events, row.posts = len(stream.users), len(stream.event_ids), len(posts)
            log(f"{fault}: {row.users} users, {row.events} events, {row.posts} posts at {settings.rate:g}/s")
            sender = Sender(stack.url, posts, settings.rate, settings.give_up)
            cleanup.callback(sender.stop)
            checker = Checker(stream, started, stack.url, fake, direct_url)
            cleanup.callback(checker.close)
            ctx = Context(settings, stack, redis_server, proxy, fake, sender, row.notes, began)
            sender.start()
            ended = FAULT_SCRIPTS[fault](ctx)
            ctx.note("fault over; waiting for convergence")
            problems = _converge(row, ctx, checker, ended)
            sender.stop()
            _measure(row, sender, checker, problems)
    except Exception as error:  # a broken scenario is a row of its own, not the end of the suite
        row.error = f"{type(error).__name__}: {error}"
        log(f"{fault}: {row.error}")
    finally:
        if stack is not None:
            row.processes = _process_rows(stack, began)
            row.exited_on_their_own = [
                f"{p.name} pid {p.pid} exit {p.exit_code} at +{p.exited - began:.0f} s"
                for p in stack.runs
                if p.on_its_own and p.exited is not None  # exited is set with exit_code, at reaping
            ]
        row.log_findings = _log_findings(work)
        row.seconds = round(time.monotonic() - began, 1)
        row.notes.append(
            f"machine load (1 min average, {os.cpu_count()} CPUs): {load_before:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end"
        )
    return row


# ---------------------------------------------------------------------------------------------
# Output


def _converge_text(row: Row) -> str:
    if row.error:
        return "error"
    if row.skipped:
        return "skipped"
    return f">{row.cap:.0f}" if row.converge_seconds is None else f"{row.converge_seconds:.0f}"


def _verdict(row: Row) -> str:
    return "skipped" if row.skipped else "met" if row.ok else "MISSED"


def table(rows: list[Row]) -> str:
    head = (
        "| fault | acknowledged | not acknowledged | lost | applied twice | wrong records | double enrolls "
        "| s to converge | non-2xx answers | exited on their own | target |"
    )
    lines = [head, "|" + " --- |" * 11]
    for row in rows:
        refusals = ", ".join(f"{k}×{v}" for k, v in row.refusals.items()) or "none"
        lines.append(
            f"| {row.fault} | {row.acknowledged}/{row.events} | {row.not_acknowledged} | {row.lost} | "
            f"{row.applied_twice} | {row.wrong_records} | {row.double_enrolls} | {_converge_text(row)} | "
            f"{refusals} | {len(row.exited_on_their_own)} | {_verdict(row)} |"
        )
    return "\n".join(lines)


def details(rows: list[Row]) -> str:
    out = []
    for row in rows:
        logs = row.log_dir or "not kept (--keep-logs DIR)"
        out.append(f"\n## {row.fault}: {FAULTS[row.fault]} ({row.seconds:.0f} s, logs {logs})")
        if row.error:
            out.append(f"  error: {row.error}")
        if row.skipped:
            out.append(f"  skipped: {row.skipped}")
        out += [f"  {note}" for note in row.notes]
        for p in row.processes:
            status = "running at the end" if p["exit"] is None else f"exit {p['exit']}"
            how = "ON ITS OWN" if p["on_its_own"] else (p["signaled"] or "")
            orphans = f"; left running in its group: {p['orphans']}" if p["orphans"] else ""
            out.append(f"  process {p['name']} pid {p['pid']}: {status} ({how}){orphans}")
            if p.get("last_line"):
                out.append(f"    its last line: {p['last_line']}")
        if row.queued_twice:
            out.append(f"  {row.queued_twice} event ids answered 'queued' more than once")
        for what, examples in row.examples.items():
            if examples:
                out.append(f"  {what}: {examples}")
        for name, lines in row.log_findings.items():
            out.append(f"  log {name}:")
            out += [f"    {line}" for line in lines]
    return "\n".join(out)


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True)
        return head.stdout.strip() + ("+uncommitted" if dirty.stdout.strip() else "")
    except OSError:
        return "?"


def run(settings: Settings) -> list[Row]:
    """Every selected fault, one after the other; each its own Row."""
    rows = []
    base = settings.keep_logs
    temporary = None
    if base is None:
        temporary = tempfile.TemporaryDirectory(prefix="chaos-")
        base = Path(temporary.name)
    try:
        for index, fault in enumerate(settings.faults, start=1):
            log(f"--- {fault}: {FAULTS[fault]}")
            row = run_scenario(fault, settings, index, base.resolve() / fault)
            if temporary is not None:
                row.log_dir = None  # removed at the end; --keep-logs keeps them
            log(f"--- {fault}: {_verdict(row)} in {row.seconds:.0f} s")
            rows.append(row)
    finally:
        if temporary is not None:
            temporary.cleanup()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="faults:\n" + "\n".join(f"  {name:15} {what}" for name, what in FAULTS.items()),
    )  # fmt: skip
    parser.add_argument("--fault", action="append", choices=list(FAULTS), help="repeatable; default: all but baseline")
    parser.add_argument("--users", type=int, default=100, help="users in each fault's stream (default 100)")
    parser.add_argument("--database", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument(
        "--postgres-url", default=os.environ.get("CHAOS_POSTGRES_URL", DEFAULT_POSTGRES),
        help="a PostgreSQL the suite may create databases on (default %(default)s)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--rate", type=float, default=30.0, help="first deliveries per second (default 30)")
    parser.add_argument("--cap", type=float, default=300.0, help="seconds to wait for convergence (default 300)")
    parser.add_argument("--give-up", type=float, default=180.0, help="seconds the sender retries a delivery")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--keep-logs", type=Path, help="keep every process's log under this directory")
    args = parser.parse_args(argv)
    if args.users < 1 or args.rate <= 0 or args.cap <= 0 or args.give_up <= 0:
        parser.error("--users, --rate, --cap and --give-up must be positive")
    settings = Settings(
        faults=args.fault or DEFAULT_FAULTS,
        users=args.users,
        database=args.database,
        postgres_url=args.postgres_url,
        seed=args.seed,
        rate=args.rate,
        cap=args.cap,
        give_up=args.give_up,
        keep_logs=args.keep_logs,
    )
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    commit, clock = _commit(), time.monotonic()
    try:
        rows = run(settings)
    except KeyboardInterrupt:
        log("interrupted; every process started was stopped")
        return 130
    took = time.monotonic() - clock
    if args.json:
        document = {
            "commit": commit,
            "seconds": round(took, 1),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in settings.__dict__.items()},
            "target": {"converge_seconds": TARGET_SECONDS, "others": 0},
            "rows": [row.as_json() for row in rows],
        }
        print(json.dumps(document, indent=2, default=str))
    else:
        print(f"# fault suite: commit {commit}, {settings.users} users, {settings.database}, {took:.0f} s\n")
        print(table(rows))
        print(details(rows))
    return 0 if all(row.ok or row.skipped for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
