"""Benchmark what the host notifications cost the event path: applying events (store/records.py `apply_and_log`, the
worker's transaction) with notifications on (an outbox row per change of what a user's record announces) against
the same with them off, in interleaved rounds on one database, each round a fresh batch of users' lifecycles
(created, pending, completed, approved; shuffled, as they arrive). A figure is the median of the per-round ratios
of events per second, on over off, with its spread; about 1 means the outbox costs the worker nothing to speak of.
Absolute rates are printed for scale only (a shared 2-core machine).

    .venv/bin/python -m scripts.bench_notify [--database-url postgresql://postgres@127.0.0.1:5432/bench]
        [--users 150] [--rounds 9]

Without --database-url it runs on a SQLite file under var/.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

from domain.policy import DEFAULT_POLICY
from runtime.config import RecordSettings
from scripts.bench_events import lifecycle_stream
from scripts.bench_table import median, quantile
from store.db import Database, migrate
from store.records import DuplicateEvent, apply_and_log

SETTINGS = {
    "on": RecordSettings(DEFAULT_POLICY, verisoul=False, notify=True),
    "off": RecordSettings(DEFAULT_POLICY, verisoul=False, notify=False),
}


def _apply_all(database: Database, tag: str, users: int, settings: RecordSettings) -> float:
    """Events per second for `users` lifecycles applied one transaction each, as the worker does."""
    events = lifecycle_stream(tag, users, 1)
    started = time.perf_counter()
    for event in events:
        try:
            apply_and_log(database, event, datetime.now(UTC), settings)
        except DuplicateEvent:
            pass
    return len(events) / (time.perf_counter() - started)


def _fresh(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    migrate(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--users", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    url = args.database_url
    if url is None:
        path = Path("var/bench-notify.db")
        path.parent.mkdir(exist_ok=True)
        path.unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    _fresh(url)
    database = Database(url)
    _apply_all(database, "warm", args.users // 3, SETTINGS["on"])
    rates: dict[str, list[float]] = {"on": [], "off": []}
    for round_ in range(args.rounds):
        order = ("on", "off") if round_ % 2 == 0 else ("off", "on")
        for label in order:
            rates[label].append(_apply_all(database, f"r{round_}{label}", args.users, SETTINGS[label]))
    database.dispose()
    ratios = [on / off for on, off in zip(rates["on"], rates["off"], strict=True)]
    print(f"database: {url.split('@')[-1]}, {args.rounds} rounds of {args.users * 4} events each way")
    for label in ("off", "on"):
        print(f"notifications {label:>3}: {median(rates[label]):,.0f} events/s (for scale only)")
    print(
        f"events/s on / off: median {median(ratios):.2f} (p10 {quantile(ratios, 0.1):.2f}, "
        f"p90 {quantile(ratios, 0.9):.2f}, min {min(ratios):.2f}, max {max(ratios):.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
