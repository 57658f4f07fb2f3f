"""Benchmark `GET /users` (docs/contracts.md §7) at a million users against the same page at ten thousand.

Two PostgreSQL databases are filled with users whose standing is spread like a live service's (most
allowed and synced, some blocked, a few for good); then each query, a first page and a page from the
middle of the ids (by cursor), runs through the Flask test client against both, in interleaved rounds. A figure is
the median time at a million divided by the median at ten thousand in the same run: about 1 means the
page stays an index range scan however many users there are. No absolute time is a claim (shared 2-core
machine); they are printed for scale only.

    .venv/bin/python -m scripts.bench_user_list [--database-url postgresql://postgres@127.0.0.1:5432/bench]
        [--users 1000000] [--small 10000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

import fakeredis
import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app import create_app
from app.users import encode_cursor
from runtime.config import Config
from store.db import migrate

TOKEN = "bench-token"
QUERIES = (
    "",
    "?decision=allow",
    "?decision=deny",
    "?decision=review",
    "?blocked=true",
    "?synced=false",
    "?decision=resume&synced=false",
)
# How a live service's users might stand: (share, unblocked decision); blocks and sync drawn apart.
DECISIONS = ((0.6, "allow"), (0.1, "deny"), (0.02, "review"), (0.1, "verify"), (0.18, "resume"))


def _database(base_url: str, name: str) -> str:
    """An empty database `name` beside `base_url`'s (dropped and made again)."""
    admin = create_engine(make_url(base_url).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


def _fill(url: str, count: int, seed: int = 7) -> None:
    """`count` users through COPY, reference ids in random order of insertion; then ANALYZE."""
    migrate(url)
    draw, now = random.Random(seed), datetime.now(UTC)
    buffer = io.StringIO()
    for n in draw.sample(range(count), count):
        decision = draw.choices([d for _, d in DECISIONS], [w for w, _ in DECISIONS])[0]
        roll = draw.random()
        permanent = roll < 0.01
        until = "" if permanent or roll > 0.2 else (now + timedelta(days=draw.uniform(-30, 30))).isoformat()
        synced = "t" if draw.random() < 0.9 else "f"
        row = (f"user_{n:08d}", now.isoformat(), "approved", str(draw.randint(0, 3)), decision, until or r"\N")
        buffer.write("\t".join((*row, "t" if permanent else "f", synced)) + "\n")
    columns = "reference_id, created_at, status, strikes, unblocked_decision, block_until, block_permanent"
    with psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)) as db:
        with db.cursor().copy(f"COPY users ({columns}, verisoul_synced) FROM STDIN") as copy:
            copy.write(buffer.getvalue())
        db.execute("ANALYZE users")


def _client(url: str):
    config = Config(webhook_secrets=("unused",), redis_url="redis://unused", database_url=url, admin_api_token=TOKEN)
    return create_app(config, redis=fakeredis.FakeRedis()).test_client()


def _get(client, query: str) -> tuple[float, dict]:
    started = time.perf_counter()
    answer = client.get(f"/users{query}", headers={"Authorization": f"Bearer {TOKEN}"})
    elapsed = time.perf_counter() - started
    assert answer.status_code == 200, answer.get_data()
    return elapsed, answer.get_json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/bench")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    sizes = {"small": args.small, "large": args.users}
    clients = {}
    for label, count in sizes.items():
        url = _database(args.database_url, f"bench_users_{label}")
        started = time.perf_counter()
        _fill(url, count)
        print(f"{count:>9,} users filled in {time.perf_counter() - started:5.1f} s", flush=True)
        clients[label] = _client(url)
    # A page from the middle of each database's ids, so a query is also timed away from its index's start.
    middle = {label: encode_cursor(f"user_{count // 2:08d}") for label, count in sizes.items()}
    cases = [(query, page) for page in ("first", "middle") for query in QUERIES]
    times: dict[tuple[str, str], dict[str, list[float]]] = {case: {"small": [], "large": []} for case in cases}
    for _ in range(args.rounds):
        for query, page in cases:
            for label in random.sample(list(clients), 2):  # interleaved, in a random order each time
                after = f"{'&' if query else '?'}after={middle[label]}" if page == "middle" else ""
                times[(query, page)][label].append(_get(clients[label], query + after)[0])
    print(f"\n{'query':<34} {'page':<7} {'median ms at ' + f'{args.small:,}':>18} {'at ' + f'{args.users:,}':>14} "
          f"{'ratio':>6} {'ratio p10-p90':>14}")  # fmt: skip
    for (query, page), measured in times.items():
        small, large = measured["small"], measured["large"]
        ratios = sorted(b / a for a, b in zip(small, large, strict=True))
        spread = f"{ratios[len(ratios) // 10]:.2f}-{ratios[(len(ratios) * 9) // 10]:.2f}"
        print(
            f"{query or '(no filter)':<34} {page:<7} "
            f"{statistics.median(small) * 1000:>18.2f} {statistics.median(large) * 1000:>14.2f} "
            f"{statistics.median(large) / statistics.median(small):>6.2f} {spread:>14}"
        )


if __name__ == "__main__":
    main()
