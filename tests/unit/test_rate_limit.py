"""The shared request budget (clients/rate_limit.py): a sliding 60 s log in Redis, on an injected clock."""

from __future__ import annotations

import fakeredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.rate_limit import MAX_WAIT_SECONDS, WINDOW_MS, RateLimited, RateLimiter

START_MS = 1_700_000_000_000
WINDOW = WINDOW_MS / 1000


class Clock:
    """Injected time, kept in whole milliseconds; sleeping moves it forward and is recorded."""

    def __init__(self, ms: int = START_MS):
        self.ms = ms
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.ms / 1000

    def advance(self, seconds: float) -> None:
        self.ms += round(seconds * 1000)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)

    @property
    def elapsed(self) -> float:
        return (self.ms - START_MS) / 1000


@pytest.fixture
def server():
    return fakeredis.FakeServer()


@pytest.fixture
def clock():
    return Clock()


def limiter(server, clock, limit: int, name: str = "verisoul", max_wait: float = WINDOW) -> RateLimiter:
    """Each limiter gets its own connection, as each worker process would; patient enough to wait a
    whole window unless a test says otherwise."""
    return RateLimiter(
        fakeredis.FakeRedis(server=server), name, limit, clock=clock, sleep=clock.sleep, max_wait=max_wait
    )


def test_a_wait_longer_than_the_patience_is_refused_without_sleeping(server, clock):
    """A worker must not sit out a long wait: the job is retried later instead (RateLimited)."""
    budget = limiter(server, clock, 2, max_wait=MAX_WAIT_SECONDS)
    budget.acquire()
    budget.acquire()
    clock.advance(10)
    with pytest.raises(RateLimited) as refused:
        budget.acquire()
    assert refused.value.wait == WINDOW - 10
    assert clock.sleeps == []


def test_a_short_wait_within_the_patience_is_slept(server, clock):
    budget = limiter(server, clock, 1, max_wait=MAX_WAIT_SECONDS)
    budget.acquire()
    clock.advance(WINDOW - 1)
    budget.acquire()
    assert clock.sleeps == [1.0]


def test_limit_acquisitions_do_not_wait(server, clock):
    budget = limiter(server, clock, 3)
    for _ in range(3):
        budget.acquire()
    assert clock.sleeps == [] and clock.elapsed == 0


def test_next_acquisition_waits_until_the_oldest_is_a_minute_old(server, clock):
    budget = limiter(server, clock, 3)
    for _ in range(3):
        budget.acquire()
        clock.advance(10)  # taken at 0, 10 and 20 s
    budget.acquire()  # asked at 30 s
    assert clock.sleeps == [30.0]
    assert clock.elapsed == WINDOW


def test_slots_free_up_once_the_window_has_passed(server, clock):
    budget = limiter(server, clock, 2)
    budget.acquire()
    budget.acquire()
    clock.advance(WINDOW)
    budget.acquire()
    budget.acquire()
    assert clock.sleeps == []


def test_one_millisecond_short_of_the_window_still_waits(server, clock):
    budget = limiter(server, clock, 1)
    budget.acquire()
    clock.advance(WINDOW - 0.001)
    budget.acquire()
    assert clock.sleeps == [0.001]


def test_two_limiters_on_one_redis_share_the_budget(server, clock):
    first, second = limiter(server, clock, 2), limiter(server, clock, 2)
    first.acquire()
    clock.advance(5)
    second.acquire()
    first.acquire()
    assert clock.sleeps == [55.0]
    second.acquire()
    assert clock.sleeps == [55.0, 5.0]


def test_budgets_with_different_names_are_separate(server, clock):
    limiter(server, clock, 1, "verisoul").acquire()
    limiter(server, clock, 1, "persona").acquire()
    assert clock.sleeps == []


def test_limiters_on_separate_redis_servers_do_not_share(clock):
    limiter(fakeredis.FakeServer(), clock, 1).acquire()
    limiter(fakeredis.FakeServer(), clock, 1).acquire()
    assert clock.sleeps == []


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(1, 5),
    workers=st.integers(1, 3),
    requests=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40_000)), min_size=1, max_size=40),
)
def test_never_more_than_limit_in_any_window_and_no_needless_wait(limit, workers, requests):
    """Workers ask for slots after random pauses (ms); every grant must fit the budget, and come as early as it may."""
    clock, server = Clock(), fakeredis.FakeServer()
    budgets = [limiter(server, clock, limit) for _ in range(workers)]
    asked, granted = [], []
    for worker, pause_ms in requests:
        clock.ms += pause_ms
        asked.append(clock.ms)
        budgets[worker % workers].acquire()
        granted.append(clock.ms)

    for start in granted:
        assert sum(1 for at in granted if start <= at < start + WINDOW_MS) <= limit
    for n, at in enumerate(granted):
        earliest = asked[n] if n < limit else max(asked[n], granted[n - limit] + WINDOW_MS)
        assert at == earliest
