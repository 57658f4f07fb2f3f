"""Benchmark replays: events per second rebuilt by the replay machinery `replay-event` uses. Prints figures.

Three passes over the same synthetic stream (scripts/bench_worker.synthetic_events) on a fresh database:
1. fetched events logged and applied from nothing, as `replay-event --from-persona` does after Persona answered;
2. every stored event replayed (`replay-event --since ...`), which resets and rebuilds each inquiry;
3. the same as a dry run (`--dry-run`), rolled back user by user.
No Redis and no HTTP: the figures are the database work, which is what bounds a replay (Persona's API
allows 300 requests a minute, but a page holds 100 events).

    .venv/bin/python -m scripts.bench_replay [--users 200] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime

from sqlalchemy import select

from domain.events import QueuedEvent
from scripts.bench_worker import synthetic_events
from store.db import Database, migrate
from store.models import Event
from workers.replay import Replayer, plan_units


def _now() -> datetime:
    return datetime.now(UTC)


def _timed(database: Database, label: str, count: int, dry_run: bool, fetched: list[QueuedEvent] | None = None) -> None:
    with database.sessions() as session:
        stored = [] if fetched else list(session.scalars(select(Event)))
        units = plan_units(session, stored, fetched or [])
    started = time.perf_counter()
    report = Replayer(database, _now, f"bench {label}", dry_run).run(units)
    elapsed = time.perf_counter() - started
    assert not report.failed, report.failed[:3]
    print(f"{label:<34} {count:>6} events, {len(units):>5} users: {elapsed:6.2f} s, {count / elapsed:7.0f} events/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--inquiries", type=int, default=3)
    parser.add_argument("--database-url", help="an empty database to use (default: a temporary SQLite file)")
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp(prefix='bench-replay-')}/bench.db"
    migrate(url)
    database = Database(url)
    events = synthetic_events(args.users, args.inquiries)
    _timed(database, "from fetched events (clean db)", len(events), False, events)
    _timed(database, "replay of every stored event", len(events), False)
    _timed(database, "dry run of every stored event", len(events), True)
    database.dispose()


if __name__ == "__main__":
    main()
