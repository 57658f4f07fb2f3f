"""Queueing a verified event: a durable dedupe mark and the RQ enqueue, in one Redis round trip.

A Lua script writes what RQ's `Queue.enqueue_call` writes for a job (the job hash, the queue in RQ's set of
queues, the job id pushed onto the queue) only when the event's dedupe mark is absent, and sets the mark
last. Redis runs a script atomically, so two deliveries of one event racing each other enqueue it once,
and a script that fails part-way leaves no mark behind: Persona's retry of that delivery is queued
instead of being taken for a duplicate.

The request builds no RQ Job. Every field of the job hash but four is the same for every event (status,
origin, timeout, retries, TTLs, RQ's empty placeholders): they are taken once per EventQueue from RQ's own
`Job.to_dict()` of a template job and written into the script. A request sends the job id and the four
others: the pickled call (RQ's serializer; RQ reads `data` uncompressed as well as zlib-compressed, and
compressing a few hundred bytes costs more than it saves), created_at and enqueued_at, and the description.
The result is a normal RQ job for `rq worker`, retries, the failed registry and `rq info`
(tests/unit/test_queue.py compares it with one from `enqueue_call`).
"""

from __future__ import annotations

import hashlib
import re

from redis import Redis
from rq import Queue, Retry
from rq.utils import now, utcformat

from domain.events import QueuedEvent
from runtime.config import Config

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

# The job hash fields that differ from one event to the next; RQ writes the rest alike for every event job.
_PER_EVENT_FIELDS = ("data", "created_at", "enqueued_at", "description")
# Characters written into a Lua string literal as they are; any other byte is a decimal escape (`\034` for `"`).
_LUA_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 _-.,:[]")

DEDUPE_ENQUEUE = """
-- KEYS: the dedupe mark, the job hash, the queue, RQ's set of queues
-- ARGV: the mark's ttl in seconds, the job id, data, created_at (= enqueued_at), description
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end
redis.call('SADD', KEYS[4], KEYS[3])
redis.call('HSET', KEYS[2], 'data', ARGV[3], 'created_at', ARGV[4], 'enqueued_at', ARGV[4],
    'description', ARGV[5], %s)
redis.call('RPUSH', KEYS[3], ARGV[2])
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
        fields = ", ".join(_lua_string(item) for item in _constant_fields(self.queue))
        self._script = connection.register_script(DEDUPE_ENQUEUE % fields)

    def enqueue_once(self, event: QueuedEvent) -> bool:
        """Queue `process_event(event)` unless this event id was queued before; True when queued now."""
        job_id = job_id_for(event["event_id"])
        queue = self.queue
        keys = [DEDUPE_PREFIX + job_id, queue.job_class.key_for(job_id), queue.key, queue.redis_queues_keys]
        data = queue.serializer.dumps((PROCESS_EVENT, None, (event,), {}))  # Job.data's layout
        description = f"process_event {event['event_id']} {event['name']}"
        return bool(self._script(keys=keys, args=[self.dedupe_ttl, job_id, data, utcformat(now()), description]))

    def ping(self) -> bool:
        return bool(self.connection.ping())


def _constant_fields(queue: Queue) -> list[bytes]:
    """Field, value, field, value... of the job hash RQ writes alike for every event job, from RQ's own
    `Job.to_dict()` of a template job, encoded as the connection encodes command arguments."""
    job = queue.create_job(
        PROCESS_EVENT,
        args=(None,),
        job_id="template",
        description="",
        retry=PROCESS_EVENT_RETRY,
        timeout=PROCESS_EVENT_TIMEOUT,
        result_ttl=RESULT_TTL,
        failure_ttl=FAILURE_TTL,
    )
    job.enqueued_at = job.created_at  # RQ sets it when it enqueues; here it is one of the per-event fields
    fields = job.to_dict()
    for name in _PER_EVENT_FIELDS:
        del fields[name]
    encode = queue.connection.get_encoder().encode
    return [encode(item) for pair in fields.items() for item in pair]


def _lua_string(value: bytes) -> str:
    """A Lua string literal of `value`: plain characters as they are, every other byte escaped."""
    return '"' + "".join(chr(byte) if chr(byte) in _LUA_PLAIN else f"\\{byte:03d}" for byte in value) + '"'
