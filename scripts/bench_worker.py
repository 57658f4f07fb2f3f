"""Worker rows of scripts/bench.py: events applied per second against RQ no-op jobs per second, and the
per-event cost of long inquiries. Run them alone with

    .venv/bin/python -m scripts.bench --only worker        (or: python -m scripts.bench_worker)

Each row is one burst of the Procfile's worker command (`rq worker --worker-class workers.worker.Worker
--config workers.rq_settings --burst`, N processes) over a queue laid out as

    warm-up events | barrier | A1 | barrier | B1 | barrier | B2 | barrier | A2 | barrier | A3 | ...

(A and B: events and no-op jobs, or a long inquiry's events and short inquiries' events; one pair per
repetition, back to back, the order alternating) in the bench's own Redis. Events are queued exactly as
the webhook queues them (`EventQueue.enqueue_once` of what `minimise` makes of a real body;
scripts/bench_events.py), no-op jobs with plain `Queue.enqueue`.
The barriers (scripts/bench_jobs.py) time each phase from the moment every process is ready to the
moment its last job is done: process start-up, imports and the first connections fall outside, and so do
the Verisoul sync jobs the events queue (served only when no event waits, i.e. after the last barrier;
no Verisoul is configured, as in the dev stack without one). The database is fresh for each row; each
repetition's events are new ones (new ids, users and inquiries).

`synthetic_events` is kept for scripts/bench_replay.py.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from dataclasses import dataclass
from itertools import count as counter

import psycopg
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from domain.events import QueuedEvent
from runtime.config import Config
from scripts import bench_jobs
from scripts.bench_events import lifecycle_stream, long_inquiry_stream
from scripts.bench_stack import SECRET, Context, libpq_url, progress, worker_command
from scripts.bench_table import NO_TARGET, Row, Target, median, spread, verdict
from store.queue import EventQueue

PHASE_LIMIT = 900.0  # seconds a phase may take before the run is abandoned
_RUN_IDS = counter(1)


def synthetic_events(users: int, inquiries: int, seed: int = 1) -> list[QueuedEvent]:
    """users x inquiries x (created, pending, completed, approved), shuffled, as the webhook queues them."""
    return lifecycle_stream("b", users, inquiries, seed)


class BenchError(RuntimeError):
    """A run that does not count: a worker failed, a job failed, an event was not recorded."""


@dataclass
class Phase:
    label: str
    events: list[QueuedEvent] | None = None
    noop: int = 0

    @property
    def size(self) -> int:
        return len(self.events) if self.events is not None else self.noop


def _config(ctx: Context, database_url: str) -> Config:
    return Config(webhook_secrets=(SECRET,), redis_url=ctx.redis.url, database_url=database_url)


def recorded_events(database_url: str) -> int:
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as connection:
            return connection.execute("SELECT count(*) FROM events").fetchone()[0]
    with psycopg.connect(libpq_url(database_url)) as connection:
        [(count,)] = connection.execute("SELECT count(*) FROM events").fetchall()
        return count


class WorkerRun:
    """One burst of `workers` processes over warm-up, then phases separated by barriers."""

    def __init__(self, ctx: Context, database_url: str, workers: int, worker_database_url: str | None = None):
        """`worker_database_url`: where the workers reach the database (e.g. through a proxy), if not directly."""
        self.ctx, self.database_url, self.workers = ctx, database_url, workers
        self.worker_database_url = worker_database_url or database_url
        self.run_id = next(_RUN_IDS)
        self.config = _config(ctx, database_url)
        self.queue = Queue(self.config.events_queue, connection=ctx.redis.client)

    def _barrier(self, index: int) -> str:
        name = f"r{self.run_id}b{index}"
        for _ in range(self.workers):
            self.queue.enqueue(bench_jobs.barrier, name, self.workers, job_timeout=int(bench_jobs.WAIT_LIMIT) + 60)
        return bench_jobs.PREFIX + name

    def _enqueue(self, warmup: list[QueuedEvent], phases: list[Phase]) -> list[str]:
        events = EventQueue(self.ctx.redis.client, self.config)
        for event in warmup:
            events.enqueue_once(event)
        barriers = [self._barrier(0)]
        for index, phase in enumerate(phases, start=1):
            for event in phase.events or ():
                if not events.enqueue_once(event):
                    raise BenchError(f"event {event['event_id']} was taken for a duplicate")
            for _ in range(phase.noop):
                self.queue.enqueue(bench_jobs.noop)  # plain Queue.enqueue: the worker's ceiling
            barriers.append(self._barrier(index))
        return barriers

    def run(self, phases: list[Phase], warmup: list[QueuedEvent], at_barrier=None) -> dict[str, float]:
        """Seconds per phase label. `at_barrier(index)` runs while every worker is parked at barrier `index`."""
        self.ctx.redis.flush()
        barriers = self._enqueue(warmup, phases)
        env = self.ctx.env(self.worker_database_url)
        processes = [
            self.ctx.children.start(f"worker-r{self.run_id}-{n}", worker_command(), env) for n in range(self.workers)
        ]
        try:
            seconds = self._drive(barriers, phases, processes, at_barrier)
            self._wait_exit(processes)
        finally:
            for process in processes:
                self.ctx.children.stop(process)
        self._check(warmup, phases)
        return seconds

    def _drive(self, barriers, phases, processes, at_barrier) -> dict[str, float]:
        redis, went, seconds = self.ctx.redis.client, None, {}
        for index, key in enumerate(barriers):
            completed = self._wait_arrivals(key, processes)
            if went is not None:
                seconds[phases[index - 1].label] = completed - went
            if at_barrier is not None:
                at_barrier(index)
            went = time.time()
            redis.rpush(key + ":go", *["go"] * self.workers)
        return seconds

    def _wait_arrivals(self, key: str, processes) -> float:
        """The time the last worker reached the barrier (it sets `complete_at`)."""
        redis, deadline = self.ctx.redis.client, time.monotonic() + PHASE_LIMIT
        while (completed := redis.get(key + ":complete_at")) is None:
            if any(process.poll() is not None for process in processes):
                raise BenchError(f"a worker exited before barrier {key}; see worker-r{self.run_id}-*.log")
            if time.monotonic() > deadline:
                raise BenchError(f"barrier {key} not reached within {PHASE_LIMIT:.0f} s")
            # Not timed (the last worker in records the time): polling slowly leaves the CPU to the workers.
            time.sleep(0.005)
        return float(completed)

    def _wait_exit(self, processes, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
            if process.returncode != 0:
                raise BenchError(f"a worker exited with status {process.returncode}; see worker-r{self.run_id}-*.log")

    def _check(self, warmup: list[QueuedEvent], phases: list[Phase]) -> None:
        """Every job ran and succeeded, every event is recorded; else the app's own error, as RQ kept it."""
        redis = self.ctx.redis.client
        registries = ((FailedJobRegistry, "failed"), (ScheduledJobRegistry, "failed and awaiting a retry"))
        for name in self.config.queues:
            for registry, what in registries:
                jobs = registry(name, connection=redis)
                if jobs.count:
                    job_id = jobs.get_job_ids()[0]
                    raise BenchError(
                        f"{jobs.count} jobs {what} on {name}, e.g. {job_id}: {_error_of(job_id, redis)} "
                        f"(worker logs: worker-r{self.run_id}-*.log)"
                    )
        expected = len(warmup) + sum(len(phase.events or ()) for phase in phases)
        recorded = recorded_events(self.database_url)
        if recorded != expected:
            raise BenchError(f"{recorded} events recorded of {expected} queued")


