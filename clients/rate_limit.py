"""A request budget shared by every worker process: at most N requests in any 60-second span.

A sliding log in a Redis sorted set, checked and updated by one Lua script, so two workers never
both take the last slot, and a burst at a window boundary cannot double the rate as a fixed window would.
"""

from __future__ import annotations

import time
import uuid

from redis import Redis

WINDOW_MS = 60_000

TAKE_SLOT = """
-- KEYS[1] the log; ARGV: now (ms), window (ms), limit, a unique member. Returns 0, or ms to wait.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + tonumber(ARGV[2]) - tonumber(ARGV[1]))
"""


# A worker waits this long at most for a free slot; a longer wait is handed back to the job's retry
# schedule, so an exhausted budget never holds a worker that could be applying events.
MAX_WAIT_SECONDS = 2.0


class RateLimited(Exception):
    """No slot is free within the caller's patience; `wait` seconds until the oldest one frees."""

    def __init__(self, name: str, wait: float):
        super().__init__(f"{name} rate limit reached; a slot frees in {wait:.1f} s")
        self.wait = wait


class RateLimiter:
    def __init__(
        self, connection: Redis, name: str, limit: int, clock=time.time, sleep=time.sleep, max_wait=MAX_WAIT_SECONDS
    ):
        self.name = name
        self.key = f"persona-events:rate:{name}"
        self.limit = limit
        self.clock = clock
        self.sleep = sleep
        self.max_wait = max_wait
        self._take = connection.register_script(TAKE_SLOT)

    def acquire(self) -> None:
        """Take a slot, waiting for the oldest request in the span to turn a minute old when none is
        free; raises RateLimited instead when that is more than `max_wait` seconds away."""
        while True:
            wait_ms = self._take(
                keys=[self.key], args=[int(self.clock() * 1000), WINDOW_MS, self.limit, uuid.uuid4().hex]
            )
            if not wait_ms:
                return
            wait = int(wait_ms) / 1000
            if wait > self.max_wait:
                raise RateLimited(self.name, wait)
            self.sleep(wait)
