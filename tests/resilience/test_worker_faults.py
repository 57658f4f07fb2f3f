"""Issue 9's worker rows, with real processes and a real Redis killed under them (no supervisor):

- Redis killed or down: every worker exited ("unhandled exception, quitting"), and a worker started while
  Redis was down exited at once;
- a worker SIGKILLed mid-job: its job ran again only 860 s later, and its forked scheduler child was orphaned.
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry

from tests.helpers.counted_jobs import EVENTS, SYNC, enqueue_counted, runs
from tests.helpers.stack import exited
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.e2e

# The contract: a dead worker's job runs again within a minute.
RERUN_DEADLINE = 60


def failed_jobs(redis) -> list[str]:
    return [job_id for name in (EVENTS, SYNC) for job_id in FailedJobRegistry(name, connection=redis).get_job_ids()]


def children(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def test_workers_ride_out_a_redis_kill_and_run_the_held_job_again(own_redis, processes):
    own_redis.start()
    redis = own_redis.client()
    processes.start("worker")
    processes.start("worker")
    processes.start("scheduler")
    held = enqueue_counted(redis, "held", seconds=4, timeout=5)
    wait_until(lambda: runs(redis, "held") == 1, 30, "the held job started", processes)

    own_redis.kill()  # the job finishes during the outage: RQ cannot record its end
    time.sleep(8)
    assert exited(processes) == [], "a process exited during the Redis outage"
    own_redis.start()

    for _ in range(20):
        enqueue_counted(redis, "after")
    wait_until(lambda: runs(redis, "after") == 20, 60, "jobs queued after the restart ran", processes)
    wait_until(lambda: runs(redis, "held") >= 2, RERUN_DEADLINE, "the held job ran again", processes)
    assert exited(processes) == []
    assert failed_jobs(redis) == []
    assert Job.fetch(held.id, connection=redis).meta.get("abandoned") == 1


def test_a_worker_started_while_redis_is_down_starts_when_redis_does(own_redis, processes):
    processes.start("worker")
    processes.start("scheduler")
    time.sleep(5)
    assert exited(processes) == [], "started during an outage, a process exited"
    own_redis.start()
    redis = own_redis.client()
    enqueue_counted(redis, "late")
    wait_until(lambda: runs(redis, "late") == 1, 60, "the job queued once Redis was up ran", processes)
    assert exited(processes) == []


def test_a_killed_workers_job_runs_again_within_a_minute_and_never_fails(own_redis, processes):
    own_redis.start()
    redis = own_redis.client()
    doomed = processes.start("worker")
    processes.start("scheduler")
    job = enqueue_counted(redis, "held", seconds=30, timeout=10)
    wait_until(lambda: runs(redis, "held") == 1, 30, "the job started", processes)
    assert children(doomed.pid) == [], "the worker forked a child (a scheduler?) that would outlive it"

    doomed.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    doomed.wait(timeout=10)
    time.sleep(3)
    processes.start("worker")  # restarted 3 s later, as the operator did
    wait_until(lambda: runs(redis, "held") >= 2, RERUN_DEADLINE, "the killed worker's job ran again", processes)
    print(f"re-run {time.monotonic() - killed_at:.1f} s after the kill")
    assert failed_jobs(redis) == []
    assert Job.fetch(job.id, connection=redis).meta.get("abandoned") == 1


def test_a_standby_scheduler_takes_over_when_the_leader_is_killed(own_redis, processes):
    own_redis.start()
    redis = own_redis.client()
    processes.start("worker")
    first, second = processes.start("scheduler"), processes.start("scheduler")
    leader_pid = int(wait_until(lambda: redis.get("persona-events:scheduler:leader"), 20, "a leader").split(b":")[1])
    leader = next(p for p in (first, second) if p.pid == leader_pid)
    leader.send_signal(signal.SIGKILL)
    leader.wait(timeout=10)
    Queue(EVENTS, connection=redis).enqueue_at(
        datetime.now(UTC) + timedelta(seconds=2), "tests.resilience.jobs.count_run", "scheduled"
    )
    # The lease is 10 s; the scheduled job is due 2 s from now.
    wait_until(lambda: runs(redis, "scheduled") == 1, 30, "the standby promoted the scheduled job", processes)