def _error_of(job_id: str, redis) -> str:
    """The last line of the job's latest exception (e.g. `PermanentJobError: event evt_..: KeyError: ...`)."""
    try:
        job = Job.fetch(job_id, connection=redis)
        result = job.latest_result()
        text = (result.exc_string if result is not None else None) or job.exc_info or ""
    except Exception as error:  # noqa: BLE001 - a diagnostic only
        return f"(its error could not be read: {error!r})"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no error recorded)"


# --- the rows -------------------------------------------------------------------------------------------

TARGETS = {("sqlite", 1): Target.at_least(0.6), ("postgresql", 1): Target.at_least(0.5)}
PROCESS_COUNTS = (1, 2, 4)
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def _sizes(ctx: Context) -> dict[str, int]:
    """Events per phase: users x 4 inquiries x 4 lifecycle events; the long inquiry's length."""
    if ctx.quick:
        return {"users": 4, "long": 200}
    return {"users": 32, "long": 1000}


def paired_phases(reps: int, a: str, b: str) -> list[tuple[int, str]]:
    """(rep, label) in the order A B, B A, A B, ...: each pair measured back to back, the order alternating
    so that neither side always runs first (on a warmer cache, or later in a busy minute)."""
    order = []
    for rep in range(reps):
        order += [(rep, a), (rep, b)] if rep % 2 == 0 else [(rep, b), (rep, a)]
    return order


