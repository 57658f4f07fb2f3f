"""The worker class of the Procfile's `worker:` (`rq worker --worker-class workers.worker.Worker`).

RQ's SimpleWorker (jobs run in the worker process, so the database pool and SQLAlchemy's statement
cache live across jobs) with three changes:

- It rides out Redis. RQ's worker quits on a Redis error anywhere but in its blocking dequeue ("found
  an unhandled exception, quitting"); this one logs one line, waits for Redis with a capped back-off
  and carries on, whether idle, finishing a job, or starting. A job whose bookkeeping was cut off by
  the outage stays in the StartedJobRegistry and runs again once found abandoned (workers/abandoned.py);
  its effects are idempotent. A stop request (SIGTERM, Ctrl-C) still ends the wait.
- A dead worker's job is found within a minute. The registry entry of a running job expires at the
  job's time limit plus HEARTBEAT_MARGIN (RQ adds 60 s), and abandoned jobs are requeued, not failed.
- A job taken is never only in the worker's memory: serving the events and the sync queue, it moves the
  job to the queue's intermediate list (WorkerQueue) as RQ does for a single queue, so a worker stopped
  between taking a job and starting it leaves the job where recovery finds it.
- Events are taken in batches. When it takes an event's job and more wait behind it, it takes up to
  EVENT_BATCH of them at once, half of those waiting at most (into the intermediate list, by one script,
  the rest left to other workers) and records their start in one
  round trip; then each runs as RQ runs any job (`perform_job`: its own time limit, retries and failure).
  The successes are recorded together when the batch ends, in one transaction doing for each job what
  RQ's `handle_job_success` does (status, result, finished registry, the end of its execution). RQ's
  per-job loop (dequeue, heartbeats, suspension and maintenance checks, two start-up pipelines, three
  round trips to end a job) runs once per batch instead of once per event, which was most of an event's
  cost. A worker killed mid-batch leaves each job whose end was not recorded registered as started or
  in the intermediate list, where recovery finds it and runs it again: an event applied already comes
  out a `duplicate` (workers/jobs.py), so nothing is applied twice.

Scheduling (retries, unblocks at a block's expiry, the periodic sweep and reconciliation) is not the
worker's: the scheduler process owns it (workers/scheduler.py), so no worker forks a scheduler child
that could outlive it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job, JobStatus, Retry
from rq.queue import Queue
from rq.utils import now
from rq.worker import SimpleWorker, WorkerStatus

from runtime.errors import last_reported
from store.queue import PROCESS_EVENT
from workers.abandoned import requeue_abandoned

log = logging.getLogger(__name__)
T = TypeVar("T")

# Redis unreachable, restarting (LOADING is a ConnectionError) or timing out: waited out. Any other
# Redis error is an answer, not an outage, and is not retried blindly.
REDIS_OUTAGE = (RedisConnectionError, RedisTimeoutError)

# Seconds a running job's registry entry outlives its time limit. A live worker ends every job by its
# limit (RQ's death penalty), so past this the worker is gone. Short, so a dead worker's job runs again
# soon; not so short that a busy machine's scheduling delay looks like a death.
HEARTBEAT_MARGIN = 5
# Redis back-off: first retry soon (a restart takes a second or two), then at most this often.
REDIS_RETRY_FIRST = 0.5
REDIS_RETRY_CAP = 5.0
# RQ runs registry clean-up this often (default 600 s); ours requeues abandoned jobs before it.
MAINTENANCE_INTERVAL = 30
# Seconds an idle worker blocks on the events queue before looking at every queue again.
DEQUEUE_SLICE = 1
# Seconds between renewals of a batch's registry entries. Each was set to expire its job's time limit +
# HEARTBEAT_MARGIN after the batch began; renewed this often (when a job begins), a job always has its
# full time limit ahead of it, with room for a busy machine's scheduling delay.
BATCH_RENEW_EVERY = HEARTBEAT_MARGIN / 5
# Event jobs taken at once when several wait. Small enough that the last of a batch starts soon (a batch
# is run in order), large enough that RQ's per-job loop stops counting.
EVENT_BATCH = 16

# KEYS[1] a queue, KEYS[2] its intermediate list; ARGV[1] how many at most. Moves event jobs (their ids:
# store/queue.py job_id_for) from the head of the queue, stopping at any other job, and takes no more than
# half of what waits: the rest is left to the other workers, and an event never waits behind a long
# batch while a worker is idle.
TAKE_EVENT_JOBS = """
local taken = {}
local wanted = math.min(tonumber(ARGV[1]), math.floor(redis.call('LLEN', KEYS[1]) / 2))
for _ = 1, wanted do
    local id = redis.call('LINDEX', KEYS[1], 0)
    if not id then break end
    local prefix = string.sub(id, 1, 2)
    if prefix ~= 'e_' and prefix ~= 'h-' then break end
    redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
    taken[#taken + 1] = id
end
return taken
"""


def wait_for_redis(
    ping: Callable[[], object], stop_requested: Callable[[], bool] = lambda: False, what: str = ""
) -> None:
    """Call `ping` until Redis answers PONG, sleeping REDIS_RETRY_FIRST doubling up to REDIS_RETRY_CAP
    between tries; one log line when Redis is lost and one when it answers again. Raises StopRequested
    when `stop_requested()` turns true while waiting."""
    delay, lost_at = REDIS_RETRY_FIRST, None
    while (reason := _no_pong(ping)) is not None:
        if lost_at is None:
            lost_at = time.monotonic()
            log.error("redis unavailable; waiting for it", extra={"reason": f"{what}{reason}"})
        if stop_requested():
            raise StopRequested()
        time.sleep(delay)
        delay = min(delay * 2, REDIS_RETRY_CAP)
    if lost_at is not None:
        log.warning("redis available again", extra={"duration_ms": round((time.monotonic() - lost_at) * 1000)})


def riding_out_outages(check: Callable[..., bool]) -> Callable[..., bool]:
    """`check` (RQ's `is_suspended`, which `rq worker` calls once before the worker exists, where a connection
    error exits the process) made to wait for Redis instead: a Redis lost between workers/rq_settings.py's
    wait and that check would otherwise cost the worker (seen when two workers started as Redis died)."""

    def waiting(connection: Redis, *args, **kwargs) -> bool:
        while True:
            try:
                return check(connection, *args, **kwargs)
            except REDIS_OUTAGE:
                wait_for_redis(connection.ping, what="suspension check: ")

    return waiting


def _no_pong(ping: Callable[[], object]) -> str | None:
    """None when `ping` got Redis' PONG, else why not (an exception's type name).

    Anything else is no answer, not a crash: while nothing listens on Redis' port, a connect can land on
    its own socket (TCP simultaneous open, when the client's ephemeral port is the server's port); it
    then reads back its own commands and redis-py fails with an AttributeError in its handshake."""
    try:
        answered = ping()
    except Exception as error:  # noqa: BLE001 - the peer is not (yet) a working Redis, whatever it said
        return type(error).__name__
    return None if answered is True else "no PONG"


class WorkerQueue(Queue):
    """RQ's Queue, dequeuing from several queues the way RQ dequeues from one: the job is moved (LMOVE) to
    its queue's intermediate list, not popped. RQ pops (BLPOP) when a worker serves several queues, and a
    worker stopped or killed between the pop and registering the job as started lost it: acknowledged,
    in no list, run by no one. Moved, it stays where recovery finds it (workers/abandoned.py)."""

    @classmethod
    def lpop(cls, queue_keys, timeout, connection=None):
        """The first job of the first non-empty queue, in order; when all are empty, wait up to
        DEQUEUE_SLICE seconds on the first (events) queue, then raise DequeueTimeout so the worker's loop
        looks at every queue again (a sync waits at most that long for an idle worker)."""
        for key in queue_keys:
            result = cls.lmove(connection, key, None)
            if result is not None:
                return result
        if timeout is None:
            return None
        return cls.lmove(connection, queue_keys[0], max(1, min(int(timeout), DEQUEUE_SLICE)))


class Worker(SimpleWorker):
    max_connection_wait_time = REDIS_RETRY_CAP
    clock = staticmethod(time.monotonic)  # seconds, for the batch's renewals

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL)
        super().__init__(*args, **kwargs)
        # After RQ has checked the queues it was given (plain Queues, from `rq worker` or a caller): only
        # dequeuing goes through the class, and WorkerQueue changes nothing else.
        self.queue_class = WorkerQueue
        self._batch: dict[str, tuple[Job, Execution]] = {}  # jobs of the running batch not begun yet
        self._succeeded: list[tuple[Job, Execution]] | None = None  # the running batch's, not recorded yet
        self._renewed_at = 0.0
        self._take_event_jobs = self.connection.register_script(TAKE_EVENT_JOBS)

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        """The job leaves its intermediate list as it is registered as started (RQ does this for one queue
        only); a job of a batch was registered with the batch, and its entry is renewed if due."""
        if job.id in self._batch:
            begun = self._batch.pop(job.id)
            if self.clock() - self._renewed_at >= BATCH_RENEW_EVERY:
                self._renew([begun, *self._batch.values()])
            return None
        super().prepare_job_execution(job, remove_from_intermediate_queue=True)

    def _finalize_success(self, job: Job, queue: Queue, execution: Execution, return_value) -> None:
        """A batch's job that returned is recorded with the batch's others (_record_successes)."""
        if self._succeeded is None or isinstance(return_value, Retry):
            return super()._finalize_success(job, queue, execution, return_value)
        job.ended_at, job._result, job._status = now(), return_value, JobStatus.FINISHED
        self._succeeded.append((job, execution))

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """The job's time limit plus HEARTBEAT_MARGIN: a SimpleWorker sends no heartbeat during a job."""
        return int(job.timeout or self.queue_class.DEFAULT_TIMEOUT) + HEARTBEAT_MARGIN

    def _until_redis_answers(self, step: Callable[[], T], what: str) -> T:
        """Run `step`, waiting out Redis outages and running it again until it completes."""
        while True:
            try:
                return step()
            except REDIS_OUTAGE:  # wait_for_redis logs the outage, once
                wait_for_redis(self.connection.ping, lambda: self._stop_requested, what=f"{what}: ")

    def bootstrap(self, *args, **kwargs) -> None:
        self._until_redis_answers(lambda: super(Worker, self).bootstrap(*args, **kwargs), "start")

    def check_for_suspension(self, burst: bool) -> None:
        self._until_redis_answers(lambda: super(Worker, self).check_for_suspension(burst), "suspension check")

    def set_state(self, state, pipeline=None) -> None:
        if pipeline is not None:
            return super().set_state(state, pipeline)
        self._until_redis_answers(lambda: super(Worker, self).set_state(state), "state")

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        if pipeline is not None:  # buffered: the caller's execute() meets any error
            return super().heartbeat(timeout, pipeline)
        self._until_redis_answers(lambda: super(Worker, self).heartbeat(timeout), "heartbeat")

    def run_maintenance_tasks(self) -> None:
        """Requeue abandoned jobs, then RQ's clean-up (which would otherwise fail them). Skipped, not
        fatal, while Redis is away: it runs again at the next interval."""
        try:
            for queue in self.queues:
                requeue_abandoned(queue)
            super().run_maintenance_tasks()
        except REDIS_OUTAGE as error:
            log.error("maintenance skipped; redis unavailable", extra={"reason": type(error).__name__})
            wait_for_redis(self.connection.ping, lambda: self._stop_requested, what="maintenance: ")

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run the job, with the event jobs waiting behind it when it is one; if Redis fails while RQ
        records a job's end, wait for Redis and move on: the job's registry entry then expires and it runs
        again (idempotently) as an abandoned job, and so do the batch's jobs not begun."""
        try:
            if job.func_name == PROCESS_EVENT:
                self._execute_batch([job, *self._take_more_events(queue)], queue)
            else:
                super().execute_job(job, queue)
        except REDIS_OUTAGE as error:
            log.error(
                "job outcome not recorded; redis unavailable", extra={"job_id": job.id, "reason": type(error).__name__}
            )
            self.executions.clear()  # forget it here; its registry entry in Redis expires and it runs again
            self._batch.clear()
            wait_for_redis(self.connection.ping, lambda: self._stop_requested, what="after a job: ")

    def handle_exception(self, job: Job, *exc_info) -> None:
        """RQ's log line and handlers; when Sentry has the failure (a job's last try, RqIntegration), its event
        id is kept in the job's meta and logged, so the failed job and the report name each other."""
        before = last_reported()
        super().handle_exception(job, *exc_info)
        event_id = last_reported()
        if event_id is not None and event_id != before:
            job.meta["sentry_event_id"] = event_id
            job.save_meta()
            # a warning: an error line would be reported to Sentry again by its logging integration
            log.warning("job failed; reported to sentry", extra={"job_id": job.id, "sentry_event_id": event_id})

    def _take_more_events(self, queue: Queue) -> list[Job]:
        ids = self._take_event_jobs(keys=[queue.key, queue.intermediate_queue_key], args=[EVENT_BATCH - 1])
        jobs = Job.fetch_many([i.decode() for i in ids], connection=self.connection, serializer=self.serializer)
        return [job for job in jobs if job is not None]  # a job deleted meanwhile is gone from everywhere

    def _execute_batch(self, jobs: list[Job], queue: Queue) -> None:
        """Record every job's start in one round trip, run each as RQ runs a job, record the successes."""
        with self.connection.pipeline() as pipeline:
            for job in jobs:
                ttl = self.get_heartbeat_ttl(job)
                execution = Execution.create(job, ttl, pipeline=pipeline, worker_name=self.name)
                self.executions[execution.id] = execution
                self._batch[job.id] = (job, execution)
                job.prepare_for_execution(self.name, pipeline=pipeline)
                pipeline.persist(job.key)
                pipeline.lrem(queue.intermediate_queue_key, 1, job.id)
            self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
            self.heartbeat(self.get_heartbeat_ttl(jobs[0]), pipeline=pipeline)
            pipeline.execute()
        self._renewed_at, self._succeeded = self.clock(), []
        try:
            for job in jobs:  # a stop request (SIGTERM) waits for the batch, as RQ waits for a job: a few seconds
                self.perform_job(job, queue, self._batch[job.id][1])
            self._record_successes(self._succeeded)
        finally:
            self._batch.clear()
            self._succeeded = None
        self.set_state(WorkerStatus.IDLE)

    def _record_successes(self, succeeded: list[tuple[Job, Execution]]) -> None:
        """RQ's `handle_job_success` for each job, in one transaction: its status, result and expiry, the
        finished registry, the worker's counters, the end of its execution; then RQ's `Job OK` line. No
        WATCH on the job's dependents, which RQ takes for jobs enqueued `depends_on` one while it ran: no
        job depends on an event's (the webhook, replay and reconciliation enqueue them, never depends_on)."""
        if not succeeded:
            return
        with self.connection.pipeline() as pipeline:
            for job, execution in succeeded:
                started_at, ended_at = job.started_at, job.ended_at
                assert started_at is not None and ended_at is not None  # set by perform_job, _finalize_success
                job.heartbeat(ended_at, 0, pipeline=pipeline)  # RQ's handle_execution_ended
                self.increment_successful_job_count(pipeline=pipeline)
                self.increment_total_working_time(ended_at - started_at, pipeline)
                result_ttl = job.get_result_ttl(self.default_result_ttl)
                if result_ttl != 0:
                    job._handle_success(
                        result_ttl,
                        pipeline=pipeline,
                        worker_name=self.name,
                        execution_id=execution.id,
                        execution_started_at=execution.created_at,
                        execution_ended_at=ended_at,
                    )
                job.cleanup(result_ttl, pipeline=pipeline, remove_from_queue=False)
                self.cleanup_execution(job, pipeline=pipeline, execution=execution)
            pipeline.execute()
        for job, _execution in succeeded:
            self.log.info("Worker %s: %s: %s (%s)", self.name, job.origin, "Job OK", job.id)

    def _renew(self, jobs: list[tuple[Job, Execution]]) -> None:
        """Renew the registry entries of a batch's jobs (and the worker's): they expire a job's time limit
        + HEARTBEAT_MARGIN from now."""
        with self.connection.pipeline() as pipeline:
            for job, execution in jobs:
                ttl = self.get_heartbeat_ttl(job)
                execution.heartbeat(job.started_job_registry, ttl, pipeline=pipeline)
            self.heartbeat(ttl, pipeline=pipeline)
            pipeline.execute()
        self._renewed_at = self.clock()

    def teardown(self) -> None:
        """Leaving: a Redis outage must not turn a clean stop into a traceback."""
        try:
            super().teardown()
        except REDIS_OUTAGE as error:
            log.warning("worker not unregistered; redis unavailable", extra={"reason": type(error).__name__})
