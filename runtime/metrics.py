"""Every metric of the service, and the registry a scrape reads (`GET /metrics` is app/metrics.py).

Counters and histograms live in prometheus_client's default registry. Under gunicorn and the rq
workers PROMETHEUS_MULTIPROC_DIR is set (runtime.config.share_metrics_dir) before prometheus_client is
imported: each process then writes its values to its own files there, and a scrape sums every
process's files, so any web worker gives the whole host's figures. Without it (tests, a lone
process) the scrape reads this process's default registry.

Queue depths are not counted as they change: they are read from Redis at scrape time (QueueCollector).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterable

# A process may be the host's first to start (a scheduler, `replay-event`): its metrics' files are opened
# as prometheus_client makes each metric, below, and would fail on a directory nobody has made yet.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from prometheus_client import (  # noqa: E402
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

log = logging.getLogger(__name__)

# prometheus_client chose its mode from this variable when this module imported it; the scrape must
# read the values the same way they are written, whatever the environment says later.
MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")

# Webhooks answered, by final outcome (queued | duplicate | ignored, or the error code): delivery
# volume, duplicate rate, and rejections (a spike of invalid_signature means a rotated secret).
WEBHOOKS = Counter("persona_webhooks", "Webhook deliveries answered, by outcome or error code", ["outcome"])
# Why signatures fail (missing, malformed, stale, future, mismatch): clock skew vs wrong secret vs forgery.
SIGNATURE_FAILURES = Counter(
    "persona_webhook_signature_failures", "Webhooks refused for their signature, by reason", ["reason"]
)
# Webhook latency: Persona gives up after 5 s; a normal request takes a few milliseconds.
WEBHOOK_DURATION = Histogram(
    "persona_webhook_duration_seconds",
    "Time to answer a webhook",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
# Job run time and failures per job: a slow database or Verisoul shows here before the queue grows.
JOB_DURATION = Histogram(
    "persona_job_duration_seconds",
    "RQ job run time, by job and result (ok | error)",
    ["job", "result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
# What the worker made of each event (applied, unexpected, stale, ignored, duplicate, reconciled, ...):
# a rise in unexpected or stale says Persona's flows or delivery order changed.
EVENTS_PROCESSED = Counter("persona_events_processed", "Events processed by the worker, by outcome", ["outcome"])
# The host's notifications (docs/contracts.md §9), by result: delivered, failed (to be retried), dead (retries
# exhausted: dead-lettered), superseded (a later change of the user was delivered instead).
NOTIFICATIONS = Counter("persona_notifications", "Host notification delivery attempts, by result", ["result"])
# Inquiry and verification status moves actually applied: the funnel (created → completed → approved).
STATE_TRANSITIONS = Counter(
    "persona_state_transitions", "Status transitions applied, by object and statuses", ["object", "from", "to"]
)
# Each HTTP attempt to Verisoul (retries included), by result: its error rate and our rate-limit use.
VERISOUL_CALLS = Counter(
    "persona_verisoul_calls",
    "HTTP attempts to Verisoul, by method and result (ok | http_<status> | error)",
    ["method", "result"],
)


def timed_job(name: str):
    """Decorate an RQ job function: observe its run time in JOB_DURATION as `ok`, or `error` when it
    raises (the error propagates unchanged). functools.wraps keeps the function's module and name,
    which RQ uses to find the job (`workers.jobs.process_event`)."""

    def decorate(function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            started = time.perf_counter()
            result = "error"
            try:
                value = function(*args, **kwargs)
                result = "ok"
                return value
            finally:
                JOB_DURATION.labels(name, result).observe(time.perf_counter() - started)

        return timed

    return decorate


def count_transition(kind: str, before: str | None, after: str | None) -> None:
    """One applied status move of an `inquiry` or a `verification`; a missing status is `none`."""
    STATE_TRANSITIONS.labels(kind, before or "none", after or "none").inc()


def count_verisoul_call(method: str, status: int | None) -> None:
    """One HTTP attempt: `ok` for 2xx, `http_<status>` otherwise, `error` when no answer came (status None)."""
    if status is None:
        result = "error"
    elif 200 <= status < 300:
        result = "ok"
    else:
        result = f"http_{status}"
    VERISOUL_CALLS.labels(method, result).inc()


class QueueCollector(Collector):
    """Jobs waiting, failed and scheduled per RQ queue, read from Redis at scrape time.

    When Redis does not answer, the scrape still succeeds: no queue gauges, and `persona_queue_up 0`.
    """

    def __init__(self, connection: Redis, queues: Iterable[str]):
        self.connection = connection
        self.queues = list(queues)

    def _counts(self) -> list[tuple[str, int, int, int]]:
        counts = []
        for name in self.queues:
            queue = Queue(name, connection=self.connection)
            # No cleanup: a scrape only reads; the workers' maintenance expires old entries.
            failed = FailedJobRegistry(queue=queue).get_job_count(cleanup=False)
            scheduled = ScheduledJobRegistry(queue=queue).get_job_count(cleanup=False)
            counts.append((name, queue.count, failed, scheduled))
        return counts

    def collect(self):
        try:
            counts = self._counts()
        except (RedisError, OSError) as error:
            log.warning("metrics: queues unreadable", extra={"reason": type(error).__name__})
            counts = None
        up = GaugeMetricFamily("persona_queue_up", "1 when Redis answered this scrape's queue reads, else 0")
        up.add_metric([], 0 if counts is None else 1)
        yield up
        if counts is None:
            return
        jobs = GaugeMetricFamily("persona_queue_jobs", "Jobs waiting in the queue", labels=["queue"])
        failed = GaugeMetricFamily("persona_queue_failed_jobs", "Jobs in the queue's failed registry", labels=["queue"])
        scheduled = GaugeMetricFamily(
            "persona_queue_scheduled_jobs", "Jobs scheduled for later on the queue", labels=["queue"]
        )
        for name, waiting, failures, later in counts:
            jobs.add_metric([name], waiting)
            failed.add_metric([name], failures)
            scheduled.add_metric([name], later)
        yield from (jobs, failed, scheduled)


class _Registry(Collector):
    """Another registry's metrics, so a per-scrape registry can add the queue collector to them
    without registering it in the default registry (once per app, which tests create by the dozen)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def collect(self):
        return self.registry.collect()


def host_registry() -> CollectorRegistry:
    """This host's metrics: every process's files in PROMETHEUS_MULTIPROC_DIR, else this process's own."""
    registry = CollectorRegistry()
    if MULTIPROC_DIR:
        multiprocess.MultiProcessCollector(registry, path=MULTIPROC_DIR)
    else:
        registry.register(_Registry(REGISTRY))
    return registry


def serve_host_metrics(port: int, host: str) -> bool:
    """Serve `host_registry()` as Prometheus text on host:port from a daemon thread, for a worker on a host
    without a web process (WORKER_METRICS_PORT). False, logged, when the port cannot be bound: the worker
    carries on without, since metrics are not worth a stopped worker."""
    try:
        start_http_server(port, addr=host, registry=host_registry())
    except OSError as error:
        log.error("worker metrics not served", extra={"reason": f"{host}:{port}: {error.strerror or error}"})
        return False
    log.info("worker metrics served", extra={"outcome": f"http://{host}:{port}/metrics"})
    return True