def _events_vs_noop(ctx: Context, kind: str, workers: int, users: int) -> list[tuple[float, float]]:
    """One burst of `workers` processes: every repetition's events and no-op phases, interleaved;
    (events/s, no-op jobs/s) per repetition."""
    streams = {rep: lifecycle_stream(f"e{rep}x", users, 4) for rep in range(ctx.reps)}
    phases = []
    for rep, label in paired_phases(ctx.reps, "events", "noop"):
        events = streams[rep]
        if label == "events":
            phases.append(Phase(f"{label}{rep}", events=events))
        else:
            phases.append(Phase(f"{label}{rep}", noop=len(events)))
    warmup = lifecycle_stream("w", 2 * workers, 1)
    seconds = WorkerRun(ctx, ctx.fresh_database(kind), workers).run(phases, warmup)
    return [
        (len(streams[rep]) / seconds[f"events{rep}"], len(streams[rep]) / seconds[f"noop{rep}"])
        for rep in range(ctx.reps)
    ]


def worker_rows(ctx: Context) -> None:
    users = _sizes(ctx)["users"]
    for kind in ("sqlite", "postgresql"):
        for workers in PROCESS_COUNTS:
            progress(
                f"worker: {LABELS[kind]}, {workers} process(es), {users * 16} events vs no-op jobs, {ctx.reps} reps"
            )
            what = _what(kind, workers, users * 16)
            try:
                _add_row(ctx, what, TARGETS.get((kind, workers), NO_TARGET), _events_vs_noop(ctx, kind, workers, users))
            except BenchError as error:
                progress(f"worker: run failed: {error}")
                ctx.table.add(Row.invalid(what, str(error)))
    _long_inquiry_row(ctx, _sizes(ctx)["long"])


def _what(kind: str, workers: int, size: int) -> str:
    cpus = f", os.cpu_count()={os.cpu_count()}" if workers > 1 else ""
    processes = f"{workers} process{'es' if workers > 1 else ''}"
    return f"worker events/s vs RQ no-op jobs/s, {LABELS[kind]}, {processes}{cpus} ({size} events)"


def _add_row(ctx: Context, what: str, target: Target, samples: list[tuple[float, float]]) -> None:
    ratios = [events / noop for events, noop in samples]
    ctx.table.add(Row(
        what, spread([e for e, _ in samples], "events/s"), spread([n for _, n in samples], "jobs/s"),
        spread(ratios, digits=2), target.text, verdict(target, median(ratios)),
    ))  # fmt: skip


def _long_inquiry_row(ctx: Context, length: int) -> None:
    """Seconds per event when an inquiry gets `length` events vs when it gets 4: the same event mix and
    count, one worker, PostgreSQL. A per-event cost that grows with the inquiry's history shows here."""
    what = f"per-event cost, {length:,} vs 4 events per inquiry, PostgreSQL, 1 process ({length} events each)"
    progress(f"worker: {length} events in 1 inquiry vs in {length // 4} inquiries x {ctx.reps} reps")
    streams = {}
    phases = []
    for rep, label in paired_phases(ctx.reps, "long", "short"):
        if label == "long":
            streams[(rep, label)] = long_inquiry_stream(f"l{rep}x", 1, length)
        else:
            streams[(rep, label)] = long_inquiry_stream(f"s{rep}x", length // 4, 4)
        phases.append(Phase(f"{label}{rep}", events=streams[(rep, label)]))
    try:
        seconds = WorkerRun(ctx, ctx.fresh_database("postgresql"), 1).run(phases, lifecycle_stream("w", 2, 1))
    except BenchError as error:
        progress(f"worker: run failed: {error}")
        ctx.table.add(Row.invalid(what, str(error)))
        return
    per_event = {key: seconds[f"{key[1]}{key[0]}"] / len(stream) for key, stream in streams.items()}
    long_costs = [per_event[(rep, "long")] for rep in range(ctx.reps)]
    short_costs = [per_event[(rep, "short")] for rep in range(ctx.reps)]
    ratios = [a / b for a, b in zip(long_costs, short_costs, strict=True)]
    target = Target.at_most(1.2)
    ctx.table.add(Row(
        what, spread([1000 * a for a in long_costs], "ms/event", 2),
        spread([1000 * b for b in short_costs], "ms/event", 2) + " (4 per inquiry)",
        spread(ratios, digits=2), target.text, verdict(target, median(ratios)),
    ))  # fmt: skip


def main() -> None:
    from scripts.bench import main as bench_main

    raise SystemExit(bench_main(["--only", "worker", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
