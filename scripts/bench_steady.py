"""Steady-load and memory rows of scripts/bench.py: the whole pipeline under a constant rate, then RSS.

The Procfile's web command and two of its worker processes (long-running, no --burst) on PostgreSQL and
the bench's Redis. Each run posts distinct signed events (~7 KB, inquiries going through created,
pending, completed, approved; scripts/bench_events.py lifecycle_rows) at a fixed rate, open loop
(scripts/bench_load.py paced_post), 100/s and 200/s alternating, each --reps times.

- POST->record latency: from each POST's scheduled send time until its row is visible in `events`
  to another connection, i.e. committed: a monitor thread asks PostgreSQL every 10 ms which of the
  oldest outstanding event ids (at most 64) are there, and takes the time its query started, so the
  figure is at most ~10 ms late (more for an event committed well out of order) and never early. The reference column is POST->200 (the webhook's
  answer) of the same requests. The notes give the same latency taken from `processed_at`, the
  worker's clock when it started the event (before its transaction commits, so it reads lower).
- Queue depth: LLEN of the events queue every 0.5 s while sending; bounded when a least-squares line
  through the last half of the samples rises by at most max(10, 1% of the events sent meanwhile).
- RSS of the gunicorn master, its workers and each rq worker, once they have handled 10,000 events
  (2,000 with --quick; topped up when the steady runs sent fewer), next to their RSS at start.

    .venv/bin/python -m scripts.bench --only steady,rss
"""

from __future__ import annotations

import threading
import time
from itertools import islice
from pathlib import Path

import psycopg
from rq import Queue, Worker

from runtime.config import DEFAULT_EVENTS_QUEUE, DEFAULT_SYNC_QUEUE
from scripts.bench_events import INQUIRY_7KB, INQUIRY_SLOTS, SignedEvents, Template, lifecycle_rows
from scripts.bench_load import PacedResult, paced_post
from scripts.bench_stack import SECRET, Context, Web, children_of, libpq_url, procfile_command, progress
from scripts.bench_table import Row, Target, median, quantile, spread, verdict

RATES = (100, 200)
POLL = 0.010  # seconds between the monitor's queries
BATCH = 64  # outstanding event ids the monitor asks about at a time, oldest first
SAMPLE = 0.5  # seconds between queue-depth samples
P99_TARGET = Target.at_most(100, "p99 ")
DRAIN_LIMIT = 120.0  # seconds to wait for the last events of a run to be recorded
TOP_UP_RATE = 300  # events/s posted for the RSS row when the steady runs sent fewer than it needs


class Monitor(threading.Thread):
    """Watches the events table for events[i], due at start_at + i / rate; `seen[i]`: when it was visible."""

    def __init__(self, database_url: str, events: SignedEvents, rate: float, count: int, start_at: float):
        super().__init__(daemon=True)
        self.url, self.events, self.rate, self.count = libpq_url(database_url), events, rate, count
        self.start_at = start_at
        self.seen: list[float | None] = [None] * count
        self.stop = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as connection:
                self._watch(connection)
        except Exception as error:  # noqa: BLE001 - reported by the caller
            self.error = error

    def _watch(self, connection) -> None:
        low = 0
        while not self.stop.is_set():
            tick = time.time()
            due = min(self.count, int((tick - self.start_at) * self.rate) + 1)
            while low < due and self.seen[low] is not None:
                low += 1
            # The oldest outstanding ones only: the queue is FIFO and two workers commit at most a couple out of
            # order, while asking for thousands every 10 ms (a backlog) would load the very database measured.
            batch = list(islice((i for i in range(low, due) if self.seen[i] is None), BATCH))
            if batch:
                ids = {self.events.event_id(i): i for i in batch}
                queried = time.time()  # the query's snapshot is taken from here on: visible by then
                found = connection.execute("SELECT event_id FROM events WHERE event_id = ANY(%s)", (list(ids),))
                for (event_id,) in found:
                    self.seen[ids[event_id]] = queried
            if low >= self.count:
                return
            self.stop.wait(max(0.0, POLL - (time.time() - tick)))

    def all_seen(self) -> bool:
        return all(seen is not None for seen in self.seen)


