"""A user's failed Verisoul syncs leave RQ's failed registry once a later sync of that user succeeds (issue 12:
a failure the sweep already recovered kept the failed-jobs gauge up for 30 days); other users' stay."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from rq import Queue
from rq.registry import FailedJobRegistry

from scripts.fake_verisoul import DEFAULT_API_KEY
from store.sync_queue import FAILED_SYNCS_PREFIX, request_sync
from tests.helpers.events import at, inquiry_event
from tests.helpers.in_process import clear_job_caches, drain
from workers import jobs


@pytest.fixture
def verisoul(monkeypatch, worker_env, fake_verisoul_url) -> Iterator[str]:
    monkeypatch.setenv("VERISOUL_API_URL", fake_verisoul_url)
    requests.post(f"{fake_verisoul_url}/_control/reset", timeout=5).raise_for_status()
    yield fake_verisoul_url
    clear_job_caches()


def use_key(monkeypatch, key: str) -> None:
    monkeypatch.setenv("VERISOUL_API_KEY", key)
    clear_job_caches()


def failed_syncs(real_config, real_redis) -> dict[str, str]:
    """Failed sync job id → the user it was for."""
    queue = Queue(real_config.sync_queue, connection=real_redis)
    registry = FailedJobRegistry(queue=queue)
    jobs_by_id = {job_id: queue.fetch_job(job_id) for job_id in registry.get_job_ids()}
    return {job_id: job.args[0] for job_id, job in jobs_by_id.items() if job is not None}


def test_a_successful_sync_clears_that_users_failed_syncs_only(monkeypatch, verisoul, real_config, real_redis):
    use_key(monkeypatch, "wrong-key")  # Verisoul answers 401: the sync fails at once, for good
    for user in ("user_a", "user_b"):
        jobs.process_event(inquiry_event(f"inq_{user}", "approved", at(9), user))
    drain(real_config, real_redis)
    assert sorted(failed_syncs(real_config, real_redis).values()) == ["user_a", "user_b"]

    use_key(monkeypatch, DEFAULT_API_KEY)
    assert request_sync(real_redis, Queue(real_config.sync_queue, connection=real_redis), "user_a")
    drain(real_config, real_redis)

    assert list(failed_syncs(real_config, real_redis).values()) == ["user_b"]
    assert not real_redis.exists(FAILED_SYNCS_PREFIX + "user_a")
    assert real_redis.smembers(FAILED_SYNCS_PREFIX + "user_b")  # kept until user_b syncs
