"""Benchmark: events applied per second with Verisoul healthy vs failing (500s, 429s). Prints figures.

Issue 9 asks that "with Verisoul failing for 5 minutes events are still applied at >= 90% of their normal
rate". This starts its own Redis (no AOF), a migrated database (a temp SQLite file, or a database it
creates and drops on the PostgreSQL server of --database-url), the fake Verisoul, and the Procfile's
`worker` twice and `scheduler` once. Then it runs rounds, interleaved so a busy, shared machine affects
every mode alike: Verisoul healthy, failing with 500, healthy, failing with 429, and so on. In each
round N fresh events (one new user each, `inquiry.approved`, so every event asks for a Verisoul sync)
are put straight into Redis with EventQueue.enqueue_once, and the time from the first enqueue until all
N are rows of `events` gives events/s. Between rounds the fake is made healthy again and both queues
are left to empty; the syncs that failed meanwhile wait in RQ's scheduled registry for their retries
and come back into the sync queue during later rounds, as they would during a real outage.

It never asserts on time: it prints, per mode, the median events/s, the spread, failing/healthy (the
issue's target is >= 0.9), the Verisoul requests the fake received and the sync retries scheduled, and,
from the workers' logs, what the two workers spent their time on while each round's events waited.

    .venv/bin/python -m scripts.bench_verisoul_outage [--database-url postgresql://postgres@127.0.0.1:5432/postgres]
        [--events 400] [--rounds 3] [--keep-logs DIR]

With --database-url the URL names the server (and the database to connect to while creating and dropping
a scratch database `bench_outage_<pid>`, which is where the benchmark runs); nothing else on it is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import requests
from redis import Redis
from rq import Queue, Worker
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from domain.events import QueuedEvent
from runtime.config import Config
from scripts.devstack import procfile_command
from scripts.embedded_redis import EmbeddedRedis
from scripts.fake_verisoul import DEFAULT_API_KEY
from store.db import engine_url, migrate
from store.models import Event
from store.queue import EventQueue
from tests.helpers.events import inquiry_event

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2
SECRET = "bench-verisoul-outage"
POLL_SECONDS = 0.02
ROUND_LIMIT = 120.0  # a round that has not applied all its events by then is reported, not waited on
DRAIN_LIMIT = 120.0
HEALTHY = {"fail_rate_500": 0.0, "fail_rate_429": 0.0}
MODES = {
    "healthy": HEALTHY,
    "failing 500": {"fail_rate_500": 1.0, "fail_rate_429": 0.0},
    "failing 429": {"fail_rate_500": 0.0, "fail_rate_429": 1.0},
}
# One cycle; each failing round has a healthy round right before it (so healthy runs 2 x R rounds).
CYCLE = ("healthy", "failing 500", "healthy", "failing 429")


@dataclass
class Round:
    mode: str
    index: int
    events: int
    seconds: float | None = None  # None: not all applied within ROUND_LIMIT
    applied: int = 0
    enqueue_seconds: float = 0.0
    started_at: float = 0.0  # wall clock (time.time), for the fake's call log and the worker logs
    ended_at: float = 0.0
    calls_window: dict = field(default_factory=dict)  # status -> count, requests while the events waited
    calls_total: int = 0  # requests from the round's start until the queues were empty again
    scheduled_start: int = 0  # sync retries waiting in the scheduled registry at the round's start
    scheduled_end: int = 0  # ... and when the last event was applied
    sync_queued_end: int = 0
    drain_seconds: float | None = None  # queues idle again, Verisoul still as in the round
    scheduled_drained: int = 0  # sync retries scheduled then
    heal_seconds: float | None = None  # queues idle again after Verisoul was made healthy
    drained_at: float = 0.0
    busy: dict = field(default_factory=dict)  # from the worker logs: seconds per kind of job in the window

    @property
    def rate(self) -> float | None:
        return self.events / self.seconds if self.seconds else None


# --- the processes ---


class Fake:
    """The fake Verisoul (`python -m scripts.fake_verisoul --port 0`), as tests/helpers/fake_vendor.py starts it."""

    READY = re.compile(rb"fake Verisoul listening on (http://\S+)")

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        command = [sys.executable, "-m", "scripts.fake_verisoul", "--host", "127.0.0.1", "--port", "0"]
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.url = self._wait_ready()

    def _wait_ready(self, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.READY.search(self.log_path.read_bytes())
            if found:
                return found.group(1).decode()
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the fake Verisoul did not start: {self.log_path.read_text(errors='replace')[-2000:]}")

    def control(self, method: str, path: str, **kwargs):
        answer = requests.request(method, f"{self.url}/_control/{path}", timeout=30, **kwargs)
        answer.raise_for_status()
        return answer.json()

    def configure(self, changes: dict) -> None:
        self.control("POST", "config", json=changes)

    def calls(self) -> list[dict]:
        return self.control("GET", "calls")


def stop_process(process: subprocess.Popen, timeout: float = 20.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# --- the database ---


class ScratchDatabase:
    """A temp SQLite file, or `bench_outage_<pid>` created on the PostgreSQL server of `server_url`."""

    def __init__(self, server_url: str | None, tmp: Path):
        self.server_url = server_url
        self.name = None
        if server_url is None:
            self.url = f"sqlite:///{tmp / 'bench.db'}"
            return
        parsed = make_url(server_url)
        if parsed.get_backend_name() != "postgresql":
            raise SystemExit("--database-url must be a postgresql:// URL (the default is a temp SQLite file)")
        if parsed.host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("--database-url must name a server on 127.0.0.1")
        self.name = f"bench_outage_{os.getpid()}"
        self.url = parsed.set(database=self.name).render_as_string(hide_password=False)

    def create(self) -> None:
        if self.name:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}"')
            self._admin(f'CREATE DATABASE "{self.name}"')
        migrate(self.url)

    def drop(self) -> None:
        if self.name:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def _admin(self, statement: str) -> None:
        if self.server_url is None:  # create() and drop() call it only with a server
            raise RuntimeError("a SQLite scratch database has no server to run statements on")
        engine = create_engine(engine_url(self.server_url), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(statement))
        finally:
            engine.dispose()

    @property
    def label(self) -> str:
        if self.name:
            parsed = make_url(self.url)
            return f"PostgreSQL {parsed.host}:{parsed.port or 5432}/{self.name} (created for this run, dropped after)"
        return f"SQLite {make_url(self.url).database} (temp file)"


# --- one round ---


def make_events(round_index: int, count: int) -> list[QueuedEvent]:
    at = f"2026-01-01T00:{round_index // 60 % 60:02d}:{round_index % 60:02d}.000Z"
    return [
        inquiry_event(f"inq_r{round_index}_{i}", "approved", at, f"bench_r{round_index}_u{i}") for i in range(count)
    ]


def count_events(engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(select(func.count()).select_from(Event))


def wait_until_idle(*queues: Queue) -> float | None:
    """Seconds until every queue is empty and none has a job running; None past DRAIN_LIMIT."""
    started = time.perf_counter()
    registries = [StartedJobRegistry(queue=queue) for queue in queues]
    while time.perf_counter() - started < DRAIN_LIMIT:
        if all(queue.count == 0 for queue in queues) and all(registry.count == 0 for registry in registries):
            return time.perf_counter() - started
        time.sleep(0.1)
    return None


def run_round(round_: Round, queue: EventQueue, engine, fake: Fake, redis: Redis, config: Config, baseline: int) -> int:
    """Enqueue, time until all applied, then heal Verisoul and wait for both queues to empty.
    Returns the new count of event rows."""
    events = make_events(round_.index, round_.events)
    sync_queue = Queue(config.sync_queue, connection=redis)
    events_queue = Queue(config.events_queue, connection=redis)
    scheduled = ScheduledJobRegistry(queue=sync_queue)
    fake.configure(MODES[round_.mode])
    round_.scheduled_start = scheduled.count
    target = baseline + len(events)

    round_.started_at = time.time()
    started = time.perf_counter()
    for event in events:
        queue.enqueue_once(event)
    round_.enqueue_seconds = time.perf_counter() - started
    applied = baseline
    while True:
        applied = count_events(engine)
        if applied >= target:
            round_.seconds = time.perf_counter() - started
            break
        if time.perf_counter() - started > ROUND_LIMIT:
            break
        time.sleep(POLL_SECONDS)
    round_.ended_at = time.time()
    round_.applied = applied - baseline
    round_.scheduled_end = scheduled.count
    round_.sync_queued_end = sync_queue.count

    # Between rounds: both queues empty and no job running, Verisoul still as the round had it (so a
    # failing round's syncs fail and wait in the scheduled registry); then Verisoul healthy again and
    # the queues empty once more. Each wait is bounded.
    round_.drain_seconds = wait_until_idle(events_queue, sync_queue)
    round_.scheduled_drained = scheduled.count
    fake.configure(HEALTHY)
    round_.heal_seconds = wait_until_idle(events_queue, sync_queue)
    round_.drained_at = time.time()
    calls = fake.calls()
    window = [c for c in calls if round_.started_at <= c["at"] <= round_.ended_at]
    for call in window:
        key = str(call["status"])
        round_.calls_window[key] = round_.calls_window.get(key, 0) + 1
    round_.calls_total = sum(1 for c in calls if round_.started_at <= c["at"] <= round_.drained_at)
    return max(applied, count_events(engine))


# --- what the workers did: their JSON logs ---

JOB_START = re.compile(r"^Worker \S+: (persona-events|persona-sync): (.*) \((\S+)\)$")
JOB_END = re.compile(r"Job OK|exceeded maximum retry|Traceback|failed|Successfully completed")


def job_spans(log_path: Path) -> list[tuple[float, float, str, str, bool]]:
    """(start, end, queue, description) per job one worker ran, from its JSON log: a job starts at RQ's
    `Worker w: <queue>: <description> (<id>)` line and ends at the next end-of-job line (`Job OK`, the
    failure's traceback) or, failing that, at the last line before the next job starts."""
    spans: list[tuple[float, float, str, str, bool]] = []
    current: tuple[float, str, str] | None = None  # (start, queue, description) of the job under way
    last_seen = 0.0
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
            at = datetime.fromisoformat(entry["at"]).timestamp()
        except (ValueError, KeyError, TypeError):
            continue
        message = entry.get("message", "")
        start = JOB_START.match(message)
        if start and start.group(2) == "Job OK":
            start = None
        if start:
            if current:
                spans.append((current[0], last_seen, current[1], current[2], True))
            current, last_seen = (at, start.group(1), start.group(2)), at
            continue
        if current is None:
            continue
        last_seen = at
        if entry.get("logger", "").startswith("rq") and JOB_END.search(message):
            spans.append((current[0], last_seen, current[1], current[2], entry.get("level") != "error"))
            current = None
    if current:
        spans.append((current[0], last_seen, current[1], current[2], True))
    return spans


def busy_in(spans: list[tuple[float, float, str, str, bool]], start: float, end: float) -> dict:
    """Worker-seconds (summed over workers) and job counts inside [start, end], by kind of job; also
    `sync_failed`, the sync jobs that raised (Verisoul unavailable: a retry scheduled)."""
    busy: dict = {}
    for span_start, span_end, queue, description, ok in spans:
        overlap = min(span_end, end) - max(span_start, start)
        if overlap < 0 or (overlap == 0 and not start <= span_start <= end):
            continue
        kind = (
            "event"
            if queue == "persona-events"
            else next((name for name in ("sync_verisoul", "sweep_verisoul") if name in description), description)
        )
        seconds, jobs, first = busy.get(kind, (0.0, 0, []))
        if span_start <= start and kind != "event":
            first.append(round(span_end - start, 2))  # a job already running when the round began
        busy[kind] = (seconds + max(overlap, 0.0), jobs + 1, first)
        if kind == "sync_verisoul" and not ok:
            busy["sync_failed"] = busy.get("sync_failed", 0) + 1
    return busy


# --- the report ---


def fmt_rate(value: float | None) -> str:
    return f"{value:7.1f}" if value is not None else "      -"


def report(rounds: list[Round], title: list[str]) -> None:
    print()
    for line in title:
        print(line)
    print()
    print("per round (in order):")
    print(
        "  #  mode          events/s  s to apply  enqueue s  sync retries scheduled      syncs queued   Verisoul requests       drain s"
    )
    print(
        "                                                     start  window end  drained  at window end  window | round+drain  as-is  healed"
    )
    for r in rounds:
        seconds = f"{r.seconds:9.2f}" if r.seconds is not None else f"  >{ROUND_LIMIT:.0f} ({r.applied}/{r.events})"
        calls = ",".join(f"{k}:{v}" for k, v in sorted(r.calls_window.items())) or "0"
        drains = "  ".join(
            f"{d:6.1f}" if d is not None else f" >{DRAIN_LIMIT:.0f}" for d in (r.drain_seconds, r.heal_seconds)
        )
        print(
            f"  {r.index:<2} {r.mode:<12} {fmt_rate(r.rate)}  {seconds}  {r.enqueue_seconds:9.2f}"
            f"  {r.scheduled_start:>5}  {r.scheduled_end:>10}  {r.scheduled_drained:>7}  {r.sync_queued_end:>13}"
            f"  {calls:>6} | {r.calls_total:<11}  {drains}"
        )
    print()
    healthy = [r.rate for r in rounds if r.mode == "healthy" and r.rate]
    healthy_median = statistics.median(healthy) if healthy else None
    print("per mode:")
    print(
        "  mode          rounds  median ev/s  min-max ev/s   ratio vs healthy                Verisoul requests (all rounds: windows | round+drain)  sync retries scheduled after the drain (median, max)"
    )
    for mode in MODES:
        mine = [r for r in rounds if r.mode == mode]
        if not mine:
            continue
        rates = [r.rate for r in mine if r.rate]
        unfinished = len(mine) - len(rates)
        median = statistics.median(rates) if rates else None
        spread = f"{min(rates):6.1f}-{max(rates):<6.1f}" if rates else "     -       "
        ratio = f"{median / healthy_median:5.2f}" if median and healthy_median else "    -"
        target = (
            ""
            if mode == "healthy"
            else (
                "  (target >= 0.90: met)"
                if median and healthy_median and median / healthy_median >= 0.9
                else "  (target >= 0.90: NOT met)"
            )
        )
        window_calls = sum(sum(r.calls_window.values()) for r in mine)
        total_calls = sum(r.calls_total for r in mine)
        retries = [r.scheduled_drained for r in mine]
        note = f" ({unfinished} round(s) did not finish in {ROUND_LIMIT:.0f} s)" if unfinished else ""
        print(
            f"  {mode:<12}  {len(mine):>6}  {fmt_rate(median):>11}  {spread}   {ratio}{target:<28}"
            f"  {window_calls:>8} | {total_calls:<8}                                       {statistics.median(retries):>6.0f}, {max(retries)}{note}"
        )
    print()
    print(
        "what the 2 workers did while each round's events waited (worker-seconds, summed over both workers; from their logs):"
    )
    print(
        "  mode          ev/s   window s  events jobs (s)   sync_verisoul jobs (s), failed  sweep (s)  jobs already running at round start (s into the round they ended)"
    )
    for r in rounds:
        if not r.busy:
            continue
        event_s, event_n, _ = r.busy.get("event", (0.0, 0, []))
        sync_s, sync_n, sync_first = r.busy.get("sync_verisoul", (0.0, 0, []))
        sweep_s, sweep_n, _ = r.busy.get("sweep_verisoul", (0.0, 0, []))
        failed = r.busy.get("sync_failed", 0)
        other = {
            k: v for k, v in r.busy.items() if k not in ("event", "sync_verisoul", "sweep_verisoul", "sync_failed")
        }
        extra = "  other: " + ", ".join(f"{k} {v[1]} ({v[0]:.2f} s)" for k, v in other.items()) if other else ""
        window = r.ended_at - r.started_at
        print(
            f"  {r.mode:<12} {fmt_rate(r.rate)}  {window:7.2f}  {event_n:>5} ({event_s:6.2f})"
            f"  {sync_n:>8} ({sync_s:6.2f}), {failed:<4}   {sweep_n} ({sweep_s:4.2f})  {sync_first}{extra}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="a postgresql:// server on 127.0.0.1 (default: a temp SQLite file)")
    parser.add_argument("--events", type=int, default=400, help="events per round (default 400)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds per failing mode (default 3; healthy runs twice as many)"
    )
    parser.add_argument(
        "--keep-logs", type=Path, help="copy the worker, scheduler and fake logs here before cleaning up"
    )
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench_outage_"))
    database = ScratchDatabase(args.database_url, tmp)
    processes: list[subprocess.Popen] = []
    logs: dict[str, Path] = {}
    redis_server = fake = engine = None
    database_created = False
    rounds: list[Round] = []
    try:
        database_created = True
        database.create()
        redis_server = EmbeddedRedis(tmp / "redis", appendonly=False).start()
        redis = Redis.from_url(redis_server.url)
        fake = Fake(tmp / "fake-verisoul.log")
        fake.configure({"rate_limit_per_minute": None, **HEALTHY})
        config = Config(webhook_secrets=(SECRET,), redis_url=redis_server.url, database_url=database.url)
        env = {
            **os.environ,
            "PERSONA_WEBHOOK_SECRETS": SECRET,
            "REDIS_URL": redis_server.url,
            "DATABASE_URL": database.url,
            "VERISOUL_API_URL": fake.url,
            "VERISOUL_API_KEY": DEFAULT_API_KEY,
            "VERISOUL_API_FLAVOR": "account",
            "VERISOUL_RATE_LIMIT": "100000",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
        }
        (tmp / "metrics").mkdir()
        env.pop("PERSONA_API_KEY", None)  # no hourly reconciliation against the real Persona
        for kind in ["worker"] * WORKERS + ["scheduler"]:
            name = f"{kind}-{len(processes)}"
            logs[name] = tmp / f"{name}.log"
            with open(logs[name], "wb") as log:
                processes.append(
                    subprocess.Popen(
                        procfile_command(kind),
                        cwd=ROOT,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + 60
        while len(Worker.all(connection=redis)) < WORKERS:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise SystemExit(f"persona-events: the workers did not start; logs in {tmp}")
            time.sleep(0.1)

        engine = create_engine(engine_url(database.url))  # plain reads; no BEGIN IMMEDIATE on SQLite
        queue = EventQueue(redis, config)
        schedule = [mode for _ in range(args.rounds) for mode in CYCLE]
        print(
            f"persona-events: measuring events/s applied by {WORKERS} Procfile workers (+1 scheduler) with Verisoul (the fake) "
            f"healthy vs failing; {len(schedule)} rounds of {args.events} events; database {database.label}",
            flush=True,
        )
        applied = count_events(engine)
        for index, mode in enumerate(schedule):
            round_ = Round(mode, index, args.events)
            applied = run_round(round_, queue, engine, fake, redis, config, applied)
            rounds.append(round_)
            rate = (
                f"{round_.rate:.1f} events/s"
                if round_.rate
                else f"not finished in {ROUND_LIMIT:.0f} s ({round_.applied}/{round_.events})"
            )
            print(f"  round {index:2d} {mode:<12} {rate}; sync retries scheduled {round_.scheduled_end}", flush=True)
    finally:
        for process in processes:
            stop_process(process)
        if fake is not None:
            stop_process(fake.process, 10)
            fake.log.close()
        if redis_server is not None:
            redis_server.stop()
        if engine is not None:
            engine.dispose()
        if rounds:
            spans = [span for name, path in logs.items() if name.startswith("worker") for span in job_spans(path)]
            for round_ in rounds:
                round_.busy = busy_in(spans, round_.started_at, round_.ended_at)
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for path in tmp.glob("*.log"):
                shutil.copy(path, args.keep_logs / path.name)
        if database_created:
            try:
                database.drop()
            except Exception as error:  # noqa: BLE001 (report, keep cleaning)
                print(f"persona-events: could not drop {database.name}: {error}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)

    cpus = os.cpu_count()
    title = [
        f"Verisoul outage benchmark: events applied per second (first enqueue -> all N rows in `events`), {args.events} fresh",
        f"users' inquiry.approved per round (each asks for a sync); {WORKERS} `worker` processes + 1 `scheduler` from the Procfile,",
        f"database {database.label}; {cpus} CPUs, shared. Rounds interleaved {' / '.join(CYCLE)}; failing = every",
        "Verisoul request answered 500 (or 429); the fake is healthy again between rounds.",
    ]
    report(rounds, title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
