"""The workers' jobs in the test process: their cached connections, clock and environment, the queues drained."""

from __future__ import annotations

from datetime import UTC, datetime

from rq import Queue, SimpleWorker

from clients import persona
from scripts.fake_persona import DEFAULT_API_KEY
from tests.helpers.events import at, inquiry_event
from tests.servers import FakePersonaControl
from workers import jobs

NOW = datetime(2024, 9, 1, 12, 0, tzinfo=UTC)


def clear_job_caches() -> None:
    """The workers' cached engine, Redis connection and syncer, rebuilt from the environment on next use."""
    if jobs.database.cache_info().currsize:
        jobs.database().dispose()
    for cached in (jobs.database, jobs.redis, jobs.syncer, jobs.notifier):
        cached.cache_clear()


def set_clock(monkeypatch, moment: datetime = NOW) -> dict:
    """`workers.jobs.now`, the clock of the jobs and the CLI, settable."""
    current = {"now": moment}
    monkeypatch.setattr(jobs, "now", lambda: current["now"])
    return current


def cli_environment(monkeypatch, worker_env) -> dict:
    """The worker's environment, without Persona's or Verisoul's API unless a test adds them."""
    for name in ("PERSONA_API_KEY", "PERSONA_API_URL", "VERISOUL_API_URL", "VERISOUL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    clear_job_caches()
    return worker_env


def use_fake_persona(monkeypatch, url: str) -> FakePersonaControl:
    """The CLI and the jobs pointed at the fake, with Persona's retries not waiting."""
    monkeypatch.setenv("PERSONA_API_URL", url)
    monkeypatch.setenv("PERSONA_API_KEY", DEFAULT_API_KEY)
    monkeypatch.setattr(persona, "_backoff", lambda attempt: 0.0)
    fake = FakePersonaControl(url)
    fake.reset()
    return fake


def drain(real_config, real_redis) -> None:
    queues = [Queue(name, connection=real_redis) for name in real_config.queues]
    SimpleWorker(queues, connection=real_redis).work(burst=True)


def fail_a_sync(monkeypatch, fake_verisoul_url, real_config, real_redis) -> None:
    """An approved user whose Verisoul sync is refused (a wrong API key: 401, not retried)."""
    monkeypatch.setenv("VERISOUL_API_URL", fake_verisoul_url)
    monkeypatch.setenv("VERISOUL_API_KEY", "wrong-key")
    clear_job_caches()
    jobs.process_event(inquiry_event("inq_s", "approved", at(9, 0), "user_s"))
    drain(real_config, real_redis)
    monkeypatch.delenv("VERISOUL_API_URL")
    clear_job_caches()
