"""Fixtures shared by every test: the app, a client on it, and its (fake) Redis."""

from __future__ import annotations

import fakeredis
import pytest

from app import create_app
from runtime.config import Config
from store.db import migrate
from tests.payloads import SECRET


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
