"""Webhook rows of scripts/bench.py: saturation against a bare Flask ceiling, and latency at half of it.

Two gunicorns run side by side, both with the Procfile's `web:` command and gunicorn.conf.py (same
worker class and WEB_CONCURRENCY): the service (`app:create_app()`) and the ceiling
(scripts/bench_ceiling.py: read the body, answer a small JSON). Each repetition runs wrk (closed loop,
--connections keep-alive connections) against one, then the other, order alternating, for 7 KB and
65 KB bodies; every request is a distinct, validly signed event (scripts/bench_events.py), and the bench's
Redis is flushed before each run of the service, so none is a `duplicate`. A run with any answer other
than 200 `queued` (the ceiling: `received`) does not count: the row says INVALID and why.

Latency: the paced sender (open loop) at half the service's median saturation rate, against each.

    .venv/bin/python -m scripts.bench --only webhook
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from rq import Queue

from runtime.config import DEFAULT_EVENTS_QUEUE
from scripts.bench_events import INQUIRY_7KB, INQUIRY_65KB, INQUIRY_SLOTS, SignedEvents, Template, distinct_rows
from scripts.bench_load import PacedResult, Wrk, WrkResult, paced_post
from scripts.bench_stack import CEILING_APP, SECRET, Context, Web, children_of, cpu_seconds, progress
from scripts.bench_table import Row, Target, median, quantile, spread, verdict

SIZES = (("7 KB", INQUIRY_7KB, Target.at_least(0.7)), ("65 KB", INQUIRY_65KB, Target.at_least(0.6)))
CONNECTIONS = 32


class BadRun(Exception):
    """A run that does not count (an answer other than the expected one, or too few events)."""


def _durations(ctx: Context) -> tuple[float, float]:
    """Seconds of each saturation run and each latency run."""
    return (2.0, 2.0) if ctx.quick else (6.0, 6.0)


def _data(ctx: Context, template: Template, count: int, tag: str):
    events = SignedEvents.build(template, distinct_rows(template, count, tag), SECRET)
    path = ctx.directory / f"wrk-{tag}.data"
    events.write_wrk_data(path)
    return events, path


@dataclass
class Saturation:
    """A saturation run: wrk's result, and the CPU the servers used per answered request, in µs."""

    wrk: WrkResult
    web_us: float  # the gunicorn master and its workers
    redis_us: float

    @property
    def rate(self) -> float:
        return self.wrk.rate


def _saturate(ctx: Context, wrk: Wrk, web: Web, data, seconds: float, service: bool) -> Saturation:
    if service:
        ctx.redis.flush()  # the bodies are reused between runs: no dedupe mark may survive
    web_pids = [web.process.pid, *children_of(web.process.pid)]
    web_cpu, redis_cpu = cpu_seconds(web_pids), cpu_seconds([ctx.redis.process.pid])
    result = wrk.run(web.url, data, seconds, "queued" if service else "received", wrap=not service)
    answered = max(1, result.expected)
    web_us = (cpu_seconds(web_pids) - web_cpu) / answered * 1e6
    redis_us = (cpu_seconds([ctx.redis.process.pid]) - redis_cpu) / answered * 1e6
    if service:
        _settle(ctx)
    if (problem := result.problem()) is not None:
        raise BadRun(f"{'service' if service else 'ceiling'}: {problem}")
    return Saturation(result, web_us, redis_us)


def _settle(ctx: Context, quiet: float = 0.5, limit: float = 15.0) -> None:
    """Wait until the service has answered the requests wrk left in flight (the events queue stops
    growing): one of them queued after the next flush would make the next run meet it as a duplicate."""
    key = Queue(DEFAULT_EVENTS_QUEUE, connection=ctx.redis.client).key
    deadline, last = time.monotonic() + limit, -1
    while time.monotonic() < deadline:
        depth = ctx.redis.client.llen(key)
        if depth == last:
            return
        last = depth
        time.sleep(quiet)


def webhook_rows(ctx: Context) -> None:
    env = ctx.env(ctx.sqlite.fresh())  # the web process needs a database only for /readyz
    service = Web(ctx.children, "web", env)
    ceiling = Web(ctx.children, "ceiling", env, CEILING_APP)
    wrk = Wrk(ctx.children, ctx.directory, connections=CONNECTIONS)
    workers = os.environ.get("WEB_CONCURRENCY", "2 (gunicorn.conf.py default)")
    ctx.table.note(
        f"webhook: gunicorn --config gunicorn.conf.py, WEB_CONCURRENCY={workers}, worker class "
        f"{os.environ.get('GUNICORN_WORKER_CLASS', 'gevent')}; wrk -t1 -c{CONNECTIONS}; "
        f"every request a distinct signed event"
    )
    try:
        for label, fixture, target in SIZES:
            _size_rows(ctx, wrk, service, ceiling, label, Template(fixture, INQUIRY_SLOTS), target)
    finally:
        service.stop()
        ceiling.stop()