class DepthSampler(threading.Thread):
    """LLEN of the events queue every SAMPLE seconds: (time, depth)."""

    def __init__(self, ctx: Context, key: str):
        super().__init__(daemon=True)
        self.client, self.key = ctx.redis.client, key
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(SAMPLE):
            self.samples.append((time.time(), self.client.llen(self.key)))


def growth(samples: list[tuple[float, int]]) -> float:
    """The rise of a least-squares line through the last half of the samples, over that half."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2:
        return 0.0
    xs, ys = [t for t, _ in half], [d for _, d in half]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    return slope * (xs[-1] - xs[0])


def rss_mb(pid: int) -> float:
    """Resident set size (VmRSS, shared pages included) from /proc, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Stack:
    """The service on PostgreSQL: the Procfile's web and two long-running workers."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.database_url = ctx.fresh_database("postgresql")
        ctx.redis.flush()
        env = ctx.env(self.database_url)
        self.web = Web(ctx.children, "steady-web", env)
        self.workers = [ctx.children.start(f"steady-worker-{n}", procfile_command("worker"), env) for n in range(2)]
        self.queue_key = Queue(DEFAULT_EVENTS_QUEUE, connection=ctx.redis.client).key
        self.sync_key = Queue(DEFAULT_SYNC_QUEUE, connection=ctx.redis.client).key
        self.posted = 0
        self._wait_for_workers()
        self.rss_at_start = self.rss()

    def _wait_for_workers(self, timeout: float = 120.0) -> None:
        """Until both workers have registered with Redis (imports done, listening), before anything is timed."""
        deadline = time.monotonic() + timeout
        while Worker.count(connection=self.ctx.redis.client) < len(self.workers):
            if time.monotonic() > deadline or any(process.poll() is not None for process in self.workers):
                raise RuntimeError("the rq workers did not start; see steady-worker-*.log")
            time.sleep(0.2)
        time.sleep(0.5)  # and are past their first registry clean-up

    def rss(self) -> dict[str, list[float]]:
        """MB per process: the gunicorn master, its workers, the rq workers."""
        master = self.web.process.pid
        return {
            "gunicorn master": [rss_mb(master)],
            "gunicorn workers": [rss_mb(child) for child in children_of(master)],
            "rq workers": [rss_mb(process.pid) for process in self.workers],
        }

    def idle(self, timeout: float = DRAIN_LIMIT) -> int:
        """Wait until both queues are empty (twice, 0.5 s apart); past `timeout`, empty them (the next run
        must start from an empty queue) and return how many jobs were dropped."""
        deadline, quiet, client = time.monotonic() + timeout, 0, self.ctx.redis.client
        while quiet < 2 and time.monotonic() < deadline:
            quiet = quiet + 1 if client.llen(self.queue_key) + client.llen(self.sync_key) == 0 else 0
            time.sleep(0.5)
        dropped = 0
        if quiet < 2:
            queues = (Queue(name, connection=client) for name in (DEFAULT_EVENTS_QUEUE, DEFAULT_SYNC_QUEUE))
            dropped = sum(queue.empty() or 0 for queue in queues)
            time.sleep(1.0)  # the jobs the workers hold finish
        for process in self.workers:
            if process.poll() is not None:
                raise RuntimeError("an rq worker exited; see steady-worker-*.log")
        return dropped

    def stop(self) -> None:
        self.web.stop()
        for process in self.workers:
            self.ctx.children.stop(process)


def _drain_cap(seconds: float) -> float:
    """Seconds after the last POST to wait for the last records: a service that cannot keep up would
    otherwise take minutes per run to drain; what is still missing then is counted as slower than that."""
    return max(10.0, seconds)


def _run(ctx: Context, stack: Stack, rate: int, seconds: float, tag: str) -> dict:
    count = int(rate * seconds)
    template = Template(INQUIRY_7KB, INQUIRY_SLOTS)
    inquiries = count // 4 + 1
    events = SignedEvents.build(template, lifecycle_rows(tag, inquiries, users=inquiries // 2 + 1)[:count], SECRET)
    start_at = time.time() + 0.5
    monitor = Monitor(stack.database_url, events, rate, count, start_at)
    sampler = DepthSampler(ctx, stack.queue_key)
    monitor.start()
    sampler.start()
    posted = paced_post(stack.web.port, events, rate, count, start_at=start_at)
    sampler.stop.set()
    stack.posted += count
    monitor.join(timeout=_drain_cap(seconds))
    monitor.stop.set()
    monitor.join(timeout=5)
    return _measure(stack, events, posted, monitor, sampler, count, seconds + _drain_cap(seconds))


def _measure(stack, events, posted: PacedResult, monitor: Monitor, sampler: DepthSampler, count: int, bound: float):
    """Latencies in seconds; an event not recorded by the end of the wait counts as `bound` (a lower bound)."""
    if (problem := posted.problem("queued")) is not None:
        raise RuntimeError(f"the webhook answered: {problem}")
    if monitor.error is not None:
        raise RuntimeError(f"the monitor failed: {monitor.error!r}")
    record = [bound if seen is None else seen - posted.scheduled(i) for i, seen in enumerate(monitor.seen)]
    depths = [depth for _, depth in sampler.samples]
    return {
        "missing": sum(1 for seen in monitor.seen if seen is None),
        "bound": bound,
        "count": count,
        "record": record,
        "answer": posted.answered(),
        "processed": _processed_latency(stack, events, posted, count),
        "max_depth": max(depths, default=0),
        "last_depth": depths[-1] if depths else 0,
        "growth": growth(sampler.samples),
        "allowed": max(10.0, 0.01 * count / 2),
    }


def _processed_latency(stack: Stack, events: SignedEvents, posted: PacedResult, count: int) -> list[float]:
    index = {events.event_id(i): i for i in range(count)}
    with psycopg.connect(libpq_url(stack.database_url)) as connection:
        rows = connection.execute(
            "SELECT event_id, extract(epoch FROM processed_at) FROM events WHERE event_id = ANY(%s)", (list(index),)
        ).fetchall()
    return [float(at) - posted.scheduled(index[event_id]) for event_id, at in rows]


def steady_rows(ctx: Context, steady: bool, rss: bool) -> None:
    stack = Stack(ctx)
    try:
        if steady:
            _steady(ctx, stack)
        if rss:
            _rss(ctx, stack)
    finally:
        stack.stop()


def _steady(ctx: Context, stack: Stack) -> None:
    seconds = ctx.steady_seconds
    results: dict[int, list[dict]] = {rate: [] for rate in RATES}
    failure = None
    for rep in range(ctx.reps):
        for rate in RATES if rep % 2 == 0 else RATES[::-1]:
            progress(f"steady: {rate} events/s for {seconds:.0f} s, rep {rep + 1}/{ctx.reps}")
            try:
                results[rate].append(_run(ctx, stack, rate, seconds, f"st{rep}r{rate}x"))
                results[rate][-1]["dropped"] = stack.idle(timeout=_drain_cap(seconds))
            except RuntimeError as error:
                failure = str(error)
                progress(f"steady: run failed: {error}")
                break
        if failure:
            break
    for rate in RATES:
        _steady_row(ctx, rate, seconds, results[rate], failure)


def _ms(runs: list[dict], key: str, q: float, digits: int = 0) -> str:
    values = [1000 * quantile(r[key], q) for r in runs]
    censored = key == "record" and any(1000 * r["bound"] <= value for r, value in zip(runs, values, strict=True))
    return (">= " if censored else "") + spread(values, "ms", digits)


def _steady_row(ctx: Context, rate: int, seconds: float, runs: list[dict], failure: str | None) -> None:
    what = f"POST->record latency at a steady {rate} events/s, PostgreSQL, 2 workers ({seconds:.0f} s runs)"
    if failure or not runs:
        ctx.table.add(Row.invalid(what, failure or "no run"))
        return
    p99 = median([1000 * quantile(r["record"], 0.99) for r in runs])
    figure = f"p50 {_ms(runs, 'record', 0.5)}, p99 {_ms(runs, 'record', 0.99)}"
    answer = f"POST->200: p50 {_ms(runs, 'answer', 0.5, 1)}, p99 {_ms(runs, 'answer', 0.99, 1)}"
    ctx.table.add(Row(what, figure, answer, "-", P99_TARGET.text + " ms", verdict(P99_TARGET, p99)))
    _depth_row(ctx, rate, runs)
    missing, dropped = sum(r["missing"] for r in runs), sum(r["dropped"] for r in runs)
    if missing:
        ctx.table.note(
            f"steady {rate}/s: {missing:,} of {sum(r['count'] for r in runs):,} events were not recorded "
            f"{_drain_cap(seconds):.0f} s after the last POST (counted at that bound: the percentiles marked >= "
            f"are lower bounds)"
            + (f"; {dropped:,} queued jobs were then dropped so the next run starts empty" if dropped else "")
        )
    ctx.table.note(
        f"steady {rate}/s: the same latency taken from `processed_at` (the worker's clock as it starts the event, before "
        f"its commit), recorded events only: p50 {_ms(runs, 'processed', 0.5)}, p99 {_ms(runs, 'processed', 0.99)}"
    )


def _depth_row(ctx: Context, rate: int, runs: list[dict]) -> None:
    bounded = all(r["growth"] <= r["allowed"] for r in runs)
    depth = (
        f"max {spread([r['max_depth'] for r in runs], 'jobs')}, last {spread([r['last_depth'] for r in runs], 'jobs')}, "
        f"rise over the last half {spread([r['growth'] for r in runs], 'jobs')}: {'bounded' if bounded else 'GROWING'}"
    )
    target, met = ("bounded", "yes" if bounded else "**no**") if rate == 200 else ("-", "")
    what = f"events queue depth at {rate} events/s (LLEN every {SAMPLE} s while posting)"
    ctx.table.add(Row(what, depth, "-", "-", target, met))


def _rss(ctx: Context, stack: Stack) -> None:
    wanted = 2_000 if ctx.quick else 10_000
    if stack.posted < wanted:
        progress(f"rss: posting {wanted - stack.posted} more events (wrk), then waiting for the workers")
        _top_up(ctx, stack, wanted - stack.posted)
    stack.idle(timeout=600)
    now = stack.rss()
    target = Target.at_most(100)
    for name, values in now.items():
        worst = max(values)
        which = f"largest of {len(values)}" if len(values) > 1 else "1 process"
        what = f"RSS, {name} ({which}), after {stack.posted:,} events"
        at_start = f"{max(stack.rss_at_start[name]):.0f} MB at start"
        ctx.table.add(Row(what, f"{worst:.0f} MB", at_start, "-", "<= 100 MB", verdict(target, worst)))


def _top_up(ctx: Context, stack: Stack, count: int) -> None:
    """More distinct events, posted at TOP_UP_RATE (faster than the workers drain them: the queue grows,
    which is fine here; only memory is measured)."""
    template = Template(INQUIRY_7KB, INQUIRY_SLOTS)
    inquiries = count // 4 + 1
    events = SignedEvents.build(template, lifecycle_rows("rss", inquiries, users=inquiries // 2 + 1)[:count], SECRET)
    posted = paced_post(stack.web.port, events, TOP_UP_RATE, count)
    stack.posted += posted.statuses["queued"]
    if (problem := posted.problem("queued")) is not None:
        ctx.table.note(f"rss top-up: {problem}")
