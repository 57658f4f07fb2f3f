"""The benchmark of persona-events: one command, one table, each figure next to its ceiling and target.

    .venv/bin/python -m scripts.bench                  # everything, 3 reps (about 20 minutes)
    .venv/bin/python -m scripts.bench --quick          # short runs, 3 reps: a smoke check (about 4 minutes)
    .venv/bin/python -m scripts.bench --only webhook,worker --reps 5
    .venv/bin/python -m scripts.bench --only steady --steady-seconds 10
    .venv/bin/python -m scripts.bench --database-url postgresql://postgres@127.0.0.1:5432/bench

It measures the code as it is in the working tree when it runs. It starts everything it needs and
stops all of it at the end, on Ctrl-C or on an error: its own `redis-server` (from PATH, a free port,
append-only file on with fsync every second as in production, no RDB snapshots), gunicorn and rq
workers with the Procfile's own commands, and wrk. PostgreSQL is the server of --database-url: only
that database is used (created when missing, migrated, emptied between runs); SQLite files live in a
temporary directory, kept (with every process's log) when something failed.

The machine is shared and small, so absolute figures move from run to run: each figure is the median of
--reps repetitions with the range in brackets, each ceiling is measured in the same run interleaved
with it (A/B/A/B, the order alternating), and the ratio is the median of the per-repetition ratios.

Rows (section name for --only in brackets):

1. [webhook] Saturation, 7 KB and 65 KB bodies: requests/s of the service (`gunicorn --config
   gunicorn.conf.py "app:create_app()"`) vs a bare Flask app that reads the body and answers a small
   JSON (scripts/bench_ceiling.py, same gunicorn command and settings), with wrk; every request a
   distinct, validly signed event answered 200 `queued`. Then p50/p99 latency, open loop, at half the
   service's saturation rate, against both. Targets: ratio >= 0.7 at 7 KB, >= 0.6 at 65 KB.
2. [worker] Events applied per second by the Procfile's worker command (with --burst) vs RQ no-op jobs
   per second through the same command and Redis, SQLite and PostgreSQL, 1, 2 and 4 processes; targets
   for 1 process: >= 0.6 SQLite, >= 0.5 PostgreSQL. And seconds per event when an inquiry gets 1,000
   events vs 4 (the same events otherwise; 200 vs 4 with --quick), target ratio <= 1.2.
3. [steady] POST->record latency (until the event's row is committed in `events`) at a steady 100 and
   200 events/s over HTTP, 2 workers, PostgreSQL; the events queue's depth over time. Targets: p99 <=
   100 ms, the queue bounded at 200/s.
4. [roundtrips] SQL round trips per event on PostgreSQL, counted at the wire by a proxy
   (scripts/roundtrips.py), BEGIN, COMMIT and pre-ping included. Target <= 6.
5. [rss] RSS of the gunicorn master, its workers and each rq worker after 10,000 events (2,000 with
   --quick). Target <= 100 MB each.
6. [replay] Replay events/s on PostgreSQL (workers/replay.py, as `replay-event` runs it): from fetched
   events into a clean database, and every stored event again. No target.

The modules: scripts/bench_web.py, bench_worker.py, bench_steady.py, bench_roundtrips.py (rows);
bench_stack.py (processes, Redis, databases), bench_events.py (bodies and queued events), bench_load.py
(wrk and the paced sender), bench_jobs.py (no-op and barrier jobs), bench_table.py (the table).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from scripts.bench_stack import ROOT, BenchRedis, Children, Context, SqliteTemplate, ensure_postgres, progress
from scripts.bench_table import Row, Table, spread

SECTIONS = ("webhook", "worker", "roundtrips", "steady", "rss", "replay")
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/bench"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (3 reps unless --reps): a smoke check")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each measurement (default 3)")
    parser.add_argument("--steady-seconds", type=float, help="seconds of each steady-load run (30; 4 with --quick)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="PostgreSQL database the bench may empty")
    parser.add_argument("--keep", action="store_true", help="keep the bench's directory (logs, SQLite files)")
    args = parser.parse_args(argv)
    args.sections = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    args.steady_seconds = args.steady_seconds or (4.0 if args.quick else 30.0)
    return args


def _git(*arguments: str) -> str:
    try:
        return subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _code_version() -> str:
    """The commit, and whether the measured code (app/, workers/, the Procfile, gunicorn.conf.py) differs from it."""
    commit = _git("rev-parse", "--short", "HEAD") or "unknown"
    changed = _git("status", "--porcelain", "--", "app", "workers", "migrations", "Procfile", "gunicorn.conf.py")
    return f"commit {commit}" + (" + uncommitted changes in app/workers (measured as they are)" if changed else "")


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _header(args: argparse.Namespace, started: float, load_at_start: str) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "--quick" if args.quick else "full"
    return (
        f"persona-events bench, {when}, {_code_version()}, os.cpu_count()={os.cpu_count()}, "
        f"load average {load_at_start} at start / {_load()} at end, {args.reps} reps ({mode}), "
        f"{(time.time() - started) / 60:.1f} min; Redis: own redis-server, appendonly yes (everysec)"
    )


def replay_rows(ctx: Context) -> None:
    """Replays with the code `replay-event` uses, in this process: database work only, no Redis or HTTP."""
    from sqlalchemy import select

    from scripts.bench_events import lifecycle_stream
    from store.db import Database
    from store.models import Event
    from workers.replay import Replayer, plan_units

    users = 25 if ctx.quick else 200
    events = lifecycle_stream("rp", users, 3)
    labels = ("from fetched events, clean database", "of every stored event")
    rates: dict[str, list[float]] = {label: [] for label in labels}
    for rep in range(ctx.reps):
        progress(f"replay: {len(events)} events, {users} users, rep {rep + 1}/{ctx.reps}")
        database = Database(ctx.fresh_database("postgresql"))
        try:
            for label, fetched in zip(labels, (events, None), strict=True):
                with database.sessions() as session:
                    stored = [] if fetched else list(session.scalars(select(Event)))
                    units = plan_units(session, stored, fetched or [])
                started = time.perf_counter()
                report = Replayer(database, lambda: datetime.now(UTC), "bench", False).run(units)
                rates[label].append(len(events) / (time.perf_counter() - started))
                if report.failed:
                    raise RuntimeError(f"{len(report.failed)} events failed to replay, e.g. {report.failed[0]}")
        finally:
            database.dispose()
    for label in labels:
        what = f"replay events/s, PostgreSQL, {label} ({len(events)} events, {users} users)"
        ctx.table.add(Row(what, spread(rates[label], "events/s")))


def _run_section(ctx: Context, name: str, args: argparse.Namespace) -> None:
    from scripts.bench_roundtrips import roundtrip_rows
    from scripts.bench_steady import steady_rows
    from scripts.bench_web import webhook_rows
    from scripts.bench_worker import worker_rows

    if name == "webhook":
        webhook_rows(ctx)
    elif name == "worker":
        worker_rows(ctx)
    elif name == "roundtrips":
        roundtrip_rows(ctx)
    elif name == "steady":
        steady_rows(ctx, steady=True, rss="rss" in args.sections)
    elif name == "rss" and "steady" not in args.sections:
        steady_rows(ctx, steady=False, rss=True)  # with steady, measured at its end, on its processes
    elif name == "replay":
        replay_rows(ctx)


def _interrupt(*_):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "webhook" in args.sections:
        from scripts.bench_load import wrk_binary

        wrk_binary()  # before anything starts: tell the user to install wrk
    started, load_at_start = time.time(), _load()
    directory = Path(tempfile.mkdtemp(prefix="persona-bench-"))
    children = Children(directory)
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM stops the children too, like Ctrl-C
    failed, ctx = False, None
    try:
        ctx = _context(args, directory, children)
        for name in (section for section in SECTIONS if section in args.sections):
            try:
                _run_section(ctx, name, args)
            except Exception as error:  # noqa: BLE001 - one broken section must not hide the others' rows
                failed = True
                traceback.print_exc()
                ctx.table.add(Row.invalid(f"section {name}", f"{type(error).__name__}: {error}"))
        _print(ctx.table, _header(args, started, load_at_start))
        return 1 if failed else 0
    except KeyboardInterrupt:
        failed = True
        print("bench: interrupted; stopping everything it started", file=sys.stderr)
        return 130
    finally:
        children.stop_all()
        invalid = ctx is not None and any(row.figure.startswith("INVALID") for row in ctx.table.rows)
        _cleanup(directory, keep=args.keep or failed or invalid)


def _context(args: argparse.Namespace, directory: Path, children: Children) -> Context:
    redis = BenchRedis(children, directory / "redis")
    if set(args.sections) - {"webhook"}:
        ensure_postgres(args.database_url)
    sqlite = SqliteTemplate(directory)
    return Context(
        directory, children, redis, args.database_url, sqlite, args.quick, args.reps, Table(), args.steady_seconds
    )


def _print(table: Table, header: str) -> None:
    print(header)
    print()
    print(table.markdown())
    if table.notes:
        print()
        for note in table.notes:
            print(f"- {note}")


def _cleanup(directory: Path, keep: bool) -> None:
    if keep:
        print(f"bench: logs and files kept in {directory}", file=sys.stderr)
    else:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
