"""Benchmark the workers: events applied per second by N `rq worker --burst` processes. Prints figures.

Queues a synthetic stream (users × inquiries × a 4-step lifecycle, shuffled) into a fresh embedded
Redis, then times the Procfile's worker command, with --burst, until the queue is empty.

    .venv/bin/python -m scripts.bench_worker [--workers 1 2 4] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import tempfile
import time
from pathlib import Path

from redis import Redis

from app.config import Config
from app.db import Database, migrate
from app.queue import EventQueue
from scripts.devstack import procfile_command
from scripts.embedded_redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
LIFECYCLE = ("created", "pending", "completed", "approved")


def synthetic_events(users: int, inquiries: int, seed: int = 1) -> list[dict]:
    events = []
    for user in range(users):
        for inquiry in range(inquiries):
            for step, status in enumerate(LIFECYCLE):
                events.append({
                    "event_id": f"evt_b{len(events):08d}",
                    "name": f"inquiry.{status}",
                    "created_at": f"2026-01-01T{inquiry % 24:02d}:00:{step:02d}.000Z",
                    "received_at": "2026-01-01T00:00:00.000Z",
                    "body_sha256": "0" * 64,
                    "object_type": "inquiry",
                    "object_id": f"inq_b{user}_{inquiry}",
                    "status": status,
                    "reference_id": f"bench_user_{user}",
                    "account_id": f"act_b{user}",
                    "template_id": "itmpl_bench",
                    "timestamps": {"created_at": f"2026-01-01T{inquiry % 24:02d}:00:00.000Z"},
                })  # fmt: skip
    random.Random(seed).shuffle(events)
    return events


def _reset(database_url: str) -> None:
    from sqlalchemy import text

    from app.models import Base

    database = Database(database_url)
    with database.transaction() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(text(f"DELETE FROM {table.name}"))
    database.dispose()


def run(workers: int, events: list[dict], database_url: str, redis_url: str) -> float:
    _reset(database_url)
    redis = Redis.from_url(redis_url)
    redis.flushdb()
    config = Config(webhook_secrets=("bench",), redis_url=redis_url, database_url=database_url)
    queue = EventQueue(redis, config)
    for event in events:
        queue.enqueue_once(event)
    env = {**os.environ, "PERSONA_WEBHOOK_SECRETS": "bench", "REDIS_URL": redis_url, "DATABASE_URL": database_url}
    command = [*procfile_command("worker"), "--burst"]
    started = time.perf_counter()
    processes = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(workers)
    ]
    for process in processes:
        process.wait()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--inquiries", type=int, default=3)
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    args = parser.parse_args()
    events = synthetic_events(args.users, args.inquiries)
    with tempfile.TemporaryDirectory() as tmp:
        database_url = args.database_url or f"sqlite:///{tmp}/bench.db"
        migrate(database_url)
        redis = EmbeddedRedis(Path(tmp) / "redis", appendonly=True).start()
        try:
            print(f"{len(events)} events, {args.users} users, database {database_url.split('@')[-1]}")
            for count in args.workers:
                elapsed = run(count, events, database_url, redis.url)
                print(f"{count} worker(s): {elapsed:6.2f} s  {len(events) / elapsed:7.1f} events/s  (incl. worker start-up)")
        finally:
            redis.stop()
        if args.database_url:
            _reset(database_url)


if __name__ == "__main__":
    main()