def _size_rows(ctx, wrk, service, ceiling, label, template, target) -> None:
    seconds, latency_seconds = _durations(ctx)
    what = f"webhook saturation, {label} body ({template.fixture}, {template.size():,} B)"
    progress(f"webhook: {label}: warming up both servers")
    _warm_events, warm_data = _data(ctx, template, 5000, f"w{label[:2].strip()}")
    try:
        warm = _saturate(ctx, wrk, ceiling, warm_data, 2, service=False)
        _saturate(ctx, wrk, service, warm_data, 1, service=True)
        # Enough distinct events for the service to run the whole time even at (well above) the ceiling's
        # rate: a cold first reading of the ceiling can be low.
        events, data = _data(ctx, template, int(warm.rate * seconds * 2.5) + 2000, f"s{label[:2].strip()}")
        samples = _saturation_samples(ctx, wrk, service, ceiling, data, seconds, label)
    except BadRun as error:
        ctx.table.add(Row.invalid(what, str(error)))
        return
    rates = [(s.rate, c.rate) for s, c in samples]
    ratios = [s / c for s, c in rates]
    ctx.table.add(Row(
        what, spread([s for s, _ in rates], "req/s"), spread([c for _, c in rates], "req/s"),
        spread(ratios, digits=2), target.text, verdict(target, median(ratios)),
    ))  # fmt: skip
    _note_generator(ctx, label, samples)
    _latency_row(ctx, service, ceiling, events, label, median([s for s, _ in rates]) / 2, latency_seconds)


def _saturation_samples(ctx, wrk, service, ceiling, data, seconds, label) -> list[tuple[Saturation, Saturation]]:
    samples = []
    for rep in range(ctx.reps):
        progress(f"webhook: {label}: saturation, rep {rep + 1}/{ctx.reps}")
        if rep % 2 == 0:
            ceiling_result = _saturate(ctx, wrk, ceiling, data, seconds, service=False)
            service_result = _saturate(ctx, wrk, service, data, seconds, service=True)
        else:
            service_result = _saturate(ctx, wrk, service, data, seconds, service=True)
            ceiling_result = _saturate(ctx, wrk, ceiling, data, seconds, service=False)
        samples.append((service_result, ceiling_result))
    return samples


def _note_generator(ctx: Context, label: str, samples) -> None:
    """wrk's own CPU while driving the ceiling: it is not the bottleneck when the ceiling runs well above
    the service with the same wrk, and this says how much of the 2 cores it took from the servers."""
    cpu = max(c.wrk.cpu_seconds / c.wrk.duration for _, c in samples)
    ctx.table.note(
        f"webhook {label}: wrk used at most {cpu:.2f} of a core while driving the ceiling; "
        f"{sum(s.wrk.expected for s, _ in samples):,} distinct events queued over the service's runs, none refused"
    )
    _note_cpu(ctx, label, samples)


def _note_cpu(ctx: Context, label: str, samples) -> None:
    """Where a request's CPU goes at saturation, and what a ratio target leaves the service: on a
    saturated machine, bare Flask's rate says what a request costs the whole machine (cores / rate);
    at a ratio r the service may spend (1/r - 1) times that on top, all of it, Redis included."""
    web = median([s.web_us for s, _ in samples])
    redis = median([s.redis_us for s, _ in samples])
    bare = median([c.web_us for _, c in samples])
    machine = (os.cpu_count() or 1) / median([c.rate for _, c in samples]) * 1e6
    budget = ", ".join(f"{machine * (1 / r - 1):.0f} µs at {r}" for r in (0.7, 0.6))
    ctx.table.note(
        f"webhook {label}: CPU per request at saturation (median): the service's gunicorn {web:.0f} µs + its "
        f"Redis {redis:.0f} µs, bare Flask's gunicorn {bare:.0f} µs; a saturated machine spends "
        f"{machine:.0f} µs per bare Flask request, so a ratio leaves the service this much more per request "
        f"than bare Flask: {budget}"
    )


def _latency_row(ctx, service, ceiling, events, label, rate, seconds) -> None:
    what = f"webhook latency, {label}, open loop at half the service's saturation ({rate:.0f} req/s)"
    count = max(1, int(rate * seconds))
    samples = []
    try:
        for rep in range(ctx.reps):
            progress(f"webhook: {label}: latency at {rate:.0f} req/s, rep {rep + 1}/{ctx.reps}")
            pair = [(True, service), (False, ceiling)]
            results = {}
            for is_service, web in pair if rep % 2 else pair[::-1]:
                results[is_service] = _paced(ctx, web, events, rate, count, is_service)
            samples.append((results[True], results[False]))
    except BadRun as error:
        ctx.table.add(Row.invalid(what, str(error)))
        return
    p99 = [(quantile(s.answered(), 0.99), quantile(c.answered(), 0.99)) for s, c in samples]
    ctx.table.add(Row(
        what, _p50_p99([s for s, _ in samples]), _p50_p99([c for _, c in samples]),
        "p99 " + spread([s / c for s, c in p99], "x", 1), "-", "",
    ))  # fmt: skip
    lag = max(quantile(result.lags, 0.99) for pair in samples for result in pair)
    ctx.table.note(
        f"webhook {label} latency: {count} requests per run; the sender's own lag "
        f"(p99 of send time - due time, worst run): {lag * 1000:.1f} ms"
    )


def _paced(ctx, web, events, rate, count, service: bool) -> PacedResult:
    if service:
        ctx.redis.flush()
    expect = "queued" if service else "received"
    result = paced_post(web.port, events, rate, count, expect=expect)
    if (problem := result.problem(expect)) is not None:
        raise BadRun(f"{'service' if service else 'ceiling'}: {problem}")
    return result


def _p50_p99(results: list[PacedResult]) -> str:
    p50 = [1000 * quantile(r.answered(), 0.50) for r in results]
    p99 = [1000 * quantile(r.answered(), 0.99) for r in results]
    return f"p50 {spread(p50, 'ms', 1)}, p99 {spread(p99, 'ms', 1)}"
