"""The scheduler process: the Procfile's `scheduler:` (`python -m workers.scheduler`). Run one.

It owns everything that happens at a time rather than on an event, on the service's queues:
- scheduled jobs that are due (RQ's retries with back-off, the unblock at a block's expiry) are moved to
  their queue every second, by RQ's own RQScheduler;
- jobs of dead workers are put back at the front of their queue every few seconds (workers/abandoned.py);
- the periodic jobs are enqueued by RQ's CronScheduler: the Verisoul sweep every minute, when
  PERSONA_API_KEY is set reconciliation every hour, and when EVENT_RETENTION_DAYS is set the event log's
  retention every day. A failed run is just a failed job: the next run
  is enqueued on time regardless, because no job schedules its successor.

Workers run without `--with-scheduler`, so a worker's death never strands the scheduling, and no
scheduler child outlives a killed worker. Should this process die, scheduled jobs wait (they are kept
in Redis) until it is back; a second scheduler process may run as a standby: a leader lock with a
LEADER_TTL-second lease lets one act at a time, and the standby takes over within LEADER_TTL of the
leader's death. A Redis outage is waited out, never a reason to exit.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
import uuid

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.cron import CronScheduler
from rq.exceptions import StopRequested
from rq.scheduler import RQScheduler
from rq.scripts import acquire_or_refresh_lock, release_lock

from runtime.config import Config
from workers.abandoned import requeue_abandoned
from workers.worker import REDIS_OUTAGE, wait_for_redis

log = logging.getLogger("workers.scheduler")  # not __main__ under `python -m`

LEADER_KEY = "persona-events:scheduler:leader"
# The leader's lease, renewed every tick: a standby takes over this long after the leader dies.
LEADER_TTL = 10
# RQ's scheduler lock names this owner, the same in every process of ours: a new leader renews its
# dead predecessor's lock at once instead of waiting out RQ's 61-second lock.
RQ_SCHEDULER_NAME = "persona-events-scheduler"
# Due scheduled jobs are moved this often, so a retry or an unblock runs within a second of its time.
TICK_SECONDS = 1
# Abandoned jobs are looked for this often: a dead worker's job runs again within its time limit + a
# few seconds (workers/worker.py HEARTBEAT_MARGIN).
ABANDONED_EVERY_SECONDS = 5.0
# Reconciliation asks Persona about inquiries once per expiry window; an hourly pass keeps the lag under the grace.
RECONCILE_EVERY_SECONDS = 3600
# The event log's retention is in days: once a day is often enough.
PRUNE_EVERY_SECONDS = 24 * 3600
# Periodic jobs' time limits: the sweep reads the users table and queues syncs; reconciliation makes up
# to 200 Persona calls, each retried on 429 for up to a minute.
SWEEP_TIMEOUT = 60
RECONCILE_TIMEOUT = 900
PRUNE_TIMEOUT = 900  # a batch of inquiries' events per transaction, however many are due


def periodic_jobs(cron: CronScheduler, config: Config) -> None:
    """Register the service's periodic jobs on RQ's cron scheduler."""
    # Imported here, not at the top: they import prometheus_client, which main() must not let in before
    # share_metrics_dir() has chosen the metrics directory.
    from workers import jobs
    from workers.sync import SWEEP_EVERY

    cron.register(
        jobs.sweep_verisoul,
        config.sync_queue,
        interval=int(SWEEP_EVERY.total_seconds()),
        job_timeout=SWEEP_TIMEOUT,
        result_ttl=3600,
    )
    if config.host_webhook_url:
        cron.register(
            jobs.sweep_notifications,
            config.notify_queue,
            interval=int(SWEEP_EVERY.total_seconds()),
            job_timeout=SWEEP_TIMEOUT,
            result_ttl=3600,
        )
    if config.event_retention_days is not None:
        from workers import retention

        cron.register(
            retention.prune_event_log,
            config.sync_queue,
            interval=PRUNE_EVERY_SECONDS,
            job_timeout=PRUNE_TIMEOUT,
            result_ttl=24 * 3600,
        )
    if config.persona_api_key:
        cron.register(
            jobs.reconcile_inquiries,
            config.events_queue,
            interval=RECONCILE_EVERY_SECONDS,
            job_timeout=RECONCILE_TIMEOUT,
            result_ttl=24 * 3600,
        )


class Scheduler:
    """One scheduler process; `run()` until stopped, `tick()` for one pass (tests)."""

    def __init__(self, connection: Redis, config: Config, clock=time.monotonic):
        self.connection = connection
        self.queues = [Queue(name, connection=connection) for name in config.queues]
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.rq_scheduler = RQScheduler(
            config.queues, connection=connection, interval=TICK_SECONDS, name=RQ_SCHEDULER_NAME
        )
        self.cron = CronScheduler(connection=connection, name=f"persona-events:{self.token}")
        periodic_jobs(self.cron, config)
        self.clock = clock
        self.leading = False
        self.stop_requested = False
        self._abandoned_at = float("-inf")

    def tick(self) -> bool:
        """One pass: renew or take the lead, then do the leader's work; True while leading."""
        leading = acquire_or_refresh_lock(self.connection, LEADER_KEY, self.token, LEADER_TTL) != "taken"
        if leading != self.leading:
            log.info("scheduler leading" if leading else "scheduler standing by", extra={"outcome": self.token})
            if leading:
                self.cron.register_birth()
            self.leading = leading
        if not leading:
            return False
        self.rq_scheduler.acquire_locks()
        self.rq_scheduler.enqueue_scheduled_jobs()
        if self.clock() - self._abandoned_at >= ABANDONED_EVERY_SECONDS:
            for queue in self.queues:
                requeue_abandoned(queue)
            self._abandoned_at = self.clock()
        if self.cron.enqueue_jobs():
            self.cron.save()
        self.cron.heartbeat()
        return True

    def run(self) -> None:
        while not self.stop_requested:
            try:
                self.tick()
            except REDIS_OUTAGE as error:
                log.error("scheduler pass failed; redis unavailable", extra={"reason": type(error).__name__})
                wait_for_redis(self.connection.ping, lambda: self.stop_requested, what="scheduler: ")
                continue
            except Exception:  # a bug must not stop the scheduling of everything else: logged, next tick
                log.exception("scheduler pass failed")
            time.sleep(TICK_SECONDS)
        self.release()

    def release(self) -> None:
        """Hand over at once on a clean stop, instead of after the lease runs out."""
        try:
            release_lock(self.connection, LEADER_KEY, self.token)
            self.rq_scheduler.release_locks()
            self.cron.register_death()
        except RedisError as error:
            log.warning("scheduler locks not released; redis unavailable", extra={"reason": type(error).__name__})
        log.info("scheduler stopped", extra={"outcome": self.token})

    def request_stop(self, *_signal) -> None:
        self.stop_requested = True


def main() -> None:
    from runtime.config import share_metrics_dir

    share_metrics_dir()  # before anything imports prometheus_client (the jobs module does)
    from runtime.config import load_config_or_exit
    from runtime.errors import init_error_reporting
    from runtime.logs import configure
    from store.queue import connect_redis

    config = load_config_or_exit()
    configure()
    init_error_reporting(config, "scheduler")  # its errors are logged; Sentry's logging integration sends them
    connection = connect_redis(config.redis_url)
    scheduler = Scheduler(connection, config)
    signal.signal(signal.SIGTERM, scheduler.request_stop)
    signal.signal(signal.SIGINT, scheduler.request_stop)
    try:
        wait_for_redis(connection.ping, lambda: scheduler.stop_requested, what="scheduler start: ")
    except StopRequested:  # stopped while waiting: nothing was taken, nothing to release
        return
    log.info("scheduler started", extra={"queue": ",".join(config.queues)})
    scheduler.run()


if __name__ == "__main__":
    main()
