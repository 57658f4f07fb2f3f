"""The service as operators run it: the Procfile's web and worker commands as real processes."""

from __future__ import annotations

import pytest

from tests.helpers.stack import Stack


@pytest.fixture
def stack(redis_server_url, real_redis, real_database_url, tmp_path):
    stack = Stack(redis_server_url, real_database_url, tmp_path)
    yield stack
    stack.stop()
