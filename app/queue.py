"""Queueing a verified event: a durable dedupe mark and the RQ enqueue, in one Redis round trip.

RQ builds the enqueue (job hash, queue registration, push) into a pipeline that is never executed;
its commands are handed to a Lua script that runs them only when the event's dedupe mark is absent,
and sets the mark last. Redis runs a script atomically, so two deliveries of one event racing each
other enqueue it once, and a script that fails part-way leaves no mark behind: Persona's retry of
that delivery is queued instead of being taken for a duplicate.

The script touches keys it does not declare, which standalone Redis (what RQ supports) allows.
"""

from __future__ import annotations

import hashlib
import re

from redis import Redis
from rq import Queue, Retry

from app.config import Config

PROCESS_EVENT = "workers.jobs.process_event"
DEDUPE_PREFIX = "persona-events:seen:"
# Transient database or Redis errors: retry soon, then every 30 s (the last interval repeats) for about
# 8 minutes, so an event whose database was away is applied within 30 s of its return. Longer outages
# leave the job in the failed registry, where reconciliation and `replay-event --failed` find it.
PROCESS_EVENT_RETRY = Retry(max=20, interval=[1, 2, 5, 10, 20, 30])
# An event is one short transaction; 40 s covers SQLite's 30 s wait for the write lock. Kept short because
# a dead worker's job runs again only once this limit (+ 5 s) has passed (workers/worker.py).
PROCESS_EVENT_TIMEOUT = 40
# A finished job is kept a day for `rq info` and debugging; failed ones a month, for replay-event --failed.
RESULT_TTL = 24 * 3600
FAILURE_TTL = 30 * 24 * 3600

_UNSAFE_JOB_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")

DEDUPE_ENQUEUE = """
-- KEYS[1] dedupe mark; ARGV[1] its ttl in seconds; ARGV[2..] the enqueue, as count, command, args...
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end
local i = 2
while i <= #ARGV do
    local n = tonumber(ARGV[i])
    redis.call(unpack(ARGV, i + 1, i + n))
    i = i + n + 1
end
redis.call('SET', KEYS[1], '1', 'EX', ARGV[1])
return 1
"""


# Fail fast when Redis hangs: the webhook must answer (503) well inside Persona's 5 s delivery timeout.
REDIS_SOCKET_TIMEOUT = 2.0


def connect_redis(url: str) -> Redis:
    return Redis.from_url(url, socket_timeout=REDIS_SOCKET_TIMEOUT, socket_connect_timeout=REDIS_SOCKET_TIMEOUT)


def job_id_for(event_id: str) -> str:
    """RQ accepts only [A-Za-z0-9_-] in job ids: Persona's `evt_...` ids fit as they are; any other id is
    hashed, under a prefix a fitting id cannot produce, so two event ids never share a job id."""
    if _UNSAFE_JOB_ID_CHARS.search(event_id) is None:
        return "e_" + event_id
    return "h-" + hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()


def dedupe_key(event_id: str) -> str:
    return DEDUPE_PREFIX + job_id_for(event_id)


class EventQueue:
    """The events queue of one Redis connection."""

    def __init__(self, connection: Redis, config: Config):
        self.connection = connection
        self.queue = Queue(config.events_queue, connection=connection)
        self.dedupe_ttl = config.dedupe_ttl
        self._script = connection.register_script(DEDUPE_ENQUEUE)

    def enqueue_once(self, event: dict) -> bool:
        """Queue `process_event(event)` unless this event id was queued before; True when queued now."""
        pipeline = self.connection.pipeline(transaction=False)
        self.queue.enqueue_call(
            PROCESS_EVENT,
            args=(event,),
            job_id=job_id_for(event["event_id"]),
            description=f"process_event {event['event_id']} {event['name']}",
            retry=PROCESS_EVENT_RETRY,
            timeout=PROCESS_EVENT_TIMEOUT,
            result_ttl=RESULT_TTL,
            failure_ttl=FAILURE_TTL,
            pipeline=pipeline,
        )
        return bool(self._script(keys=[dedupe_key(event["event_id"])], args=[self.dedupe_ttl, *_flatten(pipeline)]))

    def ping(self) -> bool:
        return bool(self.connection.ping())


def _flatten(pipeline) -> list:
    """A pipeline's buffered commands as `count, command, args...` for the script."""
    encoder = pipeline.get_encoder()
    flat: list = []
    for args, _options in pipeline.command_stack:
        flat.append(len(args))
        flat.extend(encoder.encode(arg) for arg in args)
    return flat
